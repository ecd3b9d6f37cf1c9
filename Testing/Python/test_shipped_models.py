"""Every shipped model segments a real case: a broken or mis-shipped weights file cannot land.

The check runs the model densely on ten axial slices through the tumor of a
real BraTS case (the whole pipeline's preprocessing, the model's own dense
inference) and asks for a Dice per region above a floor far below what a
trained model scores and far above what an untrained or mismatched one does.
"""
import numpy as np
import pytest

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.network import registry, weights
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig, preprocess
from BrainTumorCNNLib.running import inference
from BrainTumorCNNLib.running.cases import read_case

CASE = ("brats2021", "BraTS2021_00003")
SLICES = 10
#: Dice floors on the tumor slices (complete, core, enhancing); an untrained TwoPathCNN scores below 0.1.
FLOORS = {"complete": 0.6, "core": 0.3, "enhancing": 0.3}


@pytest.fixture(scope="module")
def tumor_slices(shared_data):
    case = read_case(shared_data.joinpath(*CASE))
    pre = preprocess(case.images, PreprocessingConfig(), spacing=case.geometry.spacing)
    zs = np.flatnonzero(case.truth.any(axis=(1, 2)))
    chosen = zs[np.linspace(0, len(zs) - 1, SLICES + 2).round().astype(int)[1:-1]]
    return pre, case.truth, chosen


def dice(predicted: np.ndarray, truth: np.ndarray, region: str) -> float:
    a, b = labels.region_mask(predicted, region), labels.region_mask(truth, region)
    total = a.sum() + b.sum()
    return 2.0 * np.logical_and(a, b).sum() / total if total else 1.0


@pytest.mark.parametrize("name", sorted(registry.shipped()))
def test_shipped_model_segments_a_real_case_above_a_floor(tumor_slices, name):
    pre, truth, zs = tumor_slices
    model, card = weights.load(name)
    result = inference.segment_volume(model, pre.images, pre.brain_mask, device="cpu", only_slices=zs)
    scores = {r: dice(result.labels[zs], truth[zs], r) for r in FLOORS}
    assert all(scores[r] >= floor for r, floor in FLOORS.items()), (name, scores)


def test_the_floor_refuses_an_untrained_model(tumor_slices):
    import torch
    pre, truth, zs = tumor_slices
    torch.manual_seed(0)
    model = registry.get("TwoPathCNN").build(num_classes=4).eval()
    result = inference.segment_volume(model, pre.images, pre.brain_mask, device="cpu", only_slices=zs)
    scores = {r: dice(result.labels[zs], truth[zs], r) for r in FLOORS}
    assert not all(scores[r] >= floor for r, floor in FLOORS.items()), scores


def test_bfloat16_agrees_with_float32_on_a_real_case(tumor_slices):
    """The precision option's bound (docs/speed.md): labels equal on >= 99.9 % of the brain voxels and
    Dice between the two label maps >= 0.995 per region, with the default model on the tumor slices."""
    pre, _, zs = tumor_slices
    model, _ = weights.load(registry.default_model())
    results = {p: inference.segment_volume(model, pre.images, pre.brain_mask, device="cpu", only_slices=zs,
                                           precision=p) for p in ("float32", "bfloat16")}
    changed = np.abs(results["bfloat16"].probabilities[:, zs] - results["float32"].probabilities[:, zs]).max()
    # bfloat16 really ran: float32 runs repeat exactly (test_faults.py), so any change is bfloat16's. How much
    # changes depends on which layers timed faster as FFT (float32 always), i.e. on the machine's load.
    assert changed > 0
    runs = {p: result.labels[zs] for p, result in results.items()}
    assert (runs["bfloat16"] == runs["float32"])[pre.brain_mask[zs]].mean() >= 0.999
    for region in FLOORS:
        assert dice(runs["bfloat16"], runs["float32"], region) >= 0.995, region
