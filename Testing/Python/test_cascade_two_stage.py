"""A cascade in two stages (running/cascade.py): its second network only near its first network's tumor,
given the first's maps as input channels, the maps background beyond the volume's edges as in training."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from BrainTumorCNNLib.frontends import batch
from BrainTumorCNNLib.network import networks
from BrainTumorCNNLib.preparing.preprocessing import BACKGROUND_VALUE, PreprocessingConfig
from BrainTumorCNNLib.running import cascade, inference, pipeline
from BrainTumorCNNLib.running.segmenter import Segmenter
from BrainTumorCNNLib.synthetic import phantom
from test_inference import brain_volume, lively

CPU = torch.device("cpu")


def test_near_tumor_grows_in_plane_and_reaches_neighbouring_slices():
    tumor = np.zeros((7, 20, 20), bool)
    tumor[3, 10, 10] = True
    brain = np.ones_like(tumor)
    brain[:, :, 12:] = False  # the region stays inside the brain
    near = cascade.near_tumor(tumor, brain, margin=2, slices=1)
    diamond = np.zeros((20, 20), bool)
    for dy in range(-2, 3):
        for dx in range(-2 + abs(dy), 3 - abs(dy)):
            diamond[10 + dy, 10 + dx] = True
    for z in (2, 3, 4):
        np.testing.assert_array_equal(near[z], diamond & brain[z])
    assert not near[[0, 1, 5, 6]].any()
    assert not cascade.near_tumor(np.zeros_like(tumor), brain).any()


def test_a_crop_beyond_the_volume_gets_each_channels_own_value():
    volume = np.arange(3 * 1 * 4 * 4, dtype=np.float32).reshape(3, 1, 4, 4)
    crop = inference._padded_crop(volume, [0], 0, 4, 0, 4, 5, (-4.0, 1.0, 0.0))
    assert crop.shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(crop[0, :, 2:6, 2:6], volume[:, 0])
    for channel, value in enumerate((-4.0, 1.0, 0.0)):
        outside = np.ones((8, 8), bool)
        outside[2:6, 2:6] = False
        assert (crop[0, channel][outside] == value).all()
    default = inference._padded_crop(volume, [0], 0, 4, 0, 4, 5)
    assert (default[0, :, 0, 0] == BACKGROUND_VALUE).all()


@pytest.fixture(scope="module")
def lively_cascade():
    return lively(networks.InputCascadeCNN(num_classes=4), seed=7)  # tumor in a fifth of the brain


def given_patch(model, given: np.ndarray, z: int, y: int, x: int) -> np.ndarray:
    """The cascade's probabilities at one pixel from its rf x rf patch of `given` (four images and a 4-class
    model's maps), beyond the slice the images' background and maps of certain background, as the training
    cases' maps were beyond their crop (learning/first_stage.py): the reference the second stage must equal
    (it fails with the maps padded as images)."""
    rf = model.receptive_field
    left, right = inference.margins(rf)
    fill = np.asarray([BACKGROUND_VALUE] * 4 + [1.0, 0.0, 0.0, 0.0], np.float32)[:, None, None]
    padded = np.broadcast_to(fill, (given.shape[0], given.shape[2] + rf - 1, given.shape[3] + rf - 1)).copy()
    padded[:, left:left + given.shape[2], left:left + given.shape[3]] = given[:, z]
    with torch.inference_mode():
        return model(torch.from_numpy(padded[None, :, y:y + rf, x:x + rf])).exp()[0, :, 0, 0].numpy()


def test_the_second_stage_is_the_cascade_given_its_first_maps_and_joins_only_near_tumor(lively_cascade,
                                                                                        monkeypatch):
    """Near the first network's tumor the probabilities are the cascade's on its patch of the images and
    the first network's maps (background beyond the volume's edge, which this brain's margins cross);
    elsewhere the first network's own."""
    model = lively_cascade
    volume, mask = brain_volume(slices=2)
    first = inference.Runner(model.first, CPU, True, inference.DEFAULT_MEMORY_BUDGET, None).segment(volume, mask)
    tumor = inference.argmax_classes(first.probabilities) > 0
    assert 0 < (tumor & mask).sum() < mask.sum() / 2, "degenerate test model: the first network's tumor"
    monkeypatch.setattr(cascade, "REGION_MARGIN", 3)
    monkeypatch.setattr(cascade, "REGION_SLICES", 0)
    result = cascade.TwoStage(model, CPU, True, inference.DEFAULT_MEMORY_BUDGET, None).segment(volume, mask)
    near = cascade.near_tumor(tumor, mask)
    assert near.any() and (mask & ~near).any()
    np.testing.assert_array_equal(result.probabilities[:, ~near], first.probabilities[:, ~near])
    given = np.concatenate([volume, first.probabilities])
    pixels = [tuple(p) for p in np.argwhere(near)]
    pixels = pixels[::max(1, len(pixels) // 12)] + [min(pixels, key=lambda p: p[1])]  # the one nearest the top edge
    expected = np.stack([given_patch(model, given, *p) for p in pixels])
    found = np.stack([result.probabilities[(slice(None),) + p] for p in pixels])
    assert expected.std(axis=0).max() > 0.02, "degenerate test model: probabilities do not vary"
    np.testing.assert_allclose(found, expected, atol=1e-3, rtol=0)
    np.testing.assert_array_equal(result.labels, np.array([0, 1, 2, 4])[inference.argmax_classes(result.probabilities)])


def test_two_stages_are_the_default_and_reach_the_engine_only_for_cascades():
    parser = argparse.ArgumentParser()
    batch.configure_parser(parser)
    assert batch.segmentation_options(parser.parse_args(["case", "--output", "o"])).two_stage
    assert pipeline.SegmentationOptions().two_stage  # the default everywhere: the page, the module, crossval
    assert not batch.segmentation_options(parser.parse_args(["case", "--output", "o", "--whole-cascade"])).two_stage
    budget = inference.DEFAULT_MEMORY_BUDGET
    assert isinstance(cascade.runner_for(networks.MFCascadeCNN(), CPU, True, budget, None, "float32", True),
                      cascade.TwoStage)
    for model, two_stage in ((networks.MFCascadeCNN(), False), (networks.TwoPathCNN(), True)):
        assert type(cascade.runner_for(model, CPU, True, budget, None, "float32", two_stage)) is inference.Runner


def test_the_shipped_cascade_in_two_stages_segments_the_phantom_and_says_so():
    case = phantom.make_phantom(0, "small")
    options = pipeline.SegmentationOptions(model="InputCascadeCNN", device="cpu", two_stage=True,
                                           preprocessing=PreprocessingConfig(n4=False))
    segmenter = Segmenter(options)
    assert isinstance(segmenter.runner, cascade.TwoStage)
    result = segmenter.segment(case.images, case.geometry)
    assert result.provenance["options"]["two_stage"] is True
    truth, found = case.truth > 0, result.labels > 0
    assert 2 * (truth & found).sum() / (truth.sum() + found.sum()) > 0.6
    whole = Segmenter(pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu", two_stage=True,
                                                            preprocessing=PreprocessingConfig(n4=False)))
    assert whole.provenance()["options"]["two_stage"] is False


def test_an_ensemble_of_cascades_in_two_stages_is_the_mean_of_its_members_each_in_two_stages():
    """Each member runs in two stages near its own first network's tumor, as that cascade alone would; the
    ensemble's probabilities are their mean and its labels their argmax."""
    ensemble = networks.CascadeEnsembleCNN(num_classes=4, members=2)
    for seed, member in enumerate(ensemble.members):
        lively(member, seed=7 + seed)
    ensemble.eval()
    volume, mask = brain_volume(slices=2)
    budget = inference.DEFAULT_MEMORY_BUDGET
    runner = cascade.runner_for(ensemble, CPU, True, budget, None, "float32", True)
    assert isinstance(runner, cascade.EnsembleTwoStage)
    assert type(cascade.runner_for(ensemble, CPU, True, budget, None, "float32", False)) is inference.Runner
    said = []
    result = runner.segment(volume, mask, progress=lambda f, m: said.append((f, m)))
    each = [cascade.TwoStage(member, CPU, True, budget, None).segment(volume, mask).probabilities
            for member in ensemble.members]
    assert np.abs(each[0] - each[1]).max() > 0.05, "degenerate test: the members agree"
    np.testing.assert_allclose(result.probabilities, np.mean(each, axis=0), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(result.labels, np.array([0, 1, 2, 4])[inference.argmax_classes(result.probabilities)])
    fractions = [f for f, _ in said]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any(m.startswith("member 2 of 2, second network") for _, m in said)
