"""`braintumorcnn serve` under load and faults (issue 35, points 5 and 9-12), on 127.0.0.1 with the server
started as a command: visits arriving together against --max-sessions, the server stopped with sessions
running, a session's process killed, a full server's page, an idle session, an upload cut short by a
closed page.  The cap's test needs no browser and no segmentation (a session's process does not load a
model until it segments); the others drive Debian's chromium, one page at a time."""
from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import List, Tuple
from urllib.parse import urlsplit, urlunsplit

import pytest

from test_web import (CHROMIUM, MISSING, VIEWPORT, browser, command, free_port, go, open_page,  # noqa: F401
                      phantom_case, serving, session_pids, upload_case, wait_until_gone)

pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (pip install -e '.[test]')")
needs_chromium = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} absent (apt-get install chromium)")

#: A line of the server's own log: its time first.
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def visit(port: int, results: List[Tuple[int, str, str]], start: threading.Barrier) -> None:
    """One browser-like GET of the door, redirects not followed: (status, Location, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=240)
    start.wait()
    connection.request("GET", "/", headers={"Accept": "text/html"})
    response = connection.getresponse()
    results.append((response.status, response.getheader("Location") or "", response.read().decode()))
    connection.close()


def alive(pid: int) -> bool:
    """The process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_simultaneous_visits_start_exactly_max_sessions_and_sigterm_ends_them(tmp_path):
    """Eight visits at once to a server capped at 4: exactly four sessions, each its own number and
    process; the other four get the page that tries again by itself; the log has times and the
    refusals, no VTK warning nor colour code; SIGTERM to the server leaves no session process."""
    port = free_port()
    lines: List[str] = []
    process = subprocess.Popen(command("serve", "--port", str(port), "--max-sessions", "4"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, TMPDIR=str(tmp_path)))
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    pids: List[int] = []
    try:
        deadline = time.time() + 120
        while not any("braintumorcnn serve: http" in line for line in lines):
            assert process.poll() is None and time.time() < deadline, "".join(lines)
            time.sleep(0.2)
        results: List[Tuple[int, str, str]] = []
        start = threading.Barrier(8)
        visitors = [threading.Thread(target=visit, args=(port, results, start)) for _ in range(8)]
        for visitor in visitors:
            visitor.start()
        for visitor in visitors:
            visitor.join(timeout=300)
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [302] * 4 + [503] * 4, statuses
        ports = {urlsplit(location).port for status, location, _ in results if status == 302}
        assert len(ports) == 4 and port not in ports
        refusal = next(body for status, _, body in results if status == 503)
        assert "All 4 sessions of this server are in use" in refusal and 'id="retrying"' in refusal
        assert "location.reload()" in refusal  # the page tries again by itself

        # each line is written before its 302 leaves, but this test's reader thread may not have read it yet
        deadline = time.time() + 30
        while True:
            started = [re.search(r"session (\d+) on port (\d+) \(pid (\d+)\)", line) for line in list(lines)]
            started = [m for m in started if m]
            if len(started) >= 4 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert sorted(int(m.group(1)) for m in started) == [1, 2, 3, 4], "".join(lines)
        assert {int(m.group(2)) for m in started} == ports
        pids = [int(m.group(3)) for m in started]
        assert all(alive(pid) for pid in pids)
        time.sleep(2)  # the sessions' first lines (VTK's warnings came then)
        shown = "".join(lines)
        assert all(TIMESTAMPED.match(line) for line in lines), shown
        assert sum("refused (503)" in line for line in lines) == 4, shown
        assert "\x1b[" not in shown and "Warning: In" not in shown and "vtkXOpenGLRenderWindow" not in shown, shown

        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.time() + 30
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in pids if alive(pid)], "session processes outlived the server"
    assert not list(tmp_path.glob("braintumorcnn-serve-*"))


@needs_chromium
def test_a_killed_session_is_cleaned_up_and_its_page_says_so(browser, phantom_case, tmp_path):
    """A session's process killed with its upload on disk: the server deletes the files within a
    minute and frees its place; the page says in words that the session ended, and why, with a way to
    start again; the page's address is then the door's, and the dead session's port leads there too."""
    temporary = tmp_path / "server-tmp"
    temporary.mkdir()
    lines: List[str] = []
    with serving("--max-sessions", "1", temporary=temporary, lines=lines) as url:
        page = open_page(browser, url)
        page.get_by_text("Preparation plan").wait_for(timeout=120000)
        session_port = urlsplit(page.url).port
        upload_case(page, phantom_case, phantom_case.name)
        (uploads,) = temporary.glob("braintumorcnn-serve-*")
        os.kill(session_pids(lines)[session_port], signal.SIGKILL)
        wait_until_gone([uploads], timeout_s=60)

        page.locator("#ended").wait_for(timeout=60000)
        assert "has ended: its process was killed (SIGKILL)" in page.locator("#ended").inner_text()
        assert "gone from the server" in page.content()
        address = page.evaluate("() => window.location.href")  # (page.url can lag a location.replace)
        assert urlsplit(address).port == urlsplit(url).port, address  # the door's address now
        assert any(re.search(r"session 1 ended .*killed \(SIGKILL\); deleted its files", line) for line in lines)

        old = go(browser.new_page(viewport=VIEWPORT), urlunsplit(("http", f"127.0.0.1:{session_port}", "/", "", "")))
        assert "has ended: its process was killed" in old.locator("#ended").inner_text()
        old.close()

        with page.expect_navigation(timeout=180000):  # the door starts a session: the killed one's place is free
            page.locator("#start-again").click(no_wait_after=True)
        page.get_by_text("Preparation plan").wait_for(timeout=120000)
        assert urlsplit(page.url).port not in (session_port, urlsplit(url).port)
        page.close()


@needs_chromium
def test_a_full_servers_page_retries_by_itself(browser, tmp_path):
    """With every session in use the page says so, shows that it retries, and gets a session by
    itself once one is freed."""
    with serving("--max-sessions", "1") as url:
        first = open_page(browser, url)
        first.get_by_text("Preparation plan").wait_for(timeout=120000)
        second = browser.new_page(viewport=VIEWPORT)
        second.goto(url, timeout=60000)
        assert "All 1 sessions of this server are in use" in second.locator("#in-use").inner_text()
        second.locator("#retrying").wait_for()
        tries = second.locator("#tries").inner_text()
        second.wait_for_function(f"() => document.querySelector('#tries')?.innerText !== {tries!r}", timeout=30000)
        first.close()
        second.get_by_text("Preparation plan").wait_for(timeout=180000)  # by itself: nobody reloaded it
        assert urlsplit(second.url).port != urlsplit(url).port
        second.close()


@needs_chromium
def test_an_idle_session_is_warned_then_released(browser, tmp_path):
    """--idle-minutes: the page warns first, activity keeps the session, and without any the session
    is released, its page saying why."""
    lines: List[str] = []
    with serving("--idle-minutes", "0.5", lines=lines) as url:
        page = open_page(browser, url)
        page.get_by_text("Preparation plan").wait_for(timeout=120000)
        warning = page.locator("#idle-warning")
        warning.wait_for(timeout=40000)
        assert "will be released in about" in warning.inner_text()
        page.mouse.move(200, 300)
        page.mouse.move(220, 320)
        warning.wait_for(state="hidden", timeout=15000)  # activity keeps it
        warning.wait_for(timeout=40000)
        page.locator("#ended").wait_for(timeout=60000)
        assert "released after 0.5 minutes without activity" in page.locator("#ended").inner_text()
        assert any("released after 0.5 minutes" in line for line in lines)
        page.close()


@needs_chromium
def test_an_upload_cut_short_by_a_closed_page_is_not_added_to_the_next(browser, phantom_case, tmp_path):
    """Chunks of an upload the page had begun when it closed stay out of the next session's upload (a
    reload within the grace period is a new session in the same process): the next upload holds only
    its own files, and its size only their bytes."""
    size = sum(p.stat().st_size for p in phantom_case.glob("*.nii.gz"))
    limit_mb = (size + 2 ** 20) / 2 ** 20  # room for the case, not for the case and the stale chunk
    with serving("--max-upload-mb", f"{limit_mb:.3f}") as url:
        page = open_page(browser, url)
        page.get_by_text("Preparation plan").wait_for(timeout=120000)
        session_port = urlsplit(page.url).port
        # a first chunk as trame-slicer's chunk loader sends it (its files), the upload's end never sent
        page.evaluate("""async () => {
            const chunk = new DataTransfer();
            chunk.items.add(new File([new Uint8Array(1500000)], 'stale_t1.nii.gz'));
            await window.trame.trigger('upload_chunk', [chunk.files]);
        }""")
        page.reload()  # within the grace period: the same process, a new session
        page.get_by_text("Preparation plan").wait_for(timeout=120000)
        assert urlsplit(page.url).port == session_port
        page.locator("input[type=file]").first.set_input_files([str(p) for p in sorted(phantom_case.glob("*.nii.gz"))])
        page.wait_for_function(f"() => document.querySelector('#case-error') || document.querySelector("
                               f"'#progress-message')?.innerText.startsWith('{phantom_case.name}:')", timeout=120000)
        assert page.locator("#case-error").count() == 0, page.locator("#case-error").inner_text()
        names = [c["title"] for c in page.evaluate("() => window.trame.state.get('candidates')")]
        assert "stale_t1.nii.gz" not in names, names
        page.close()

