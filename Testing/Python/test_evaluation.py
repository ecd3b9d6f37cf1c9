"""BraTS metrics: hand-computed cases, the empty-region conventions, agreement with the BraTS
organisers' `brats-evaluation` package (panoptica) and SimpleITK's overlap and Hausdorff
filters on real and random label maps, properties, and `braintumorcnn evaluate`."""
import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.frontends import cli
from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.running.cases import read_case
from BrainTumorCNNLib.scoring import metrics, tables
from BrainTumorCNNLib.scoring.metrics import EMPTY_HD95_MM, evaluate_case, hausdorff95, region_metrics, summarize
from real_truth import read_truth, truth_files

try:  # the HD95 function of panoptica, the engine of the organisers' brats-evaluation package
    from panoptica.metrics.hausdorff_distance import _compute_hausdorff_distance95 as panoptica_hd95
except ImportError:
    panoptica_hd95 = None

ONE_MM = (1.0, 1.0, 1.0)
REGIONS = tuple(labels.REGIONS)


# --- Definitions and conventions --------------------------------------------------

def test_overlap_scores_by_hand():
    truth = np.zeros((2, 5, 10), bool)
    truth[0, :, :4] = True  # 20 voxels
    predicted = np.zeros_like(truth)
    predicted[0, :, 2:6] = True  # 20 voxels, 10 of them true
    scores = region_metrics(predicted, truth, ONE_MM)
    assert scores.dice == pytest.approx(2 * 10 / 40)
    assert scores.sensitivity == pytest.approx(10 / 20)
    assert scores.specificity == pytest.approx((100 - 30) / (100 - 20))
    assert (scores.truth_voxels, scores.predicted_voxels) == (20, 20)


def test_hd95_uses_the_spacing_in_itk_order():
    a = np.zeros((4, 5, 6), bool)
    b = np.zeros_like(a)
    a[0, 0, 0] = True
    b[1, 2, 3] = True  # dz = 1, dy = 2, dx = 3 voxels
    spacing = (0.5, 1.0, 2.0)  # x, y, z
    expected = math.sqrt((3 * 0.5) ** 2 + (2 * 1.0) ** 2 + (1 * 2.0) ** 2)
    assert hausdorff95(a, b, spacing) == pytest.approx(expected)
    # two slabs 3 slices apart along z, 2.5 mm slices: every surface distance is 7.5 mm
    a = np.zeros((12, 6, 6), bool)
    b = np.zeros_like(a)
    a[2:4] = True
    b[5:7] = True
    assert hausdorff95(a, b, (1.0, 1.0, 2.5)) == pytest.approx(7.5)


def test_empty_regions_follow_the_brats_convention():
    empty = np.zeros((5, 6, 7), bool)
    full = empty.copy()
    full[1:3, 2:4, 2:5] = True
    both = region_metrics(empty, empty, ONE_MM)
    assert (both.dice, both.sensitivity, both.specificity, both.hd95) == (1.0, 1.0, 1.0, 0.0)
    missed = region_metrics(empty, full, ONE_MM)  # prediction empty
    assert (missed.dice, missed.sensitivity, missed.specificity, missed.hd95) == (0.0, 0.0, 1.0, EMPTY_HD95_MM)
    invented = region_metrics(full, empty, ONE_MM)  # truth empty
    assert (invented.dice, invented.sensitivity, invented.hd95) == (0.0, 0.0, EMPTY_HD95_MM)
    assert invented.specificity == pytest.approx(1 - 12 / empty.size)
    assert EMPTY_HD95_MM == 373.0


def test_precision_is_the_share_of_the_prediction_that_is_tumor_and_tells_under_from_over_calling():
    truth = np.zeros((4, 10, 10), np.uint8)
    truth[1:3, 2:8, 2:8] = 2  # 72 voxels
    under = np.zeros_like(truth)
    under[1:3, 3:6, 3:6] = 2  # 18 voxels, all inside the truth
    over = truth.copy()
    over[3, :, :] = 2  # the truth plus 100 voxels
    low = evaluate_case(under, truth, ONE_MM, ("complete",))["complete"]
    high = evaluate_case(over, truth, ONE_MM, ("complete",))["complete"]
    assert (low.sensitivity, low.precision) == (pytest.approx(18 / 72), 1.0)
    assert (high.sensitivity, high.precision) == (1.0, pytest.approx(72 / 172))
    empty = np.zeros_like(truth)
    assert evaluate_case(empty, truth, ONE_MM, ("complete",))["complete"].precision == 0.0  # called nothing
    assert evaluate_case(empty, empty, ONE_MM, ("complete",))["complete"].precision == 1.0


def test_regions_of_the_truth_scheme_are_respected():
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[1:3, 2:6, 2:6] = 2
    truth[1:3, 3:5, 3:5] = 3
    scores = evaluate_case(truth, truth, ONE_MM, labels.scheme("brats2012").regions)
    assert set(scores.regions) == {"complete", "core"}
    row = scores.as_row()
    assert list(row) == ["dice_complete", "dice_core", "sensitivity_complete", "sensitivity_core",
                         "precision_complete", "precision_core", "specificity_complete", "specificity_core",
                         "hd95_complete", "hd95_core"]
    assert all(row[f"dice_{r}"] == 1.0 and row[f"hd95_{r}"] == 0.0 for r in ("complete", "core"))
    with pytest.raises(ValueError, match="unknown region"):
        evaluate_case(truth, truth, ONE_MM, ("whole",))


def test_unexpected_label_values_are_rejected_clearly():
    truth = np.zeros((3, 4, 4), np.uint8)
    bad = truth.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"prediction: unexpected label values \[7\]"):
        evaluate_case(bad, truth, ONE_MM)
    with pytest.raises(ValueError, match="whole numbers"):
        evaluate_case(truth + 0.5, truth, ONE_MM)
    with pytest.raises(ValueError, match="same 3-D grid"):
        evaluate_case(truth[:2], truth, ONE_MM)
    with pytest.raises(ValueError, match="spacing"):
        evaluate_case(truth, truth, (1.0, 1.0))
    assert evaluate_case(truth.astype(np.float32), truth.astype(np.int16), ONE_MM)["complete"].dice == 1.0


def test_summary_averages_over_the_cases_that_have_a_score():
    rows = [{"case": "a", "dice_complete": 0.5, "hd95_complete": 2.0, "dice_enhancing": 0.25},
            {"case": "b", "dice_complete": 1.0, "hd95_complete": 4.0},
            {"case": "c", "dice_complete": float("nan")}]
    assert summarize(rows) == {"dice_complete": 0.75, "dice_enhancing": 0.25, "hd95_complete": 3.0}
    assert summarize(rows, "median")["hd95_complete"] == 3.0
    table = tables.format_table(rows[:2])
    assert "mean" in table and "0.750" in table and "HD95 (mm)" in table


# --- Independent implementations --------------------------------------------------

def _panoptica_evaluator():
    pytest.importorskip("brats_evaluation")
    from brats_evaluation import config_path
    from panoptica import Panoptica_Evaluator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Panoptica_Evaluator.load_from_config(str(config_path("gli")))


#: Internal values -> the BraTS 2024 GLI labels the organisers' "gli" config expects
#: (1 NETC, 2 SNFH, 3 ET): its wt = {1,2,3}, tc = {1,3}, et = {3} are our complete, core, enhancing.
TO_GLI = np.array([0, 1, 2, 1, 3], np.uint8)
GLI_GROUPS = {"complete": "wt", "core": "tc", "enhancing": "et"}


@pytest.fixture(scope="module")
def organisers():
    return _panoptica_evaluator()


def _organisers_scores(evaluator, predicted, truth):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluator.evaluate(TO_GLI[predicted], TO_GLI[truth], verbose=False, log_times=False)
    return {region: (float(result[group].global_bin_dsc), float(result[group].global_bin_hd95))
            for region, group in GLI_GROUPS.items()}


def _assert_matches_organisers(scores, theirs):
    """Their global Dice / HD95 (unit spacing) vs ours: equal where both are defined.  Where
    they differ by definition: both masks empty, they give NaN and we 1 / 0; one empty, their
    infinite HD95 is our EMPTY_HD95_MM; both non-empty without overlap, their HD95 is infinite
    and ours the measured distance."""
    compared = 0
    for region, (dice, hd95) in theirs.items():
        ours = scores[region]
        if math.isnan(dice):
            assert ours.truth_voxels == ours.predicted_voxels == 0 and (ours.dice, ours.hd95) == (1.0, 0.0)
            continue
        assert ours.dice == pytest.approx(dice, abs=1e-12), region
        if math.isinf(hd95):
            assert ours.dice == 0.0
            if not (ours.truth_voxels and ours.predicted_voxels):
                assert ours.hd95 == EMPTY_HD95_MM, region
            continue
        assert ours.hd95 == pytest.approx(hd95, abs=1e-9), region
        compared += 1
    return compared


def _sitk_mask(mask, spacing):
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def _assert_matches_simpleitk(predicted, truth, spacing):
    """Dice and sensitivity (1 - false negative error) from LabelOverlapMeasures (specificity = sensitivity of the
    background), the largest surface distance from HausdorffDistance on the surfaces."""
    scores = region_metrics(predicted, truth, spacing)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    if predicted.any() and truth.any():
        overlap.Execute(_sitk_mask(predicted, spacing), _sitk_mask(truth, spacing))  # source, target
        assert scores.dice == pytest.approx(overlap.GetDiceCoefficient(1), abs=1e-12)
        assert scores.sensitivity == pytest.approx(1 - overlap.GetFalseNegativeError(1), abs=1e-12)
        hausdorff = sitk.HausdorffDistanceImageFilter()
        hausdorff.Execute(_sitk_mask(metrics.surface(predicted), spacing),
                          _sitk_mask(metrics.surface(truth), spacing))
        d_pt, d_tp = metrics.surface_distances(predicted, truth, spacing)
        assert max(d_pt.max(), d_tp.max()) == pytest.approx(hausdorff.GetHausdorffDistance(), rel=1e-5)
        assert scores.hd95 <= hausdorff.GetHausdorffDistance() * (1 + 1e-6)
    if (~predicted).any() and (~truth).any():
        overlap.Execute(_sitk_mask(~predicted, spacing), _sitk_mask(~truth, spacing))
        assert scores.specificity == pytest.approx(1 - overlap.GetFalseNegativeError(1), abs=1e-12)
    return scores


def _crop(*maps, margin=3):
    """Crop label maps to the bounding box of their union plus a margin (saves time; the
    scores do not change while nothing touches the crop's border)."""
    union = np.logical_or.reduce([m > 0 for m in maps])
    box = tuple(slice(max(int(i.min()) - margin, 0), int(i.max()) + margin + 1) for i in np.nonzero(union))
    return [m[box] for m in maps]


def _erode(truth):
    tumor = sitk.GetImageFromArray((truth > 0).astype(np.uint8))
    eroded = sitk.GetArrayFromImage(sitk.BinaryErode(tumor, (1, 1, 1), sitk.sitkBall))
    return np.where(eroded > 0, truth, 0).astype(np.uint8)


def test_real_labels_against_the_organisers_package_and_simpleitk(shared_data, organisers):
    """Real truth against itself, shifted by (1, 2, 0) voxels, and eroded by one voxel
    (the organisers' package on the eroded truth of the smallest case only, for time)."""
    checked = 0
    for path in truth_files(shared_data, one_per_release=True):
        truth, geometry, scheme = read_truth(path)
        assert geometry.spacing == pytest.approx(ONE_MM)  # the organisers' global HD95 is in voxels
        identical = evaluate_case(truth, truth, geometry.spacing, scheme.regions)
        assert all(s.dice == 1.0 and s.hd95 == 0.0 and s.sensitivity == 1.0 and s.specificity == 1.0
                   for s in identical.regions.values())
        shifted = np.roll(truth, (1, 2, 0), axis=(0, 1, 2))
        full = evaluate_case(shifted, truth, geometry.spacing, scheme.regions)
        predicted, reference = _crop(shifted, truth)
        scores = {}
        for region in scheme.regions:
            scores[region] = _assert_matches_simpleitk(labels.region_mask(predicted, region),
                                                       labels.region_mask(reference, region), geometry.spacing)
            assert (scores[region].dice, scores[region].hd95) == (full[region].dice, full[region].hd95)
            assert full[region].specificity >= scores[region].specificity  # more true negatives
        if scheme.name == "brats2012":  # BRATS 2012 labels do not map onto the organisers' groups
            continue
        assert _assert_matches_organisers(scores, _organisers_scores(organisers, predicted, reference)) == 3
        checked += 1
        if scheme.name == "brats2023":
            reference = _crop(truth)[0]
            predicted = _erode(reference)
            eroded = evaluate_case(predicted, reference, geometry.spacing)
            assert _assert_matches_organisers(eroded.regions, _organisers_scores(organisers, predicted, reference)) == 3
            checked += 1
    assert checked >= 2


def test_organisers_parser_turns_an_infinite_hd95_into_our_penalty(tmp_path, organisers):
    """`brats-evaluation`'s own result parser replaces the infinite HD95 of a region empty in
    one mask with the same number as EMPTY_HD95_MM."""
    from brats_evaluation import evaluate_single_exam, parse_seg_results

    truth = np.zeros((8, 10, 10), np.uint8)
    truth[2:6, 2:8, 2:8] = 2
    predicted = truth.copy()
    predicted[3:5, 4:6, 4:6] = 4  # enhancing predicted, absent from the truth
    files = {}
    for name, array in (("pred", predicted), ("ref", truth)):
        files[name] = tmp_path / f"{name}_00001.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(TO_GLI[array]), str(files[name]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_single_exam(str(files["pred"]), str(files["ref"]), "00001", organisers)
    (tmp_path / "summary.json").write_text(json.dumps({"metrics": [result], "missings": []}, default=float))
    parse_seg_results(str(tmp_path / "summary.json"), str(tmp_path / "parsed.csv"))
    with open(tmp_path / "parsed.csv") as f:
        parsed = next(csv.DictReader(f))
    ours = evaluate_case(predicted, truth, ONE_MM)
    assert float(parsed["global_hd95_et"]) == ours["enhancing"].hd95 == EMPTY_HD95_MM
    assert float(parsed["global_dsc_et"]) == ours["enhancing"].dice == 0.0
    assert float(parsed["global_dsc_wt"]) == pytest.approx(ours["complete"].dice)


def label_maps(shape):
    return hnp.arrays(np.uint8, shape, elements=st.sampled_from([0, 0, 1, 2, 3, 4]))


shapes = st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 7))
spacings = st.tuples(*[st.sampled_from([0.5, 1.0, 1.5, 3.0])] * 3)


@st.composite
def label_map_pairs(draw):
    shape = draw(shapes)
    return draw(label_maps(shape)), draw(label_maps(shape))


@settings(max_examples=40, deadline=None)
@given(label_map_pairs())
def test_random_label_maps_against_the_organisers_package(organisers, pair):
    predicted, truth = pair
    ours = evaluate_case(predicted, truth, ONE_MM)
    _assert_matches_organisers(ours, _organisers_scores(organisers, predicted, truth))


@settings(max_examples=60, deadline=None)
@given(label_map_pairs(), spacings)
def test_random_label_maps_with_anisotropic_spacing(pair, spacing):
    """HD95 against panoptica's own HD95 function with voxel spacing (the organisers'
    global score ignores spacing), overlap and Hausdorff against SimpleITK."""
    predicted, truth = pair
    scores = evaluate_case(predicted, truth, spacing)
    for region in REGIONS:
        p, t = labels.region_mask(predicted, region), labels.region_mask(truth, region)
        _assert_matches_simpleitk(p, t, spacing)
        if p.any() and t.any() and panoptica_hd95 is not None:
            assert scores[region].hd95 == pytest.approx(panoptica_hd95(t, p, voxelspacing=spacing[::-1]), rel=1e-9)


# --- Properties --------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(label_map_pairs(), spacings)
def test_metric_properties(pair, spacing):
    predicted, truth = pair
    forward = evaluate_case(predicted, truth, spacing)
    backward = evaluate_case(truth, predicted, spacing)
    for region in REGIONS:
        f, b = forward[region], backward[region]
        assert 0.0 <= f.dice <= 1.0 and 0.0 <= f.sensitivity <= 1.0 and 0.0 <= f.specificity <= 1.0
        assert f.dice == pytest.approx(b.dice) and f.hd95 == pytest.approx(b.hd95)  # symmetric
        assert f.hd95 >= 0.0 and (f.hd95 <= EMPTY_HD95_MM or f.truth_voxels and f.predicted_voxels)
        if f.truth_voxels and f.predicted_voxels:
            precision = b.sensitivity
            total = f.sensitivity + precision
            harmonic = 0.0 if total == 0 else 2 * f.sensitivity * precision / total
            assert f.dice == pytest.approx(harmonic)  # Dice = F1 of sensitivity and precision
        p, t = labels.region_mask(predicted, region), labels.region_mask(truth, region)
        assert region_metrics(~p, ~t, spacing).sensitivity == pytest.approx(f.specificity)
    same = evaluate_case(truth, truth, spacing)
    assert all(s.dice == 1.0 and s.hd95 == 0.0 and s.sensitivity == 1.0 and s.specificity == 1.0
               for s in same.regions.values())


@settings(max_examples=40, deadline=None)
@given(label_map_pairs(), st.sampled_from([0.5, 2.0, 3.0]), st.integers(0, 3))
def test_metrics_are_unchanged_by_padding_and_hd95_scales_with_spacing(pair, scale, pad):
    predicted, truth = pair
    base = evaluate_case(predicted, truth, ONE_MM)
    padded = evaluate_case(np.pad(predicted, pad), np.pad(truth, pad), ONE_MM)
    scaled = evaluate_case(predicted, truth, (scale,) * 3)
    for region in REGIONS:
        assert padded[region].dice == base[region].dice and padded[region].sensitivity == base[region].sensitivity
        if base[region].truth_voxels and base[region].predicted_voxels:
            assert padded[region].hd95 == pytest.approx(base[region].hd95)
            assert scaled[region].hd95 == pytest.approx(scale * base[region].hd95)


# --- `braintumorcnn evaluate` -----------------------------------------------------

def _write(array, like: Path, path: Path):
    reference = sitk.ReadImage(str(like))
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def truth_and_predictions(tmp_path):
    from conftest import write_synthetic_case

    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    pred_dir.mkdir()
    cases = [write_synthetic_case(truth_dir, f"Synth_{i:03d}", seed=i) for i in range(3)]
    segs = [next(c.glob("*_seg.nii.gz")) for c in cases]
    truths = [sitk.GetArrayFromImage(sitk.ReadImage(str(s))) for s in segs]
    # case 0 perfect (batch naming); case 1 shifted (plain naming); case 2 without prediction
    _write(truths[0], segs[0], pred_dir / "Synth_000_labels.nii.gz")
    _write(np.roll(truths[1], 2, axis=2), segs[1], pred_dir / "Synth_001.nii.gz")
    return truth_dir, pred_dir, segs, truths


def test_evaluate_command_writes_csv_and_prints_the_table(truth_and_predictions, capsys):
    truth_dir, pred_dir, segs, truths = truth_and_predictions
    assert cli.main(["evaluate", str(pred_dir), str(truth_dir), "--missing", "skip"]) == 1  # one case missing
    out, err = capsys.readouterr()
    assert "Synth_002" in err and "without a prediction" in err
    assert "Dice" in out and "Synth_000" in out and "mean" in out
    with open(pred_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["Synth_000", "Synth_001", "mean"]
    assert float(rows[0]["dice_complete"]) == 1.0 and float(rows[0]["hd95_enhancing"]) == 0.0
    expected = evaluate_case(np.roll(truths[1], 2, axis=2), truths[1], ONE_MM)
    assert float(rows[1]["dice_core"]) == pytest.approx(expected["core"].dice, rel=1e-5)
    assert float(rows[2]["dice_core"]) == pytest.approx((1 + expected["core"].dice) / 2, rel=1e-5)
    assert not list(pred_dir.glob(".*part*"))  # written atomically, no temporary left

    output = pred_dir / "scores" / "all.csv"
    assert cli.main(["evaluate", str(pred_dir), str(truth_dir), "--missing", "penalize", "-o", str(output)]) == 0
    with open(output) as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert float(rows["Synth_002"]["dice_complete"]) == 0.0
    assert float(rows["Synth_002"]["hd95_complete"]) == EMPTY_HD95_MM


def test_evaluate_command_rejects_bad_predictions_clearly(truth_and_predictions, capsys):
    truth_dir, pred_dir, segs, truths = truth_and_predictions
    bad = truths[2].copy()
    bad[0, 0, 0] = 7
    _write(bad, segs[2], pred_dir / "Synth_002_labels.nii.gz")
    moved = sitk.ReadImage(str(pred_dir / "Synth_001.nii.gz"))
    moved.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(moved, str(pred_dir / "Synth_001.nii.gz"))
    assert cli.main(["evaluate", str(pred_dir), str(truth_dir)]) == 1
    out, err = capsys.readouterr()
    assert "Synth_002: FAILED" in err and "unexpected label values [7]" in err and "--prediction-scheme" in err
    assert "Synth_001: FAILED" in err and "not on the grid" in err and "origin" in err
    assert "1 case(s) scored, 2 failed" in out


def test_evaluate_command_converts_other_prediction_schemes(truth_and_predictions, capsys):
    truth_dir, pred_dir, segs, truths = truth_and_predictions
    for i in range(3):  # BraTS 2023 values: enhancing is 3
        _write(labels.scheme("brats2023").from_internal(truths[i]), segs[i], pred_dir / f"Synth_{i:03d}_labels.nii.gz")
    (pred_dir / "Synth_001.nii.gz").unlink()
    assert cli.main(["evaluate", str(pred_dir), str(truth_dir), "--prediction-scheme", "brats2023"]) == 0
    with open(pred_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["dice_enhancing"]) == 1.0 for r in rows)
    # read as internal values, 3 would be non-enhancing tumor: enhancing missed entirely
    assert cli.main(["evaluate", str(pred_dir), str(truth_dir)]) == 0
    with open(pred_dir / "metrics.csv") as f:
        assert float(next(csv.DictReader(f))["dice_enhancing"]) == 0.0


def test_evaluate_command_errors(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "nope"), str(tmp_path)]) == 2
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    assert cli.main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "truth")]) == 2
    assert "no cases found" in capsys.readouterr().err


def test_evaluate_command_notes_predictions_of_unknown_cases(truth_and_predictions, capsys):
    truth_dir, pred_dir, segs, truths = truth_and_predictions
    _write(truths[0], segs[0], pred_dir / "Other_case_labels.nii.gz")
    assert cli.main(["evaluate", str(pred_dir), str(truth_dir), "--missing", "penalize"]) == 0
    err = capsys.readouterr().err
    assert "1 file(s)" in err and "match no case" in err and "Other_case_labels.nii.gz" in err


def test_evaluate_command_on_brats2012_truth_skips_enhancing(shared_data, tmp_path, capsys):
    cases = io.find_cases(shared_data / "brats2012") if (shared_data / "brats2012").is_dir() else []
    if not cases:
        pytest.skip("no BRATS 2012 case")
    case = read_case(cases[0])
    predictions, truth = tmp_path / "predictions", tmp_path / "truth"
    predictions.mkdir(), truth.mkdir()
    (truth / cases[0].name).symlink_to(cases[0].resolve(), target_is_directory=True)  # this case only
    io.write_labels(case.truth, case.geometry, predictions / f"{cases[0].name}_labels.nii.gz")
    assert cli.main(["evaluate", str(predictions), str(truth)]) == 0
    with open(predictions / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert "dice_enhancing" not in row and float(row["dice_core"]) == 1.0 and float(row["hd95_complete"]) == 0.0
