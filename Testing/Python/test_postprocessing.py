"""Connected-component cleanup: each rule removes what it should and keeps what it should;
properties on random label maps, checked against scipy.ndimage's components."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from BrainTumorCNNLib.running.postprocessing import CleanupConfig, CleanupReport, cleanup, grow_edema, postprocess
from real_truth import read_truth, truth_files

try:
    from scipy import ndimage  # an independent connected-component labelling
except ImportError:
    ndimage = None

ONE_MM = (1.0, 1.0, 1.0)
ONLY_SMALL = CleanupConfig(drop_small=True, drop_flat=False, keep_largest_only=False)
ONLY_FLAT = CleanupConfig(drop_small=False, drop_flat=True, keep_largest_only=False)
ONLY_LARGEST = CleanupConfig(drop_small=False, drop_flat=False, keep_largest_only=True)


def tumor(shape=(20, 24, 24)):
    """A label map with a 10x10x10 tumor (edema shell, enhancing rim, necrotic centre)."""
    out = np.zeros(shape, np.uint8)
    out[5:15, 2:12, 2:12] = 2
    out[7:13, 4:10, 4:10] = 4
    out[9:11, 6:8, 6:8] = 1
    return out


def test_default_config_is_documented_and_sane():
    config = CleanupConfig()
    assert config.drop_small and config.drop_flat and not config.keep_largest_only
    assert config.min_volume_ml == 0.1 and config.flat_max_slices == 2 and config.fully_connected
    with pytest.raises(ValueError):
        CleanupConfig(min_volume_ml=-1)
    with pytest.raises(ValueError):
        CleanupConfig(flat_max_slices=1.5)


def test_small_rule_removes_small_components_and_keeps_large_ones():
    labels_in = tumor()
    labels_in[2:6, 18:22, 18:21] = 2  # 48 voxels = 0.048 mL at 1 mm: small
    labels_in[10:16, 16:22, 16:22] = 4  # 216 voxels = 0.216 mL: kept
    out, report = cleanup(labels_in, ONE_MM, ONLY_SMALL)
    assert not out[2:6, 18:22, 18:21].any()
    assert np.array_equal(out[10:16, 16:22, 16:22], labels_in[10:16, 16:22, 16:22])
    assert np.array_equal(out[:, :12, :12], labels_in[:, :12, :12])
    assert [c.voxels for c in report.removed] == [48] and report.removed[0].reasons == ("small",)
    assert report.voxels_removed == 48 and len(report.kept) == 2


def test_small_rule_measures_millilitres_with_the_spacing():
    labels_in = np.zeros((10, 10, 10), np.uint8)
    labels_in[2:6, 2:6, 2:6] = 2  # 64 voxels
    assert not cleanup(labels_in, ONE_MM, ONLY_SMALL)[0].any()  # 0.064 mL
    kept, report = cleanup(labels_in, (1.0, 1.0, 2.0), ONLY_SMALL)  # 0.128 mL
    assert np.array_equal(kept, labels_in) and report.components[0].volume_ml == pytest.approx(0.128)
    out, _ = cleanup(labels_in, (1.0, 1.0, 2.0), CleanupConfig(min_volume_ml=0.2, drop_flat=False))
    assert not out.any()


def test_flat_rule_removes_blobs_of_one_or_two_slices_and_keeps_thicker_ones():
    labels_in = tumor((20, 40, 40))
    labels_in[0, 20:40, 20:40] = 2  # one slice, 400 voxels (0.4 mL: not small)
    labels_in[18:20, 0:15, 25:40] = 4  # two slices, 450 voxels
    labels_in[2:5, 25:35, 2:12] = 2  # three slices: kept
    out, report = cleanup(labels_in, ONE_MM, ONLY_FLAT)
    assert not out[0].any() and not out[18:20].any()
    assert np.array_equal(out[2:5, 25:35, 2:12], labels_in[2:5, 25:35, 2:12])
    assert np.array_equal(out[5:15], labels_in[5:15])
    assert sorted(c.slices for c in report.removed) == [1, 2]
    assert all(c.reasons == ("flat",) for c in report.removed)
    # flat is measured along axis 0 (Z) only: a blob one voxel thin in X is kept
    side = np.zeros((10, 10, 10), np.uint8)
    side[1:9, 1:9, 4] = 2
    assert np.array_equal(cleanup(side, ONE_MM, ONLY_FLAT)[0], side)
    # the threshold is a parameter
    assert not cleanup(side, ONE_MM, CleanupConfig(drop_small=False, flat_max_slices=8))[0].any()


def test_keep_largest_removes_every_other_component_and_is_off_by_default():
    labels_in = tumor()
    labels_in[12:18, 16:22, 16:22] = 2  # a second focus of 216 voxels (smaller than the main 1000)
    out, report = cleanup(labels_in, ONE_MM, ONLY_LARGEST)
    assert not out[12:18, 16:22, 16:22].any() and np.array_equal(out[:, :12, :12], labels_in[:, :12, :12])
    assert [c.reasons for c in report.components] == [(), ("not largest",)]
    assert report.components[0].voxels == 1000  # largest first
    assert np.array_equal(cleanup(labels_in, ONE_MM)[0], labels_in)  # default: multifocal tumors stay


def test_distant_rule_keeps_satellites_near_the_main_tumor_and_removes_far_blobs():
    labels_in = np.zeros((20, 60, 24), np.uint8)
    labels_in[5:15, 2:12, 2:12] = 2  # main tumor (1000 voxels), y 2..11
    labels_in[6:10, 16:20, 4:8] = 2  # satellite: nearest voxel 5 voxels from the main one (y 16 vs 11)
    labels_in[6:10, 50:54, 4:8] = 4  # far blob: 39 voxels away
    spacing = (1.0, 2.0, 1.0)  # x y z: along y a voxel is 2 mm, so the satellite is 10 mm away, the blob 78 mm
    only_distance = CleanupConfig(drop_small=False, drop_flat=False, max_distance_mm=12.0)
    out, report = cleanup(labels_in, spacing, only_distance)
    assert out[6:10, 16:20, 4:8].all() and not out[6:10, 50:54, 4:8].any()
    assert sorted(c.reasons for c in report.components) == [(), (), ("distant",)]
    out, _ = cleanup(labels_in, spacing, CleanupConfig(drop_small=False, drop_flat=False, max_distance_mm=8.0))
    assert not out[6:10, 16:20, 4:8].any()  # 10 mm > 8 mm
    assert np.array_equal(cleanup(labels_in, spacing, CleanupConfig(drop_small=False, drop_flat=False))[0],
                          labels_in)  # off by default


def test_distant_rule_keeps_a_second_focus_of_a_multifocal_tumor_by_its_size():
    labels_in = np.zeros((20, 60, 24), np.uint8)
    labels_in[5:15, 2:12, 2:12] = 2  # main tumor, 1000 voxels
    labels_in[5:13, 40:50, 2:12] = 2  # second focus, 800 voxels (80 % of the main), 28 mm away
    labels_in[6:10, 50:54, 14:18] = 4  # far blob, 64 voxels (6 %)
    guarded = CleanupConfig(drop_small=False, drop_flat=False, max_distance_mm=10.0, distant_max_share=0.25)
    out, report = cleanup(labels_in, ONE_MM, guarded)
    assert out[5:13, 40:50, 2:12].all() and not out[6:10, 50:54, 14:18].any()
    assert [c.reasons for c in report.components] == [(), (), ("distant",)]
    out, _ = cleanup(labels_in, ONE_MM, CleanupConfig(drop_small=False, drop_flat=False, max_distance_mm=10.0))
    assert not out[5:13, 40:50, 2:12].any()  # without the share every distant component goes
    for share in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="distant_max_share"):
            CleanupConfig(max_distance_mm=10.0, distant_max_share=share)
    with pytest.raises(ValueError, match="max_distance_mm"):
        CleanupConfig(max_distance_mm=-1.0)


def test_each_rule_can_be_switched_off():
    labels_in = tumor((20, 40, 40))
    labels_in[0, 30:32, 30:32] = 2  # small, flat, and not the largest
    for config in (CleanupConfig.disabled(), CleanupConfig(drop_small=False, drop_flat=False)):
        out, report = cleanup(labels_in, ONE_MM, config)
        assert np.array_equal(out, labels_in) and not report.removed
    for config, reason in ((ONLY_SMALL, "small"), (ONLY_FLAT, "flat"), (ONLY_LARGEST, "not largest")):
        out, report = cleanup(labels_in, ONE_MM, config)
        assert not out[0].any() and report.counts() == {reason: 1}
    out, report = cleanup(labels_in, ONE_MM, CleanupConfig(keep_largest_only=True))
    assert report.removed[0].reasons == ("not largest", "small", "flat")
    assert "removed 1 of 2" in report.summary() and "4 voxels" in str(report)


def test_components_span_labels_and_keep_their_values():
    """Components are those of the complete tumor: a blob made of edema, core and enhancing
    voxels is one component, kept or removed whole, and its values are never changed."""
    labels_in = np.zeros((10, 12, 12), np.uint8)
    labels_in[3:6, 2:4, 2:4] = 1
    labels_in[3:6, 4:6, 2:4] = 3
    labels_in[3:6, 2:6, 4:6] = 4
    labels_in[3:6, 6:8, 2:6] = 2  # 3 slices, 72 voxels in all
    out, report = cleanup(labels_in, ONE_MM, CleanupConfig(min_volume_ml=0.05))
    assert np.array_equal(out, labels_in) and len(report.components) == 1
    out, report = cleanup(labels_in, ONE_MM, CleanupConfig(min_volume_ml=0.1))
    assert not out.any() and report.components[0].voxels == 72


def test_connectivity_26_joins_diagonal_neighbours_6_does_not():
    labels_in = np.zeros((10, 10, 10), np.uint8)
    labels_in[1:5, 1:5, 1:5] = 2
    labels_in[5:9, 5:9, 5:9] = 2  # touches the first cube at one corner only
    _, full = cleanup(labels_in, ONE_MM, CleanupConfig.disabled())
    _, face = cleanup(labels_in, ONE_MM, CleanupConfig(drop_small=False, drop_flat=False, fully_connected=False))
    assert len(full.components) == 1 and len(face.components) == 2


def test_empty_map_and_bad_input():
    out, report = cleanup(np.zeros((4, 5, 6), np.uint8), ONE_MM)
    assert not out.any() and report.components == [] and "no tumor" in report.summary()
    with pytest.raises(ValueError, match="3-D"):
        cleanup(np.zeros((5, 6), np.uint8), ONE_MM)
    with pytest.raises(ValueError, match="spacing"):
        cleanup(np.zeros((4, 5, 6), np.uint8), (1.0, 0.0, 1.0))


def test_input_is_not_modified():
    labels_in = tumor()
    labels_in[0, 0, 0] = 2
    before = labels_in.copy()
    out, _ = cleanup(labels_in, ONE_MM)
    assert np.array_equal(labels_in, before) and out[0, 0, 0] == 0


# --- Real expert labels ---------------------------------------------------------

def test_default_cleanup_keeps_real_tumors(shared_data):
    """On expert labels the defaults remove only specks: at most 40 voxels per case, Dice > 0.9995."""
    for path in truth_files(shared_data):
        truth, geometry, _ = read_truth(path)
        out, report = cleanup(truth, geometry.spacing)
        assert report.voxels_removed <= 40, (path.name, report.summary())
        assert all(c.volume_ml < 0.1 or c.slices <= 2 for c in report.removed)
        assert 2 * np.count_nonzero(out) / (np.count_nonzero(out) + np.count_nonzero(truth)) > 0.9995
        assert np.array_equal(out[out > 0], truth[out > 0])


def test_keep_largest_would_drop_the_second_focus_of_a_multifocal_tumor(shared_data):
    path = shared_data / "brats2021" / "BraTS2021_00009" / "BraTS2021_00009_seg.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    truth, geometry, _ = read_truth(path)
    _, default = cleanup(truth, geometry.spacing)
    assert [c.voxels for c in default.kept] == [14867, 12586]
    _, largest = cleanup(truth, geometry.spacing, ONLY_LARGEST)
    assert largest.voxels_removed == 12586


# --- Properties on random label maps --------------------------------------------

def label_maps(max_side=7):
    shapes = st.tuples(st.integers(1, max_side), st.integers(1, max_side), st.integers(1, max_side))
    # mostly background, so components of every size and thickness occur
    values = st.sampled_from([0, 0, 0, 1, 2, 3, 4])
    return hnp.arrays(np.uint8, shapes, elements=values)


configs = st.builds(CleanupConfig, drop_small=st.booleans(), min_volume_ml=st.sampled_from([0.0, 0.002, 0.01, 0.05]),
                    drop_flat=st.booleans(), flat_max_slices=st.integers(0, 3), keep_largest_only=st.booleans(),
                    max_distance_mm=st.sampled_from([None, 0.0, 1.5, 4.0]),
                    distant_max_share=st.sampled_from([1.0, 0.5, 0.05]), fully_connected=st.booleans())
spacings = st.tuples(*[st.sampled_from([0.5, 1.0, 2.5])] * 3)


@pytest.mark.skipif(ndimage is None, reason="scipy is not installed")
@settings(max_examples=80, deadline=None)
@given(label_maps(), configs, spacings)
def test_cleanup_only_removes_whole_components_by_its_rules(labels_in, config, spacing):
    """Never adds a voxel or changes a kept value; removes exactly the components (found
    independently by scipy.ndimage.label) that the rules name; idempotent."""
    out, report = cleanup(labels_in, spacing, config)
    assert out.dtype == np.uint8 and out.shape == labels_in.shape
    kept = out > 0
    assert not (kept & (labels_in == 0)).any()
    assert np.array_equal(out[kept], labels_in[kept])
    assert report.voxels_removed == np.count_nonzero(labels_in) - np.count_nonzero(out)

    structure = np.ones((3, 3, 3), bool) if config.fully_connected else None
    components, n = ndimage.label(labels_in > 0, structure=structure)
    assert len(report.components) == n
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    largest = int(np.argmax(sizes)) + 1 if n else 0
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for index in range(1, n + 1):
        member = components == index
        z = np.nonzero(member.any(axis=(1, 2)))[0]
        expected_removed = ((config.drop_small and sizes[index - 1] * voxel_ml < config.min_volume_ml)
                            or (config.drop_flat and z.max() - z.min() + 1 <= config.flat_max_slices)
                            or (config.keep_largest_only and sizes[index - 1] < sizes[largest - 1]))
        removed = not kept[member].any()
        assert removed or kept[member].all()  # whole components only
        if (config.keep_largest_only or config.max_distance_mm is not None) and n > 1 and \
                np.count_nonzero(sizes == sizes[index - 1]) > 1:
            continue  # ties in size: which one is "the largest" is the implementation's choice
        if config.max_distance_mm is not None and not expected_removed:
            # distant: farther than the limit from the largest component that the other rules keep
            others_keep = [i for i in np.argsort(-sizes, kind="stable") + 1
                           if not ((config.drop_small and sizes[i - 1] * voxel_ml < config.min_volume_ml)
                                   or (config.drop_flat and np.ptp(np.nonzero((components == i).any(axis=(1, 2)))[0])
                                       + 1 <= config.flat_max_slices)
                                   or (config.keep_largest_only and i != largest))]
            if others_keep and others_keep[0] != index:
                if np.count_nonzero(sizes == sizes[others_keep[0] - 1]) > 1:
                    continue
                gap = ndimage.distance_transform_edt(components != others_keep[0], sampling=spacing[::-1])
                expected_removed = (gap[member].min() > config.max_distance_mm + 1e-3
                                    and sizes[index - 1] < config.distant_max_share * sizes[others_keep[0] - 1])
                if abs(gap[member].min() - config.max_distance_mm) < 1e-3:
                    continue  # on the limit: float rounding decides
        assert removed == expected_removed, (index, sizes[index - 1], z)

    again, second = cleanup(out, spacing, config)
    assert np.array_equal(again, out) and not second.removed


@settings(max_examples=30, deadline=None)
@given(label_maps())
def test_disabled_cleanup_is_the_identity(labels_in):
    out, report = cleanup(labels_in, ONE_MM, CleanupConfig.disabled())
    assert np.array_equal(out, labels_in) and isinstance(report, CleanupReport)


def test_a_models_card_adds_the_rule_its_cross_validation_chose_unless_the_user_compares_components():
    card = {"cleanup": {"rule": "small+flat+within 10 mm of largest or over 1/4 of it", "max_distance_mm": 10.0,
                        "distant_max_share": 0.25, "keep_largest_only": False}}
    rule = CleanupConfig.of_model(card)
    assert (rule.max_distance_mm, rule.distant_max_share, rule.keep_largest_only) == (10.0, 0.25, False)
    mine = CleanupConfig(min_volume_ml=0.5, drop_flat=False)
    assert CleanupConfig.of_model(card, mine) == CleanupConfig(min_volume_ml=0.5, drop_flat=False,
                                                               max_distance_mm=10.0, distant_max_share=0.25)
    for own in (CleanupConfig(max_distance_mm=30.0), CleanupConfig(keep_largest_only=True)):
        assert CleanupConfig.of_model(card, own) == own
    assert CleanupConfig.of_model({}) == CleanupConfig() == CleanupConfig.of_model({"cleanup": {"rule": "none"}})
    # the rule is applied: the far blob of the multifocal case goes, the second focus stays
    labels_in = np.zeros((20, 60, 24), np.uint8)
    labels_in[5:15, 2:12, 2:12] = 2
    labels_in[5:13, 40:50, 2:12] = 2
    labels_in[6:10, 50:54, 14:18] = 4
    out, _ = cleanup(labels_in, ONE_MM, CleanupConfig.of_model(card))
    assert out[5:13, 40:50, 2:12].all() and not out[6:10, 50:54, 14:18].any()


def _faint_rim_case():
    """A tumor (tumor()) whose FLAIR is bright inside (its edema 2.5, its core 4.0), a faint edema shell
    around it (the voxels within 2 mm; FLAIR 1.0 above the brain's 0) and a bright spot (FLAIR 3.0) 4 voxels
    beyond the shell; the brain fills the grid."""
    labels_in = tumor()
    flair = np.zeros(labels_in.shape, np.float32)
    flair[labels_in == 2] = 2.5
    flair[labels_in > 2] = 4.0
    flair[labels_in == 1] = 4.0
    shell = (ndimage.distance_transform_edt(labels_in == 0) <= 2.0) & (labels_in == 0)
    flair[shell] = 1.0
    flair[9, 18, 6] = 3.0  # the tumor ends at row 11, the shell at row 13
    return labels_in, flair, shell, np.ones(labels_in.shape, bool)


def test_edema_growth_takes_the_connected_faint_edema_within_its_reach_and_nothing_else():
    labels_in, flair, shell, brain = _faint_rim_case()
    # the shell's 1.0 lies 40 % of the way from the brain's 0 to the edema's 2.5
    out = grow_edema(labels_in, flair, brain, ONE_MM, share=0.3, within_mm=2.0)
    assert np.array_equal(out[labels_in > 0], labels_in[labels_in > 0])  # the tumor's own labels stay
    assert (out[shell] == 2).all()  # the 2-voxel shell, as edema
    assert out[9, 18, 6] == 0 and np.count_nonzero(out) == np.count_nonzero(labels_in) + shell.sum()
    # too high a share for the shell, too short a reach for its outer layer
    assert np.array_equal(grow_edema(labels_in, flair, brain, ONE_MM, share=0.5, within_mm=2.0), labels_in)
    one = grow_edema(labels_in, flair, brain, ONE_MM, share=0.3, within_mm=1.0)
    assert 0 < np.count_nonzero(one) - np.count_nonzero(labels_in) < shell.sum()
    # the reach is in mm: with 2 mm voxels across (x) one voxel is already 2 mm away
    wide = grow_edema(labels_in, flair, brain, (2.0, 1.0, 1.0), share=0.3, within_mm=1.5)
    assert not wide[8, 6, 12] and wide[8, 12, 6] == 2
    # the threshold starts at the median outside the tumor: in a brain as bright as the shell nothing grows
    brighter = np.maximum(flair, (labels_in == 0).astype(np.float32))
    assert np.array_equal(grow_edema(labels_in, brighter, brain, ONE_MM, 0.3, 2.0), labels_in)
    # outside the brain nothing grows; no tumor, or a tumor no brighter than the brain, no growth
    assert np.array_equal(grow_edema(labels_in, flair, labels_in > 0, ONE_MM, 0.3, 2.0), labels_in)
    empty = np.zeros_like(labels_in)
    assert not grow_edema(empty, flair, brain, ONE_MM, 0.3, 2.0).any()
    dark = np.where(labels_in > 0, 0.0, flair).astype(np.float32)
    assert np.array_equal(grow_edema(labels_in, dark, brain, ONE_MM, 0.0, 2.0), labels_in)


def test_edema_growth_follows_the_cases_own_lesion_contrast():
    """The threshold is a share of the way to the edema found: a site whose lesions are fainter on FLAIR
    (the benchmark's lesion contrast x0.6) grows the same shell, where a fixed height above the brain would
    not; a tumor without edema labels measures its own FLAIR instead."""
    labels_in, flair, shell, brain = _faint_rim_case()
    fainter = flair * 0.6
    assert np.array_equal(grow_edema(labels_in, fainter, brain, ONE_MM, 0.3, 2.0),
                          grow_edema(labels_in, flair, brain, ONE_MM, 0.3, 2.0))
    # no edema label: the whole tumor's median (4.0) sets the level; 1.0 is 25 % of the way there
    cores = np.where(labels_in > 0, 4, 0).astype(np.uint8)
    core_flair = np.where(labels_in > 0, 4.0, flair).astype(np.float32)
    assert (grow_edema(cores, core_flair, brain, ONE_MM, 0.2, 2.0)[shell] == 2).all()
    assert np.array_equal(grow_edema(cores, core_flair, brain, ONE_MM, 0.3, 2.0), cores)


def test_postprocess_grows_only_what_the_component_rules_kept_and_reports_it():
    labels_in, flair, shell, brain = _faint_rim_case()
    speck = labels_in.copy()
    speck[9, 18, 6] = 2  # a one-voxel component on the bright spot: the small rule removes it before growth
    rule = CleanupConfig(edema_flair_share=0.3, edema_growth_mm=2.0)
    out, report = postprocess(speck, ONE_MM, rule, flair, brain)
    assert out[9, 18, 6] == 0 and (out[shell] == 2).all()
    assert report.grown_ml == pytest.approx(shell.sum() / 1000.0) and "edema grown by" in report.summary()
    plain, plain_report = postprocess(speck, ONE_MM, CleanupConfig(), flair, brain)
    assert np.array_equal(plain, cleanup(speck, ONE_MM)[0]) and plain_report.grown_ml == 0.0
    with pytest.raises(ValueError):
        CleanupConfig(edema_flair_share=float("nan"))
    with pytest.raises(ValueError):
        CleanupConfig(edema_flair_share=1.5)
    with pytest.raises(ValueError):
        CleanupConfig(edema_growth_mm=-1.0)


def test_a_models_card_adds_its_edema_growth_unless_the_user_grows_otherwise():
    card = {"cleanup": {"rule": "small+flat+edema grown (FLAIR 40% up to the edema's, 2 mm)",
                        "max_distance_mm": None, "distant_max_share": 1.0, "keep_largest_only": False,
                        "edema_flair_share": 0.4, "edema_growth_mm": 2.0}}
    assert CleanupConfig.of_model(card) == CleanupConfig(edema_flair_share=0.4, edema_growth_mm=2.0)
    # a user's own distance rule keeps the card's growth; a user's own growth keeps theirs
    assert CleanupConfig.of_model(card, CleanupConfig(max_distance_mm=30.0)) == CleanupConfig(
        max_distance_mm=30.0, edema_flair_share=0.4)
    mine = CleanupConfig(edema_flair_share=0.8, edema_growth_mm=1.0)
    assert CleanupConfig.of_model(card, mine) == mine
    grown = CleanupConfig(edema_flair_share=0.4)  # what a card is written with reads back as itself
    assert CleanupConfig.of_model({"cleanup": grown.card_fields()}) == grown
