"""Preprocessing: percentile clipping inside the brain, N4 against a known bias
field, z-scores, each step on its own, determinism, and properties on random volumes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from BrainTumorCNNLib.preparing import preprocessing
from BrainTumorCNNLib.preparing.preprocessing import BACKGROUND_VALUE, PreprocessingConfig, brain_mask, preprocess

OFF = PreprocessingConfig(clip=False, n4=False, zscore=False)


def ellipsoid(shape) -> np.ndarray:
    z, y, x = np.indices(shape, dtype=np.float32)
    c = [(s - 1) / 2 for s in shape]
    return sum(((a - ca) / (s / 2 - 0.5)) ** 2 for a, ca, s in zip((z, y, x), c, shape)) < 1


def random_case(shape=(10, 24, 24), seed=0) -> np.ndarray:
    """Four modalities of positive noise inside an ellipsoid brain, 0 outside."""
    rng = np.random.default_rng(seed)
    means = np.array([500, 900, 300, 400], np.float32)[:, None, None, None]
    return (means * rng.uniform(0.5, 1.5, (4,) + shape) * ellipsoid(shape)).astype(np.float32)


def coefficient_of_variation(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


# --- Clipping ------------------------------------------------------------------------------

def test_clipping_at_brain_percentiles_removes_a_planted_outlier():
    images = random_case()
    brain = brain_mask(images)
    images[0][tuple(np.argwhere(brain)[0])] = 1e6  # one hot voxel
    images[0][tuple(np.argwhere(brain)[-1])] = 1.0  # one cold voxel
    expected = np.percentile(images[0][brain], (1, 99))
    assert expected[0] > 100, "the percentiles must ignore the zero background"
    out = preprocess(images, PreprocessingConfig(clip=True, n4=False, zscore=False)).images
    inside = out[0][brain]
    np.testing.assert_allclose([inside.min(), inside.max()], expected, rtol=1e-6)
    assert out[0][tuple(np.argwhere(brain)[0])] == pytest.approx(expected[1])
    untouched = (images[0] > expected[0]) & (images[0] < expected[1])
    np.testing.assert_array_equal(out[0][untouched], images[0][untouched])
    assert (out[:, ~brain] == BACKGROUND_VALUE).all()


def test_other_percentiles_are_honoured():
    images = random_case()
    brain = brain_mask(images)
    out = preprocess(images, PreprocessingConfig(clip=True, clip_percentiles=(10.0, 90.0), n4=False,
                                                 zscore=False)).images
    for c in range(4):
        np.testing.assert_allclose([out[c][brain].min(), out[c][brain].max()],
                                   np.percentile(images[c][brain], (10, 90)), rtol=1e-6)


# --- z-scores -------------------------------------------------------------------------------

@pytest.mark.parametrize("clip", [False, True])
def test_zscore_inside_the_brain_and_background_value_outside(clip):
    images = random_case()
    images[:, 0, 0, 0] = 0  # corner: background in every modality
    brain = brain_mask(images)
    out = preprocess(images, PreprocessingConfig(clip=clip, n4=False, zscore=True))
    np.testing.assert_array_equal(out.brain_mask, brain)
    for c in range(4):
        values = out.images[c][brain].astype(np.float64)
        assert values.mean() == pytest.approx(0.0, abs=1e-5)
        assert values.std() == pytest.approx(1.0, abs=1e-5)
    assert (out.images[:, ~brain] == BACKGROUND_VALUE).all()
    assert out.images.dtype == np.float32


def test_median_iqr_statistics_centre_the_median_and_ignore_a_bright_lesion():
    images = random_case(seed=3)
    brain = brain_mask(images)
    robust = PreprocessingConfig(clip=False, n4=False, statistics="median-iqr")
    out = preprocess(images, robust).images
    for c in range(4):
        q1, median, q3 = np.percentile(out[c][brain].astype(np.float64), (25, 50, 75))
        assert median == pytest.approx(0.0, abs=1e-5)
        assert (q3 - q1) == pytest.approx(1.349, rel=1e-4)
    # a bright lesion in 10 % of the brain moves the mean / sd z-scores of the rest, the robust ones much less
    lesion = brain & (np.random.default_rng(4).random(brain.shape) < 0.1)
    bright = images.copy()
    bright[3][lesion] *= 4.0
    healthy = brain & ~lesion
    moved = {}
    for statistics in ("mean-sd", "median-iqr"):
        config = PreprocessingConfig(clip=False, n4=False, statistics=statistics)
        before, after = preprocess(images, config).images[3], preprocess(bright, config).images[3]
        moved[statistics] = float(np.abs(after[healthy] - before[healthy]).mean())
    assert moved["median-iqr"] < 0.25 * moved["mean-sd"], moved


def test_unknown_statistics_are_refused_and_a_card_gives_its_model_s_statistics():
    with pytest.raises(ValueError, match="unknown normalisation statistics"):
        PreprocessingConfig(statistics="mode")
    card = {"training": {"config": {"preprocessing": {"statistics": "median-iqr", "n4": True}}}}
    base = PreprocessingConfig(n4_shrink=6)
    assert PreprocessingConfig.of_model(card, base) == PreprocessingConfig(n4_shrink=6, statistics="median-iqr")
    assert PreprocessingConfig.of_model({}, base).statistics == "mean-sd"  # cards before the choice existed


def test_brain_mask_is_any_modality_non_zero_and_can_be_given():
    images = random_case()
    images[1:, 5, 12, 12] = 0  # zero in three modalities, not in T1: still brain
    assert brain_mask(images)[5, 12, 12]
    given_mask = ellipsoid(images.shape[1:]) & (np.indices(images.shape[1:])[0] < 5)
    out = preprocess(images, PreprocessingConfig(n4=False), mask=given_mask)
    np.testing.assert_array_equal(out.brain_mask, given_mask)
    assert (out.images[:, ~given_mask] == BACKGROUND_VALUE).all()


# --- N4 ---------------------------------------------------------------------------------------

def biased_tissue(shape=(24, 40, 40), seed=0):
    """A uniform tissue (2 % noise) times a smooth multiplicative bias field (about +-30 %)."""
    z, y, x = np.indices(shape, dtype=np.float32)
    c = [(s - 1) / 2 for s in shape]
    brain = ellipsoid(shape)
    tissue = 100 * (1 + 0.02 * np.random.default_rng(seed).standard_normal(shape))
    bias = np.exp(0.25 * (x - c[2]) / 20 + 0.15 * ((y - c[1]) / 20) ** 2 - 0.1 * (z - c[0]) / 12)
    return (tissue * bias * brain).astype(np.float32), (tissue * brain).astype(np.float32), brain


def test_n4_removes_a_multiplicative_bias_field_from_t1_and_t1c_only():
    biased, clean, brain = biased_tissue()
    images = np.stack([biased] * 4)
    before, noise = coefficient_of_variation(biased[brain]), coefficient_of_variation(clean[brain])
    assert before > 4 * noise
    out = preprocess(images, PreprocessingConfig(clip=False, zscore=False, n4=True)).images
    for c in (0, 1):  # T1, T1c: the uniform tissue is uniform again, up to its noise
        assert coefficient_of_variation(out[c][brain]) < 1.5 * noise < before / 3
    np.testing.assert_array_equal(out[2:, brain], images[2:, brain])  # T2, FLAIR untouched


def test_n4_on_the_sequences_a_model_asks_for():
    biased, clean, brain = biased_tissue()
    images = np.stack([biased] * 4)
    noise = coefficient_of_variation(clean[brain])
    config = PreprocessingConfig(clip=False, zscore=False, n4_sequences=("T2", "FLAIR"))
    out = preprocess(images, config).images
    np.testing.assert_array_equal(out[:2, brain], images[:2, brain])
    for c in (2, 3):
        assert coefficient_of_variation(out[c][brain]) < 1.5 * noise
    with pytest.raises(ValueError, match="unknown sequence"):
        PreprocessingConfig(n4_sequences=("T1", "PD"))
    card = {"training": {"config": {"preprocessing": {"n4_sequences": ["T1", "T1c", "T2", "FLAIR"]}}}}
    assert PreprocessingConfig.of_model(card).n4_sequences == ("T1", "T1c", "T2", "FLAIR")
    assert PreprocessingConfig.of_model({}).n4_sequences == ("T1", "T1c")
    # a training run's own card (best / last.safetensors) holds its config at the top
    run_card = {"config": {"preprocessing": {"n4_sequences": ["T1", "T1c", "T2", "FLAIR"], "statistics": "median-iqr"}}}
    assert PreprocessingConfig.of_model(run_card) == PreprocessingConfig(n4_sequences=("T1", "T1c", "T2", "FLAIR"),
                                                                         statistics="median-iqr")


def test_n4_also_works_on_negative_intensities_and_single_slices():
    biased, clean, brain = biased_tissue()
    shifted = np.stack([biased - 150] * 4) * brain  # negative inside the brain, as after another normalisation
    out = preprocess(shifted, PreprocessingConfig(clip=False, zscore=False)).images
    assert np.isfinite(out).all() and (out[0][brain] < 0).any()
    assert coefficient_of_variation(out[0][brain] + 150) < coefficient_of_variation(biased[brain])
    one_slice = np.stack([biased[12:13]] * 4)
    out = preprocess(one_slice, PreprocessingConfig(clip=False, zscore=False)).images
    assert coefficient_of_variation(out[0][brain[12:13]]) < coefficient_of_variation(one_slice[0][brain[12:13]]) / 2


def test_n4_stops_a_level_at_its_convergence_threshold():
    """A threshold no field change passes stops every level after one iteration: a weaker correction."""
    biased, _, brain = biased_tissue()
    images = np.stack([biased] * 4)
    residual = {}
    for threshold in (0.001, 10.0):
        config = PreprocessingConfig(clip=False, zscore=False, n4_convergence=threshold)
        residual[threshold] = coefficient_of_variation(preprocess(images, config).images[0][brain])
    assert residual[0.001] < residual[10.0] < coefficient_of_variation(biased[brain])


# --- Switches and determinism ------------------------------------------------------------------

def test_all_steps_off_only_sets_the_background():
    images = random_case()
    brain = brain_mask(images)
    out = preprocess(images, OFF).images
    np.testing.assert_array_equal(out[:, brain], images[:, brain])
    assert (out[:, ~brain] == BACKGROUND_VALUE).all()


@pytest.mark.parametrize("step", ["clip", "n4", "zscore"])
def test_each_step_switches_on_alone(step):
    images = random_case()
    brain = brain_mask(images)
    out = preprocess(images, PreprocessingConfig(**{**OFF.__dict__, step: True})).images
    changed = [not np.array_equal(out[c][brain], images[c][brain]) for c in range(4)]
    assert changed == ([True, True, False, False] if step == "n4" else [True] * 4)
    clipped = all(out[c][brain].max() == pytest.approx(np.percentile(images[c][brain], 99)) for c in range(4))
    assert clipped == (step == "clip")
    normalised = all(abs(float(out[c][brain].mean())) < 1e-4 for c in range(4))
    assert normalised == (step == "zscore")


def test_same_numbers_twice():
    images = random_case(seed=3)
    first = preprocess(images, PreprocessingConfig())
    second = preprocess(images.copy(), PreprocessingConfig())
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.brain_mask, second.brain_mask)


def test_the_sequences_fitted_side_by_side_give_the_numbers_fitted_one_after_the_other(monkeypatch):
    """N4 of T1, T1c and T2 on threads at once (as many as the CPUs allow) or on one: the same bits."""
    biased, _, _ = biased_tissue()
    images = np.stack([biased, biased * 1.1, biased[::-1].copy(), biased])
    config = PreprocessingConfig(n4_sequences=("T1", "T1c", "T2"))
    outputs = []
    for cpus in (1, 3):
        monkeypatch.setattr(preprocessing.os, "cpu_count", lambda: cpus)
        outputs.append(preprocess(images, config).images)
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0][0], outputs[0][1])  # each sequence its own field and statistics


def test_input_is_not_modified():
    images = random_case()
    copy = images.copy()
    preprocess(images, PreprocessingConfig())
    np.testing.assert_array_equal(images, copy)


# --- Properties on random volumes ----------------------------------------------------------------

volumes = st.tuples(st.integers(1, 4), st.integers(2, 7), st.integers(2, 7)).flatmap(
    lambda shape: hnp.arrays(np.float32, (4,) + shape,
                             elements=st.one_of(st.just(0.0), st.floats(-1e6, 1e6, width=32))))


@settings(max_examples=20, deadline=None)
@given(images=volumes, clip=st.booleans())
def test_random_volumes_give_finite_normalised_output_or_a_named_error(images, clip):
    brain = brain_mask(images)
    try:
        out = preprocess(images, PreprocessingConfig(clip=clip, n4=False))
    except ValueError as error:  # only for an empty brain or a modality without contrast, said so
        message = str(error)
        assert ("empty" in message) == (not brain.any())
        assert "empty" in message or ("constant" in message and message.split()[0] in ("T1", "T1c", "T2", "FLAIR"))
        return
    assert np.isfinite(out.images).all()
    np.testing.assert_array_equal(out.brain_mask, brain)
    assert (out.images[:, ~brain] == BACKGROUND_VALUE).all()
    for c in range(4):
        assert abs(float(out.images[c][brain].mean())) < 1e-3


@settings(max_examples=5, deadline=None)
@given(images=st.tuples(st.integers(1, 3), st.integers(6, 10), st.integers(6, 10)).flatmap(
    lambda shape: hnp.arrays(np.float32, (4,) + shape, elements=st.floats(1.0, 1e4, width=32))))
def test_random_volumes_through_n4_stay_finite(images):
    try:
        out = preprocess(images, PreprocessingConfig())
    except ValueError as error:
        assert "constant" in str(error)
        return
    assert np.isfinite(out.images).all()
    assert out.brain_mask.all()


def test_one_brain_mask_for_raw_and_preprocessed_images():
    """The brain is what differs from the background: 0 in skull-stripped raw images, BACKGROUND_VALUE
    after preprocessing (what inference masks with); both give the same voxels."""
    rng = np.random.default_rng(3)
    images = np.zeros((4, 6, 20, 20), np.float32)
    images[:, 1:5, 4:16, 5:15] = rng.uniform(10, 100, (4, 4, 12, 10))
    pre = preprocess(images, PreprocessingConfig(n4=False))
    np.testing.assert_array_equal(brain_mask(images), pre.brain_mask)
    np.testing.assert_array_equal(brain_mask(pre.images, background=BACKGROUND_VALUE), pre.brain_mask)
    assert brain_mask(pre.images).all()  # the preprocessed background is not 0: the parameter matters


def test_through_plane_average_spreads_along_the_slice_axis_inside_the_brain_only():
    """FLAIR over 5 slices (1 mm) and T2 over 3, box applied three times; T1 / T1c, background and a
    slice spacing at least the width untouched; a bright slice's sum over the column is kept."""
    images = np.zeros((4, 31, 6, 6), np.float32)
    brain = np.zeros((31, 6, 6), bool)
    brain[2:29, 1:5, 1:5] = True
    images[:, ~brain] = BACKGROUND_VALUE
    images[:, 15][:, brain[15]] = 3.0
    out = preprocessing.through_plane_average(images, brain, 1.0)
    np.testing.assert_array_equal(out[:2], images[:2])
    np.testing.assert_array_equal(out[:, ~brain], images[:, ~brain])
    flair, t2 = out[3, 2:29, 2, 2], out[2, 2:29, 2, 2]  # the brain's voxels of one column
    assert np.count_nonzero(flair > 1e-6) == 13 and np.count_nonzero(t2 > 1e-6) == 7  # 3 (n - 1) + 1 slices
    assert flair.sum() == pytest.approx(3.0, rel=1e-5) and t2.sum() == pytest.approx(3.0, rel=1e-5)
    assert flair[13] == flair.max() and flair[12] == pytest.approx(flair[14])
    edge = images.copy()
    edge[3][brain] = 1.0  # a constant brain stays constant up to its top and bottom slices
    np.testing.assert_allclose(preprocessing.through_plane_average(edge, brain, 1.0)[3][brain], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(preprocessing.through_plane_average(images, brain, 5.0), images)
