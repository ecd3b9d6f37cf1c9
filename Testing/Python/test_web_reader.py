"""Issue 34 in a real browser (Debian's chromium, Playwright, `braintumorcnn serve` as a command, as in
test_web.py): nothing a reader did is thrown away without a question, the keys are the views' once a
case opens, the pointer's readout never goes stale, and the README's `serve` runs on a fresh clone."""
from __future__ import annotations

import re
import shlex
import shutil
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from test_web import (CHROMIUM, MISSING, browser, centre, click_segment, open_page, overlay,  # noqa: F401
                      page_volumes, phantom_case, serving, slice_number, upload_case, wait_until_loaded)

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (pip install -e '.[test]')"),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} absent (apt-get install chromium; .ci/run does)"),
]
READOUT = re.compile(r"(T1c|FLAIR) \((\d+), (\d+), (\d+)\): (\S+)")


def readout(page, orientation: str = "Axial"):
    """(sequence, (i, j, k) as shown, value) of a slice view's pointer readout."""
    found = READOUT.fullmatch(overlay(page, orientation, "pointer-value"))
    assert found, overlay(page, orientation, "pointer-value")
    return found.group(1), tuple(int(found.group(n)) for n in (2, 3, 4)), float(found.group(5))


def settled_readout(page, orientation: str = "Axial", timeout_s: float = 20):
    """readout() once it has stayed the same for a second (the pointer's last moves have arrived)."""
    deadline, last, since = time.time() + timeout_s, None, time.time()
    while time.time() < deadline:
        now = overlay(page, orientation, "pointer-value")
        if now != last:
            last, since = now, time.time()
        elif now and time.time() - since >= 1.0:
            return readout(page, orientation)
        time.sleep(0.2)
    raise AssertionError(f"the pointer readout did not settle: {last!r}")


def wait_for_readout(page, test_js: str, timeout_s: float = 20) -> None:
    page.wait_for_function("() => { const text = document.querySelector('#view-Axial .pointer-value')?.innerText"
                           f" || ''; return {test_js}; }}", timeout=timeout_s * 1000)


def pick(page, title: str) -> None:
    """Choose a case in the case list as a reader does: open the list, click the case."""
    page.locator(".v-input:has(#case-list) .v-field").click()
    page.locator(".v-overlay .v-list-item", has_text=title).first.click()


def copy_case(source: Path, folder: Path, name: str) -> Path:
    """The case at `source` as another case named `name` (its files renamed) in `folder`."""
    target = folder / name
    target.mkdir(parents=True)
    for path in source.iterdir():
        shutil.copy(path, target / path.name.replace(source.name, name))
    return target


def wait_until_open(page, name: str) -> None:
    """Until the case `name` is read and shown (its size in the progress line, Segment enabled)."""
    page.wait_for_function(f"() => document.querySelector('#case-name')?.innerText === '{name}' && "
                           f"document.querySelector('#progress-message')?.innerText.startsWith('{name}:') && "
                           "!document.querySelector('#segment')?.disabled", timeout=120000)


def upload_field_text(page) -> str:
    return page.locator(".v-file-input").first.inner_text()


def test_another_case_asks_first_and_the_views_follow(browser, phantom_case, tmp_path):
    """Points 1, 2, 4 and 8's upload field: the pointer readout follows a slice move and a change of
    sequence; with a result open, an upload and a case from the list each ask first (kept: the result, its
    volumes, the list and the upload field as they were); confirmed, the other case opens with no readout
    of the old one and the arrow keys move its slices, not the list; a case opened from the list clears
    the upload field."""
    from BrainTumorCNNLib.reading import io

    data = tmp_path / "data"
    first = copy_case(phantom_case, data, phantom_case.name)
    other = copy_case(phantom_case, data, "Other_00000")
    for path in other.glob("*_t1ce.nii.gz"):  # told apart from the first by its values
        image = sitk.ReadImage(str(path))
        sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32) * 2.0 + 1.0, str(path))
    images = {m: io.read_image(next(first.glob(f"*_{suffix}.nii.gz")))[0]
              for m, suffix in (("T1c", "t1ce"), ("FLAIR", "flair"))}
    with serving("--data", str(data), "--case", str(first)) as url:
        page = open_page(browser, url)
        wait_until_loaded(page)

        # 4: the readout names the voxel under the pointer, 1-based as the slice numbers, and its value ...
        x, y = centre(page, "#view-Axial")
        for step in range(5):
            page.mouse.move(x + step, y + step)
            time.sleep(0.1)
        sequence, (i, j, k), value = settled_readout(page)
        assert sequence == "T1c" and k == slice_number(page, "Axial")
        assert value == pytest.approx(float(images["T1c"][k - 1, j - 1, i - 1]), rel=1e-4)
        # ... of the slice the arrow key moved to, the pointer unmoved ...
        page.keyboard.press("ArrowUp")
        wait_for_readout(page, f"text.includes(', {k + 1}): ')")
        assert slice_number(page, "Axial") == k + 1
        sequence, (i, j, moved), value = readout(page)  # in the plane, the voxel under the pointer on this slice
        assert moved == k + 1 and value == pytest.approx(float(images["T1c"][k, j - 1, i - 1]), rel=1e-4)
        # ... and of the sequence shown
        page.locator("#background button", has_text="FLAIR").click()
        wait_for_readout(page, "text.startsWith('FLAIR')")
        sequence, ijk, value = readout(page)
        assert ijk == (i, j, k + 1) and value == pytest.approx(float(images["FLAIR"][k, j - 1, i - 1]), rel=1e-4)

        click_segment(page, timeout_s=900)
        volumes = page_volumes(page)

        # 1: an upload while a result is open asks first; kept, nothing is sent and the field is cleared
        page.locator("input[type=file]").first.set_input_files([str(p) for p in sorted(other.glob("*.nii.gz"))])
        page.locator("#confirm-switch").wait_for(state="visible", timeout=10000)
        page.locator("#switch-no").click()
        page.locator("#confirm-switch").wait_for(state="hidden", timeout=10000)
        time.sleep(2)  # an upload would be under way by now
        assert page.locator("#case-name").inner_text() == first.name
        assert page.locator("#result").is_visible() and page_volumes(page) == volumes
        assert ".nii.gz" not in upload_field_text(page)

        # 1: so does a case from the list; kept, the list still names the open case
        pick(page, other.name)
        page.locator("#confirm-switch").wait_for(state="visible", timeout=10000)
        page.locator("#switch-no").click()
        page.locator("#confirm-switch").wait_for(state="hidden", timeout=10000)
        time.sleep(2)
        assert page.locator("#case-name").inner_text() == first.name
        assert page.locator("#result").is_visible() and page_volumes(page) == volumes
        assert page.evaluate("() => window.trame.state.get('case_path')") in (None, str(first))

        # 1, 2, 4: confirmed, the other case opens; nothing of the first is read out; the keys move its slices
        pick(page, other.name)
        page.locator("#switch-yes").click()
        wait_until_open(page, other.name)
        assert page.locator("#result").is_hidden()
        time.sleep(1)
        others = io.read_image(next(other.glob("*_t1ce.nii.gz")))[0]
        for orientation in ("Axial", "Sagittal", "Coronal"):  # none, or the new case's (a pointer over the view)
            if overlay(page, orientation, "pointer-value"):
                sequence, (i, j, k), value = readout(page, orientation)
                assert sequence == "T1c" and value == pytest.approx(float(others[k - 1, j - 1, i - 1]), rel=1e-4)
        number = slice_number(page, "Axial")
        page.keyboard.press("ArrowUp")
        page.wait_for_function(f"() => document.querySelector('#view-Axial .slice-number')?.innerText"
                               f".startsWith('slice {number + 1} ')", timeout=10000)
        assert page.locator("#case-name").inner_text() == other.name

        # 8: an upload (no result open: no question), then a case from the list: the field is cleared
        upload_case(page, first, first.name)
        assert ".nii.gz" in upload_field_text(page)
        pick(page, other.name)
        wait_until_open(page, other.name)
        assert ".nii.gz" not in upload_field_text(page)
        page.close()


def test_the_readme_serve_command_runs_on_a_fresh_clone(browser, tmp_path):
    """Point 3: the README's `serve` command, run where no ../shared exists, serves the bundled phantom;
    its files go when the server stops."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## In the browser", 1)[1]
    line = re.search(r"braintumorcnn serve([^\n`&;]*)", section).group(1)
    args = shlex.split(line)
    clone = tmp_path / "clone"  # where a newcomer runs it: nothing beside it
    clone.mkdir()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with serving(*args, cwd=clone, temporary=temporary) as url:
        page = open_page(browser, url)
        wait_until_loaded(page)
        assert page.locator("#case-name").inner_text() == "Phantom_00000"
        assert [c["title"] for c in page.evaluate("() => window.trame.state.get('cases')")] == ["Phantom_00000"]
        assert page.locator("#case-error").count() == 0
        page.close()
    assert not list(temporary.glob("braintumorcnn-phantom-*")), "the phantom outlived the server"
