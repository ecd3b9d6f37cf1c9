"""Issue 34 item 3 in a real browser (Debian's chromium, Playwright, `braintumorcnn serve` as a command, as in
test_web.py): a prior scan opened beside the open case, from the list and as an upload, segmented, registered
and compared; the page reports the phantom pair's known growth, says what change segmentation alone makes,
shows the difference as a layer and downloads the comparison's picture and table."""
from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import numpy as np
import pytest

from test_web import (CHROMIUM, MISSING, browser, brush_stroke, centre, click_segment, open_page,  # noqa: F401
                      page_volumes, serving, wait_for_volumes, wait_until_loaded)

pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (pip install -e '.[test]')"),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} absent (apt-get install chromium; .ci/run does)"),
]
GROWTH = 1.3  # the later scan's tumor volumes, times the earlier one's


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The small phantom and the same patient later, its tumor grown in place (`phantom --growth`)."""
    from BrainTumorCNNLib.synthetic import phantom

    data = tmp_path_factory.mktemp("data")
    before = phantom.write_phantom(phantom.make_phantom(0, "small"), data)["truth"].parent
    after = phantom.write_phantom(phantom.make_phantom(0, "small", "Phantom_00000_later", growth=GROWTH),
                                  data)["truth"].parent
    return data, before, after


def prior_table(page) -> dict:
    """The page's table of changes: {measure: {then, now, change, percent, beyond}}."""
    out = {}
    for row in page.locator("#prior-table tbody tr").all():
        cells = [cell.strip() for cell in row.locator("td").all_inner_texts()]
        out[cells[0]] = dict(zip(("then", "now", "change", "percent", "beyond"), cells[1:]))
    return out


def wait_for_comparison(page, timeout_s: float = 900) -> None:
    page.wait_for_function("() => window.trame.state.get('prior_ready') && !window.trame.state.get('prior_busy')",
                           timeout=timeout_s * 1000)


def test_a_prior_opened_from_the_list_and_uploaded_shows_the_known_growth(browser, pair, tmp_path):
    from PIL import Image

    from BrainTumorCNNLib import labels
    from BrainTumorCNNLib.reading import io
    from BrainTumorCNNLib.scoring import longitudinal

    data, before, after = pair
    with serving("--data", str(data), "--case", str(after)) as url:
        page = open_page(browser, url)
        wait_until_loaded(page)
        assert not page.locator("#prior").is_visible()  # nothing to compare before a result
        click_segment(page, timeout_s=900)
        volumes = page_volumes(page)

        # the prior from the list: read, segmented, registered, compared
        page.locator(".v-input:has(#prior-list) .v-field").click()
        page.locator(".v-overlay .v-list-item").filter(has_text=re.compile(rf"^\s*{before.name}\s*$")).click()
        wait_for_comparison(page)
        table = prior_table(page)
        names = [f"{labels.REGION_NAMES[r]} (mL)" for r in labels.REGIONS]
        assert list(table) == names + ["enhancing bidimensional (mm²)"], table
        for region, name in zip(labels.REGIONS, names):
            row = table[name]
            then, now, change = float(row["then"]), float(row["now"]), float(row["change"])
            assert now == pytest.approx(volumes[labels.REGION_NAMES[region]], abs=0.006)  # this result's volume
            assert change == pytest.approx(now - then, abs=0.011)
            assert float(row["percent"].rstrip(" %")) == pytest.approx(100 * change / then, abs=0.2)
        truths = [io.read_image(next(case.glob("*_seg.nii.gz")))[0] for case in (before, after)]
        for region, name in zip(labels.REGIONS, names):
            known = labels.region_mask(truths[1], region).sum() / labels.region_mask(truths[0], region).sum()
            grown = float(table[name]["now"]) / float(table[name]["then"])
            assert grown > 1.15 and table[name]["beyond"] == "yes", (region, grown, known)
            if region == "core":  # the region the shipped default measures within 5 % (test_compare's marks)
                assert grown == pytest.approx(known, rel=0.05)  # grown as it was
        caveats = page.locator("#prior-result .prior-caveat").all_inner_texts()
        assert caveats[0].startswith("Registration onto the current T1c: prior T1c: rotation")
        assert longitudinal.variation_text() in caveats and "-13.9 %" in longitudinal.variation_text()

        # the difference is a layer over the slice views, in place of the segments
        view = page.locator("#view-Axial")
        page.mouse.move(*centre(page, "#prior-table"))
        time.sleep(1.5)
        with_layer = np.asarray(Image.open(_shot(view, tmp_path / "layer.png")).convert("RGB"), int)
        page.locator("#prior-layer").click()
        page.wait_for_function("() => !window.trame.state.get('prior_layer')")
        time.sleep(1.5)
        without = np.asarray(Image.open(_shot(view, tmp_path / "segments.png")).convert("RGB"), int)
        # the layer's unchanged tumor is yellow (DIFFERENCE_COLOURS), the segments' edema green (labels.py)
        yellow = [_pixels(shot, "yellow") for shot in (with_layer, without)]
        green = [_pixels(shot, "green") for shot in (with_layer, without)]
        assert yellow[0] > 50 and yellow[0] > 5 * yellow[1], f"yellow pixels with / without the layer: {yellow}"
        assert green[1] > 50 and green[0] * 5 < green[1], f"green pixels with / without the layer: {green}"
        page.locator("#prior-layer").click()

        # the comparison's files, as the command writes them
        with page.expect_download() as download:
            page.locator("#prior-download-csv").click()
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        assert saved.name == f"{before.name}_to_{after.name}_comparison.csv"
        with open(saved, encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert float(rows[0]["then"]) == pytest.approx(float(table[names[0]]["then"]), abs=0.006)
        assert float(rows[0]["now"]) == pytest.approx(float(table[names[0]]["now"]), abs=0.006)
        with page.expect_download() as download:
            page.locator("#prior-download-preview").click()
        with Image.open(download.value.path()) as picture:
            assert picture.text["Title"] == f"{before.name} (prior) -> {after.name} (current)"

        # the same prior uploaded: the same figures
        page.locator("#prior-upload").set_input_files([str(p) for p in sorted(before.glob("*.nii.gz"))])
        page.wait_for_function("() => window.trame.state.get('prior_busy')", timeout=60000)
        wait_for_comparison(page)
        assert prior_table(page) == table

        # Compare again after an edit: compared anew with the result as it stands
        page.locator("#prior-layer").click()
        page.wait_for_function("() => !window.trame.state.get('prior_layer')")
        shown = page_volumes(page)
        active = page.locator("#volumes .segment-name").first.inner_text()
        x, y = centre(page, "#view-Axial")
        page.locator("button:has(.mdi-brush)").first.click()
        brush_stroke(page, x, y)
        edited = wait_for_volumes(page, lambda v: v[active] > shown[active] + 0.01)
        assert prior_table(page) == table  # the comparison made before the edit, until asked again
        page.locator("#prior-compare").click()
        page.wait_for_function("() => window.trame.state.get('prior_busy')", timeout=60000)
        wait_for_comparison(page)
        again = prior_table(page)
        assert again != table
        for region, name in zip(labels.REGIONS, names):
            assert float(again[name]["now"]) == pytest.approx(edited[labels.REGION_NAMES[region]], abs=0.006)
            assert again[name]["then"] == table[name]["then"]  # the same prior

        # an upload that is not a case is refused in words
        page.locator("#prior-upload").set_input_files([str(p) for p in sorted(before.glob("*_t1.nii.gz"))])
        error = page.locator("#prior-error")
        error.wait_for(timeout=120000)
        refusal = error.inner_text()
        assert "missing T1c, T2, FLAIR" in refusal and "Phantom_00000_t1.nii.gz" in refusal, refusal
        assert "braintumorcnn-serve" not in refusal, refusal  # not the server's own folder
        assert not page.evaluate("() => window.trame.state.get('prior_busy')")


def _shot(locator, path: Path) -> Path:
    locator.screenshot(path=str(path))
    return path


def _pixels(shot: np.ndarray, hue: str) -> int:
    """Pixels of a screenshot clearly yellow (red and green well above blue, close to each other) or green."""
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    if hue == "yellow":
        return int(((r > b + 40) & (g > b + 40) & (np.abs(r - g) < 30)).sum())
    return int(((g > r + 40) & (g > b + 30)).sum())
