"""Take the README's screenshot of `braintumorcnn serve`: a real case segmented in the browser.

    python Testing/Tools/web_screenshot.py ../shared/data/brats2021/BraTS2021_00000 Resources/Screenshots/web.png

Starts the server on the case, opens the page in Debian's chromium (Playwright), clicks Segment,
waits for the volumes and saves the page, reduced to a palette PNG when over 300 KB.
"""
from __future__ import annotations

import argparse
import io as bytes_io
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlunsplit

from PIL import Image
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MAX_BYTES = 300 * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case")
    parser.add_argument("output")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "BrainTumorCNNLib.frontends.cli", "serve", "--port", str(port),
                               "--case", args.case], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list = []
    threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True).start()
    try:
        while not any(line.startswith("braintumorcnn serve: http") for line in lines):
            if server.poll() is not None:
                raise SystemExit("".join(lines))
            time.sleep(0.2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(urlunsplit(("http", f"127.0.0.1:{port}", "/", "", "")), timeout=180000)
            page.wait_for_function("() => { const b = document.querySelector('#segment'); return b && !b.disabled; }",
                                   timeout=300_000)
            started = time.time()
            page.get_by_role("button", name="Segment", exact=True).click()
            page.locator("#volumes .region-ml").first.wait_for(state="visible", timeout=900_000)
            print(f"segmented in the page in {time.time() - started:.1f} s")
            time.sleep(3)  # the views' last frames
            shot = page.screenshot()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    output = Path(args.output)
    image = Image.open(bytes_io.BytesIO(shot)).convert("RGB")
    image.save(output, optimize=True)
    if output.stat().st_size > MAX_BYTES:  # octree keeps the segments' few saturated colours apart
        image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(output, optimize=True)
    print(f"{output}: {output.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
