"""The probabilities' own readings of a result: the entropy map and the Dice the model expects."""
import numpy as np
import pytest

from BrainTumorCNNLib.running import uncertainty


def _probabilities(tumor_p: np.ndarray) -> np.ndarray:
    """4-class probabilities (background, NCR, edema, enhancing) whose edema probability is `tumor_p`."""
    p = np.zeros((4,) + tumor_p.shape, np.float32)
    p[2] = tumor_p
    p[0] = 1.0 - tumor_p
    return p


def test_entropy_is_0_where_sure_and_1_where_every_class_is_equally_likely():
    p = np.zeros((4, 1, 2, 2), np.float32)
    p[0, 0, 0, 0] = 1.0  # sure
    p[:, 0, 0, 1] = 0.25  # all four equally likely
    p[0, 0, 1, :] = 0.5  # two classes even
    p[2, 0, 1, :] = 0.5
    entropy = uncertainty.entropy_map(p)
    assert entropy[0, 0, 0] == pytest.approx(0.0, abs=1e-5) and entropy[0, 0, 1] == pytest.approx(1.0, abs=1e-5)
    assert entropy[0, 1, 0] == pytest.approx(0.5, abs=1e-5)  # log 2 / log 4
    assert entropy.dtype == np.float32


def test_expected_dice_is_the_true_dice_of_sure_probabilities_and_falls_with_half_believed_tumor():
    brain = np.ones((1, 10, 10), bool)
    truth_p = np.zeros((1, 10, 10), np.float32)
    truth_p[0, 2:8, 2:8] = 1.0  # 36 voxels, sure
    labels = np.zeros((1, 10, 10), np.uint8)
    labels[0, 2:8, 2:5] = 2  # 18 of them called
    sure = uncertainty.expected_dice(_probabilities(truth_p), labels, brain, ("complete",))
    assert sure["complete"] == pytest.approx(2 * 18 / (36 + 18))
    called_only = truth_p.copy()
    called_only[0, 2:8, 5:8] = 0.0  # the network gives nothing beyond what it called: it expects to be right
    assert uncertainty.expected_dice(_probabilities(called_only), labels, brain, ("complete",))["complete"] \
        == pytest.approx(1.0)
    half = called_only.copy()
    half[0, 2:8, 5:8] = 0.45  # half-believed, not called: under-calling the figure sees
    doubt = uncertainty.expected_dice(_probabilities(half), labels, brain, ("complete",))["complete"]
    assert doubt == pytest.approx(2 * 18 / (18 + 18 * 0.45 + 18), rel=1e-4) and doubt < 1.0


def test_expected_dice_of_a_region_neither_called_nor_expected_is_1():
    brain = np.ones((1, 4, 4), bool)
    labels = np.zeros((1, 4, 4), np.uint8)
    p = _probabilities(np.full((1, 4, 4), 0.01, np.float32))  # 0.16 voxels' worth in all
    assert uncertainty.expected_dice(p, labels, brain, ("enhancing", "complete")) == {"enhancing": 1.0, "complete": 1.0}


def test_near_tumor_reaches_10_mm_around_the_labels_and_the_whole_brain_without_them():
    brain = np.ones((1, 1, 40), bool)
    labels = np.zeros((1, 1, 40), np.uint8)
    labels[0, 0, 20] = 2
    near = uncertainty.near_tumor(labels, brain, (2.0, 1.0, 1.0))  # 2 mm along x
    assert np.flatnonzero(near[0, 0]).tolist() == list(range(15, 26))  # 5 voxels of 2 mm each way
    assert uncertainty.near_tumor(np.zeros_like(labels), brain, (1.0, 1.0, 1.0)).all()
