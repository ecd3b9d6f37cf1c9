"""Issue 34 item 2 in a real browser (Debian's chromium, Playwright, `braintumorcnn serve` as a command, as in
test_web.py): the uncertainty map is a layer one switches on, the confidence figure stands beside the volumes
(the figure `segment` writes for the same model and case), and a case the model is unsure of is said to be so."""
from __future__ import annotations

import csv
import re
import subprocess

import numpy as np
import pytest

from test_web import (CHROMIUM, MISSING, browser, click_segment, command, open_page, phantom_case,  # noqa: F401
                      serving, wait_until_loaded)

from BrainTumorCNNLib.running import uncertainty

pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (pip install -e '.[test]')"),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} absent (apt-get install chromium; .ci/run does)"),
]
#: A real low case: the shipped single TwoPathCNN on the small phantom expects a whole-tumor Dice of about
#: 0.63 of its own labels (measured), below uncertainty.UNSURE_BELOW_COMPLETE.
UNSURE_MODEL = "TwoPathCNN"
#: The share of a view's pixels that differ between two streamed images of the same scene (compression).
NOISE = 0.05
FIGURE = re.compile(r"Confidence \(the Dice the model expects of its labels\): whole tumor ([\d.]+), "
                    r"tumor core ([\d.]+), enhancing tumor ([\d.]+)")


def test_the_uncertainty_layer_switches_on_and_an_unsure_case_is_flagged(browser, phantom_case, tmp_path):
    output = tmp_path / "command"
    subprocess.run(command("segment", str(phantom_case), "--output", str(output), "--model", UNSURE_MODEL),
                   check=True, capture_output=True)
    with open(output / "metrics.csv") as f:
        expected = float(next(csv.DictReader(f))["expected_dice_complete"])
    assert expected < uncertainty.UNSURE_BELOW_COMPLETE, f"no longer a low case: {expected}"

    with serving("--case", str(phantom_case), "--data", str(phantom_case.parent)) as url:
        page = open_page(browser, url)
        wait_until_loaded(page)
        page.locator(".v-input:has(#model) .v-field").click()
        page.locator(".v-overlay .v-list-item", has_text=re.compile(f"^{UNSURE_MODEL} ")).first.click()
        assert page.locator("#unsure-warning").count() == 0
        click_segment(page, timeout_s=600)

        figure = FIGURE.fullmatch(page.locator("#confidence").inner_text().strip())
        assert figure, page.locator("#confidence").inner_text()
        assert float(figure.group(1)) == pytest.approx(expected, abs=0.005)  # the command's figure
        assert all(0.0 <= float(figure.group(n)) <= 1.0 for n in (1, 2, 3))
        assert page.locator("#unsure-warning").inner_text().strip() == f"Warning: {uncertainty.UNSURE}."

        # the layer: off when the result comes, switched on it draws over the slice views, off again it goes
        view = page.locator("#view-Axial")
        before = tmp_path / "before.png"
        view.screenshot(path=str(before))
        assert page.evaluate("() => window.trame.state.get('uncertainty_layer')") is False
        page.locator("#uncertainty-layer").click()
        page.wait_for_function("() => window.trame.state.get('uncertainty_layer') === true")
        changed = _wait_for_change(view, before, tmp_path / "on.png")
        assert changed > 0.2, f"the uncertainty layer changed {changed:.2%} of the axial view"
        page.locator("#uncertainty-layer").click()
        page.wait_for_function("() => window.trame.state.get('uncertainty_layer') === false")
        assert _wait_for_change(view, before, tmp_path / "off.png", same=True) < NOISE
        page.close()


def _wait_for_change(view, reference, shot, same: bool = False, timeout_s: float = 30) -> float:
    """The share of the view's pixels that differ from `reference`, once they do (or, `same`, once they no
    longer do); the view's image comes from the server's renderer, so it may be late."""
    import time

    from matplotlib import image as mpimg

    first = mpimg.imread(reference)[..., :3]
    deadline = time.time() + timeout_s
    while True:
        view.screenshot(path=str(shot))
        now = mpimg.imread(shot)[..., :3]
        share = float((np.abs(now - first).max(axis=2) > 0.05).mean()) if now.shape == first.shape else 1.0
        if (share < NOISE) == same or time.time() > deadline:
            return share
        time.sleep(0.5)
