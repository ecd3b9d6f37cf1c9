"""Screening (inference.segment_volume's screen_step): fewer slices run, the cleaned labels unchanged.

Why it is exact: a tumor component spans consecutive slices, so one that meets a screened slice
makes that slice positive and every slice next to it runs; a component missed lies wholly inside
the unrun slices between two screened ones, spans at most step - 1 slices and is removed by the
flat rule anyway."""
from __future__ import annotations

import io as stdio
import re

import numpy as np
import pytest
import torch

from BrainTumorCNNLib.frontends.progress import ProgressLine
from BrainTumorCNNLib.network import weights
from BrainTumorCNNLib.preparing.preprocessing import BACKGROUND_VALUE, preprocess
from BrainTumorCNNLib.running import inference, pipeline
from BrainTumorCNNLib.running.cases import read_case
from BrainTumorCNNLib.running.postprocessing import CleanupConfig, cleanup

CASE = "brats2021/BraTS2021_00000"
SLAB = (20, 12)  # slices below / above the tumor's highest slice: the slab holds tumor-free slices


def test_the_plan_runs_the_gaps_next_to_a_positive_screen():
    slices = np.arange(10, 20)  # screened at step 3: 10, 13, 16, 19
    assert list(inference.screen_plan(slices, 3, [False, True, False, False])) == [11, 12, 14, 15]
    assert list(inference.screen_plan(slices, 3, [False, False, False, True])) == [17, 18]
    assert list(inference.screen_plan(slices, 3, [True, False, False, False])) == [11, 12]
    assert list(inference.screen_plan(slices, 3, [False] * 4)) == []


def _screened(tumor: np.ndarray, step: int) -> np.ndarray:
    """`tumor` as a screened run sees it: the slices it does not run are empty."""
    slices = np.arange(tumor.shape[0])
    positive = tumor[::step].reshape(len(slices[::step]), -1).any(axis=1)
    run = np.union1d(slices[::step], inference.screen_plan(slices, step, positive))
    seen = np.zeros_like(tumor)
    seen[run] = tumor[run]
    return seen


def _blobs(seed: int, shape=(40, 24, 24)) -> np.ndarray:
    """Label maps with components of 1-6 slices, some touching each other, anywhere."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(1, 8)):
        z, y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1] - 8), rng.integers(0, shape[2] - 8)
        depth, size = rng.integers(1, 7), rng.integers(3, 8)
        out[z:z + depth, y:y + size, x:x + size] = rng.choice([1, 2, 4])
    return out


@pytest.mark.parametrize("config", [CleanupConfig(), CleanupConfig(flat_max_slices=1),
                                    CleanupConfig(flat_max_slices=4, min_volume_ml=0.0),
                                    CleanupConfig(max_distance_mm=4.0), CleanupConfig(max_distance_mm=10.0),
                                    CleanupConfig(max_distance_mm=4.0, distant_max_share=0.5)])
def test_screening_at_the_cleanups_span_never_changes_the_cleaned_labels(config):
    step = 1 + config.unseen_span()
    missed_before_cleanup = distant = 0
    for seed in range(200):
        labels = _blobs(seed)
        seen = _screened(labels, step)
        missed_before_cleanup += int((seen != labels).any())
        cleaned, report = cleanup(labels, (1, 1, 1), config)
        distant += sum("distant" in c.reasons for c in report.components)
        np.testing.assert_array_equal(cleanup(seen, (1, 1, 1), config)[0], cleaned)
    assert missed_before_cleanup > 0  # the blobs do fall between screened slices
    assert config.max_distance_mm is None or distant > 0  # and the distance rule does remove some


def test_a_flat_component_larger_than_the_tumor_is_not_the_distance_rules_reference():
    """Why screening may leave it unrun: the reference is the largest component the other rules keep."""
    labels = np.zeros((20, 40, 40), np.uint8)
    labels[2:4, :, :] = 2  # a 2-slice sheet of 3,200 voxels
    labels[8:14, 5:10, 5:10] = 1  # the tumor, 150 voxels, 4 slices from the sheet
    cleaned, report = cleanup(labels, (1, 1, 1), CleanupConfig(max_distance_mm=1.0))
    assert not cleaned[2:4].any() and np.array_equal(cleaned[8:14], labels[8:14])


def test_one_slice_more_than_the_span_can_change_them():
    """The bound is tight: a component of span + 1 slices between two screened slices survives cleanup."""
    config = CleanupConfig()
    step = config.unseen_span() + 2
    labels = np.zeros((12, 16, 16), np.uint8)
    labels[1:1 + step - 1, 4:12, 4:12] = 2  # wholly between screened slices 0 and `step`
    assert not np.array_equal(cleanup(_screened(labels, step), (1, 1, 1), config)[0],
                              cleanup(labels, (1, 1, 1), config)[0])


def test_keeping_the_largest_only_or_no_flat_rule_turns_screening_off():
    assert CleanupConfig().unseen_span() == CleanupConfig().flat_max_slices
    assert CleanupConfig(max_distance_mm=30.0).unseen_span() == CleanupConfig().flat_max_slices
    assert CleanupConfig(keep_largest_only=True).unseen_span() == 0
    assert CleanupConfig(drop_flat=False).unseen_span() == 0


def test_screen_step_is_checked():
    volume = np.zeros((4, 3, 40, 40), np.float32)
    from BrainTumorCNNLib.network import registry
    model = registry.get("TwoPathCNN").build(4).eval()
    with pytest.raises(ValueError, match="screen_step"):
        inference.segment_volume(model, volume, screen_step=0)
    with pytest.raises(ValueError, match="cannot be combined"):
        inference.segment_volume(model, volume, screen_step=3, only_slices=[1])


class _BrightIsTumor(torch.nn.Module):
    """A one-voxel network: tumor (class 1) where the first modality exceeds 0.5, background elsewhere."""

    receptive_field, num_classes, in_channels = 1, 4, 4

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, 0], self.conv.bias[1] = 10.0, -5.0

    def forward(self, x):
        return torch.softmax(self.conv(x), 1)


@pytest.mark.parametrize("flips", [False, True])
def test_the_progress_line_names_each_total_once_and_never_changes_it(flips):
    """Issue 34 point 8: the command line's count read 31/131, then 45/108, once screening had chosen the
    slices to run.  Now screening counts its own slices and the run names its total once it is known."""
    volume = np.full((4, 30, 8, 8), BACKGROUND_VALUE, np.float32)
    volume[1] = 0.1  # brain everywhere
    volume[0, 12:15] = 1.0  # tumor in three slices
    stream = stdio.StringIO()
    runner = inference.Runner(_BrightIsTumor(), torch.device("cpu"), False, inference.DEFAULT_MEMORY_BUDGET,
                              None, "float32")
    result = runner.segment(volume, screen_step=3, flips=flips, progress=ProgressLine(stream, step=0.001))
    assert 0 < len(result.slices) < 30, "screening left slices out"
    totals: dict = {}
    for line in stream.getvalue().splitlines():
        found = re.match(r"\s*\[\s*\d+%\] (.*?)(\d+)/(\d+) \(", line)
        assert found, line
        totals.setdefault(found.group(1), set()).add(int(found.group(3)))
    assert all(len(named) == 1 for named in totals.values()), totals
    views = 2 if flips else 1
    assert totals["slice "] == {len(result.slices) * views}, totals


def test_focus_boxes_name_each_gap_next_to_tumor_with_its_neighbours_box():
    slices = np.arange(10, 20)  # screened at step 3: 10, 13, 16, 19
    tumor = np.zeros((4, 100, 80), bool)
    tumor[1, 40:50, 30:35] = True  # screened slice 13
    tumor[2, 45:60, 20:25] = True  # screened slice 16
    boxes = inference.focus_boxes(slices, 3, tumor, margin=5)
    assert sorted(boxes) == [11, 12, 14, 15, 17, 18]
    assert boxes[11] == boxes[12] == (0, [(35, 55, 25, 40)])
    assert boxes[14] == (1, [(35, 65, 15, 40)])  # both neighbours' tumor, the overlapping boxes merged
    assert boxes[17] == (2, [(40, 65, 15, 30)])
    tumor[:] = False
    tumor[0, 0:3, 75:80] = True  # at the plane's corner: the box stops there
    tumor[1, 90:95, 10:14] = True  # far from it: a box of its own
    assert inference.focus_boxes(slices, 3, tumor, margin=5)[11] == (0, [(0, 8, 70, 80), (85, 100, 5, 19)])


def test_the_edge_is_reached_near_a_side_inside_the_plane_only():
    box = (0, 40, 20, 60)  # its top side is the plane's, the others are not
    tumor = np.zeros((50, 80), bool)
    tumor[0:5, 30:40] = True  # at the plane's own side
    assert not inference.edge_reached(tumor, box, edge=4)
    tumor[30:37, 30:40] = True  # its last row 4 rows from the bottom side (row 39)
    assert inference.edge_reached(tumor, box, edge=4)
    assert not inference.edge_reached(tumor, box, edge=3)
    assert inference.edge_reached(tumor, (0, 40, 34, 60), edge=1)  # cut by the left side


def _bright(tumor: np.ndarray) -> np.ndarray:
    """A volume _BrightIsTumor labels `tumor` in: brain everywhere."""
    volume = np.full((4,) + tumor.shape, 0.1, np.float32)
    volume[0] = np.where(tumor, 1.0, 0.1)
    return volume


@pytest.mark.parametrize("flips", [False, True])
def test_focused_gaps_leave_the_cleaned_labels_those_of_a_whole_brain_run(flips):
    """Tumor in an unscreened slice beyond its box, joined to a screened slice's tumor (a bar across the
    plane) or not (a flat sheet, removed by the cleanup anyway): the cleaned labels are a full run's, the
    bar's gap having run again on the whole brain."""
    runner = inference.Runner(_BrightIsTumor(), torch.device("cpu"), False, inference.DEFAULT_MEMORY_BUDGET,
                              None, "float32")
    config, spacing = CleanupConfig(), (1.0, 1.0, 1.0)
    step, bars, focused = 1 + config.unseen_span(), 0, 0
    for seed in range(12):
        tumor = _blobs(seed, shape=(30, 120, 120)) > 0
        if seed % 3 == 0 and tumor[::step].any():  # a bar from a screened slice's tumor across the next gap
            z, y, x = (int(i[0]) for i in np.nonzero(tumor[::step]))
            tumor[z * step + 1:z * step + 3, y:y + 2, :] = True
            bars += 1
        if seed % 3 == 1:  # a flat sheet in a gap, far from anything
            tumor[4:6, 100:118, 0:118] = True
        with_screens = runner.segment(_bright(tumor), screen_step=step, flips=flips)
        full = runner.segment(_bright(tumor), flips=flips)
        np.testing.assert_array_equal(cleanup(with_screens.labels, spacing, config)[0],
                                      cleanup(full.labels, spacing, config)[0])
        unscreened = np.setdiff1d(with_screens.slices, np.arange(tumor.shape[0])[::step])
        beyond = (with_screens.probabilities[0][unscreened] == 1) & (full.probabilities[0][unscreened] != 1)
        focused += int(beyond.any())
    assert bars > 0 and focused > 0  # some gaps did run on a box


@pytest.fixture(scope="module")
def slab(shared_data):
    """A real case, preprocessed, cut to slices around the top of its tumor (some slices without tumor)."""
    case = read_case(shared_data / CASE)
    pre = preprocess(case.images, spacing=case.geometry.spacing)
    top = int(np.flatnonzero(case.truth.any(axis=(1, 2))).max())
    zs = slice(top - SLAB[0], top + SLAB[1])
    return pre.images[:, zs].copy(), pre.brain_mask[zs].copy(), case.geometry.spacing


@pytest.mark.parametrize("flips", [False, True])
def test_screened_segmentation_of_a_real_case_equals_the_full_one(slab, flips):
    volume, brain, spacing = slab
    model, card = weights.load("TwoPathCNN")
    runs = {}
    for screen in (False, True):
        options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu", flips=flips, screen=screen)
        runs[screen] = pipeline.segment_preprocessed(model, "TwoPathCNN", card, volume, brain, spacing, options)
    np.testing.assert_array_equal(runs[True].labels, runs[False].labels)
    assert runs[True].labels.any()
    # slices screening left out hold the background probability everywhere; the others are the full run's
    # within the box the slice ran on (inference.focus_boxes; its smaller transforms round differently, by
    # about 1e-6), background beyond it
    brain_slices = brain.any(axis=(1, 2))
    unrun = brain_slices & (runs[True].probabilities[0] == 1).all(axis=(1, 2))
    assert 0 < unrun.sum() < brain_slices.sum()
    run = brain_slices & ~unrun
    screened, full = runs[True].probabilities[:, run], runs[False].probabilities[:, run]
    differ = (np.abs(screened - full) > 1e-5).any(axis=0)
    assert (screened[0][differ] == 1).all()
    assert differ.any() and (full[0][differ] < 1).any(), "no slice ran on a box smaller than its brain"


def test_the_pipeline_cleans_with_the_rule_of_the_models_card_unless_told_not_to():
    from BrainTumorCNNLib.network import registry
    model = registry.get("TwoPathCNN").build(4).eval()
    volume, brain = np.zeros((4, 3, 40, 40), np.float32), np.ones((3, 40, 40), bool)
    card = {"cleanup": {"max_distance_mm": 10.0, "distant_max_share": 0.25, "keep_largest_only": False}}
    for model_cleanup, expected in ((True, "removing small, flat and distant components"),
                                    (False, "removing small, flat components")):
        said = []
        options = pipeline.SegmentationOptions(device="cpu", model_cleanup=model_cleanup)
        pipeline.segment_preprocessed(model, "TwoPathCNN", card, volume, brain, (1.0, 1.0, 1.0), options,
                                      progress=lambda fraction, message: said.append(message))
        assert expected in said


def test_the_pipeline_grows_the_edema_as_the_models_card_says_unless_told_not_to():
    """A card's growth reaches the labels through the pipeline: an untrained network's tumor (whatever it
    calls) gains the FLAIR-bright brain next to it; without the growth, or told not to, it does not."""
    from BrainTumorCNNLib.network import registry
    torch.manual_seed(1)  # a network whose edema calls lie a little brighter on FLAIR than the brain it leaves
    model = registry.get("TwoPathCNN").build(4).eval()
    rng = np.random.default_rng(0)
    volume = rng.normal(0.0, 1.0, (4, 6, 48, 48)).astype(np.float32)
    brain = np.ones((6, 48, 48), bool)
    card = {"cleanup": {"edema_flair_share": 0.0, "edema_growth_mm": 3.0}}
    runs = {}
    for growth in (True, False):
        options = pipeline.SegmentationOptions(device="cpu", edema_growth=growth, screen=False,
                                               cleanup=CleanupConfig(drop_small=False, drop_flat=False))
        runs[growth] = pipeline.segment_preprocessed(model, "TwoPathCNN", card, volume, brain, (1.0, 1.0, 1.0),
                                                     options)
    plain = runs[False].labels
    assert plain.any() and np.array_equal(plain, cleanup(runs[False].labels, (1.0, 1.0, 1.0),
                                                         CleanupConfig(drop_small=False, drop_flat=False))[0])
    grown = runs[True].labels
    added = (grown > 0) & (plain == 0)
    assert added.any() and (grown[added] == 2).all() and np.array_equal(grown[plain > 0], plain[plain > 0])
    assert runs[True].cleanup_report.grown_ml == pytest.approx(added.sum() / 1000.0)


def test_a_cards_rule_that_ranks_every_component_turns_screening_off():
    options = pipeline.SegmentationOptions()
    assert pipeline.screen_step(options) == pipeline.screen_step(options, {}) == 1 + CleanupConfig().flat_max_slices
    largest = {"cleanup": {"keep_largest_only": True}}
    assert pipeline.screen_step(options, largest) == 1
    assert pipeline.screen_step(pipeline.SegmentationOptions(model_cleanup=False), largest) > 1
    distant = {"cleanup": {"max_distance_mm": 10.0, "distant_max_share": 0.25}}
    assert pipeline.screen_step(options, distant) == pipeline.screen_step(options)
