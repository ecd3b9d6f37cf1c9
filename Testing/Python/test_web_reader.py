"""Issue 34 in a real browser (Debian's chromium, Playwright, `braintumorcnn serve` as a command, as in
test_web.py): nothing a reader did is thrown away without a question, the keys are the views' once a
case opens, the pointer's readout never goes stale, the README's `serve` runs on a fresh clone, and the
reader's aids (keys and numbers that agree, the truth's outline, BraTS's region names, readable names, the
brush in mm, a re-run Undo takes back) work."""
from __future__ import annotations

import re
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from test_web import (CHROMIUM, MISSING, browser, centre, click_segment, open_page, overlay,  # noqa: F401
                      page_volumes, phantom_case, serving, slice_number, upload_case, wait_for_volumes,
                      wait_until_loaded)

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


def thumb_moved(page, orientation: str, before: float, timeout_s: float = 10.0) -> float:
    """The slider thumb's place once it has left `before` (the number is drawn before the thumb is)."""
    deadline = time.time() + timeout_s
    while (x := slider_thumb_x(page, orientation)) == before and time.time() < deadline:
        page.wait_for_timeout(100)
    return x


def slider_thumb_x(page, orientation: str) -> float:
    """Where a slice view's slider thumb is drawn (its centre, in page pixels)."""
    thumb = page.locator(f"#view-{orientation}").locator("xpath=..").locator(".slice-slider .v-slider-thumb")
    box = thumb.first.bounding_box()
    return box["x"] + box["width"] / 2


def hover(page, selector: str) -> None:
    x, y = centre(page, selector)
    for step in range(3):
        page.mouse.move(x + step, y + step)
        time.sleep(0.1)


def wait_for_slice(page, orientation: str, number: int) -> None:
    page.wait_for_function(f"() => document.querySelector('#view-{orientation} .slice-number')?.innerText"
                           f".startsWith('slice {number} ')", timeout=10000)


def cyan_share(page, tmp_path: Path, orientation: str) -> float:
    """The share of a slice view's pixels in the truth outline's colour."""
    from matplotlib import image as mpimg

    shot = tmp_path / f"{orientation}.png"
    page.locator(f"#view-{orientation}").screenshot(path=str(shot))
    pixels = mpimg.imread(shot)[..., :3]
    return float(((pixels[..., 0] < 0.3) & (pixels[..., 1] > 0.7) & (pixels[..., 2] > 0.8)).mean())


def download_labels(page, tmp_path: Path, name: str):
    from BrainTumorCNNLib.reading import io

    with page.expect_download() as download:
        page.locator("#download-labels").click()
    return io.read_image(Path(download.value.path()).rename(tmp_path / f"{name}_labels.nii.gz"))[0]


def test_slices_truth_names_brush_and_a_rerun_undone(browser, phantom_case, tmp_path):
    """Points 6 and 8: in every view the keys, the slider and the slice number go the same way and the
    pointer's voxel index along the view is its slice number; the truth is an outline one switches on; the
    regions are named as BraTS readers name them; long model and segment names are readable whole; the
    brush's size is given in mm and voxels and paints that size; a re-run is a step Undo takes back, the
    corrections it replaced returning."""
    from BrainTumorCNNLib import labels as label_table

    spacing = min(sitk.ReadImage(str(next(phantom_case.glob("*_t1ce.nii.gz")))).GetSpacing())
    with serving("--case", str(phantom_case), "--data", str(phantom_case.parent)) as url:
        page = open_page(browser, url)
        wait_until_loaded(page)

        # 6: Page Up / an arrow up raise the slice number and move the slider right, in every view; the
        # pointer's voxel (1-based) lies on the view's slice
        for orientation, axis in (("Axial", 2), ("Sagittal", 0), ("Coronal", 1)):
            hover(page, f"#view-{orientation}")
            number, thumb = slice_number(page, orientation), slider_thumb_x(page, orientation)
            page.keyboard.press("PageUp")
            wait_for_slice(page, orientation, number + 10)
            assert thumb_moved(page, orientation, thumb) > thumb, f"{orientation}: the slider went the other way"
            page.keyboard.press("ArrowDown")
            wait_for_slice(page, orientation, number + 9)
            hover(page, f"#view-{orientation}")
            wait_for_readout_in(page, orientation)
            _, ijk, _ = settled_readout(page, orientation)
            assert ijk[axis] == number + 9, (orientation, ijk, number + 9)

        # 8: the truth outlined in the views, switched on and off
        assert page.locator("#truth-outline").is_visible()
        before = cyan_share(page, tmp_path, "Axial")
        page.locator("#truth-outline").click()
        deadline = time.time() + 30
        while cyan_share(page, tmp_path, "Axial") < before + 0.002 and time.time() < deadline:
            time.sleep(0.5)
        assert cyan_share(page, tmp_path, "Axial") >= before + 0.002, "no truth outline drawn"
        page.locator("#truth-outline").click()
        deadline = time.time() + 30
        while cyan_share(page, tmp_path, "Axial") > before + 0.0005 and time.time() < deadline:
            time.sleep(0.5)
        assert cyan_share(page, tmp_path, "Axial") <= before + 0.0005

        # 8: a model's long name is shown whole (wrapped), not cut off
        page.locator(".v-input:has(#model) .v-field").click()
        page.locator(".v-overlay .v-list-item", has_text=re.compile("^TwoPathCNN ")).first.click()
        chosen = page.locator(".v-input:has(#model) .v-select__selection-text")
        title = next(m["title"] for m in page.evaluate("() => window.trame.state.get('models')")
                     if m["value"] == "TwoPathCNN")
        assert chosen.inner_text().strip() == title
        assert chosen.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), f"the model's name is cut off: {title}"

        click_segment(page, timeout_s=600)
        # 8: the regions as BraTS readers name them, in the table and the Dice
        regions = page.locator("#volumes .region-name").all_inner_texts()
        assert [r.strip() for r in regions] == list(label_table.REGION_NAMES.values()) == \
            ["whole tumor", "tumor core", "enhancing tumor"]
        assert "Dice against" in page.locator("#dice").inner_text()
        assert all(name in page.locator("#dice").inner_text() for name in regions)
        first = page_volumes(page)
        labels_first = download_labels(page, tmp_path, "first")

        # 8: a long segment name is readable whole: in the table, and in the editor's list as its tooltip
        long_name = "Necrotic and non-enhancing core as checked by the second reader"
        name_field = page.locator("#correction .v-list-item--active input").first
        tissue = page.locator("#volumes .segment-name").first.inner_text().strip()
        name_field.fill(long_name)
        name_field.press("Enter")
        renamed = wait_for_volumes(page, lambda v: f"{long_name} ({tissue})" in v)
        cell = page.locator("#volumes .segment-name").first
        assert cell.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
        other = page.locator("#correction .v-list-item").nth(1)  # off the renamed one: its field is read-only
        other.hover()
        item = page.locator("#correction .v-list-item").first
        item.hover()
        page.wait_for_function("(name) => Array.from(document.querySelectorAll('#correction [title]'))"
                               ".some((e) => e.title === name)", arg=long_name, timeout=10000)

        # 8: the brush's size in mm and in voxels, and it paints that size (one click, the axial slice)
        page.locator("button:has(.mdi-brush)").first.click()
        size = page.locator(".brush-size").first
        size.wait_for(state="visible", timeout=10000)
        found = re.fullmatch(r"([\d.]+) mm across, ([\d.]+) voxels of ([\d.]+) mm", size.inner_text().strip())
        assert found, size.inner_text()
        diameter = float(found.group(1))
        assert float(found.group(2)) == pytest.approx(diameter / spacing, abs=0.05)
        x, y = centre(page, "#view-Axial")
        page.mouse.move(x - 70, y - 70)
        page.mouse.down()
        page.mouse.up()
        edited = wait_for_volumes(page, lambda v: v != renamed)
        labels_edited = download_labels(page, tmp_path, "edited")
        painted = np.argwhere(labels_edited != labels_first)
        assert painted.size and len(np.unique(painted[:, 0])) == 1, "the brush painted more than one slice"
        across = (painted[:, 2].max() - painted[:, 2].min() + 1) * spacing
        assert diameter - 2 * spacing <= across <= diameter + 2 * spacing, (across, diameter)

        # 8: a re-run replaces the result; Undo brings back the corrections it replaced (and Redo the re-run)
        page.locator("#segment").click()
        page.locator("#resegment-yes").click()
        page.locator("#cancel").wait_for(state="visible", timeout=10000)
        page.wait_for_function("() => document.querySelector('#progress-message')?.innerText"
                               ".startsWith('segmented with')", timeout=600000)
        rerun = wait_for_volumes(page, lambda v: not any(long_name in k for k in v))
        assert rerun == first
        page.locator("#undo").wait_for(state="visible")
        assert page.locator("#undo").is_enabled(), "Undo cannot bring back the corrections the re-run replaced"
        dialogs = page.evaluate("() => Array.from(document.querySelectorAll('.v-overlay--active')).map(e => e.innerText)")
        assert not dialogs, f"a dialog stayed open: {dialogs}"
        page.locator("#undo").click()
        assert wait_for_volumes(page, lambda v: f"{long_name} ({tissue})" in v) == edited
        assert np.array_equal(download_labels(page, tmp_path, "undone"), labels_edited)
        page.locator("#redo").click()
        assert wait_for_volumes(page, lambda v: not any(long_name in k for k in v)) == first
        page.close()


def wait_for_readout_in(page, orientation: str, timeout_s: float = 20) -> None:
    page.wait_for_function(f"() => (document.querySelector('#view-{orientation} .pointer-value')?.innerText"
                           " || '').includes(':')", timeout=timeout_s * 1000)
