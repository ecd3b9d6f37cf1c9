"""The site-shift benchmark: each shift does what it says to the raw images, and `braintumorcnn
robustness` runs the whole pipeline under them on a slab of a phantom, resumes, and reports."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import maintainer_tool

from BrainTumorCNNLib.frontends import cli, robustness
from BrainTumorCNNLib.learning import crossval
from BrainTumorCNNLib.synthetic import phantom
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig, brain_mask, preprocess
from BrainTumorCNNLib.reading.geometry import Geometry
from BrainTumorCNNLib.scoring import shift_scores, site_shifts, tables

FLAIR, T2 = site_shifts.FLAIR, site_shifts.T2


@pytest.fixture(scope="module")
def small():
    case = phantom.make_phantom(5, "small")
    return case, brain_mask(case.images)


def _apply(name, small, seed=0):
    case, brain = small
    return site_shifts.apply(name, case.images, brain, case.truth, case.geometry, seed=seed)


@pytest.mark.parametrize("name", list(site_shifts.SHIFTS))
def test_every_shift_keeps_the_background_and_the_brain_mask(small, name):
    case, brain = small
    shifted = _apply(name, small)
    assert shifted.shape == case.images.shape and shifted.dtype == np.float32
    assert np.all(shifted[:, ~brain] == 0)
    assert np.array_equal(brain_mask(shifted), brain)
    assert np.isfinite(shifted).all()
    if name != "clean":
        assert not np.allclose(shifted, case.images)


def test_lesion_contrast_moves_the_tumor_towards_healthy_brain_and_nothing_far_from_it(small):
    case, brain = small
    shifted = _apply("lesion contrast x0.6", small)
    from scipy import ndimage
    tumor = case.truth > 0
    deep = ndimage.binary_erosion(tumor, iterations=4)
    far = brain & ~ndimage.binary_dilation(tumor, np.ones((3, 3, 3)), iterations=5)  # the blur's cube
    for c in (FLAIR, T2):
        reference = np.median(case.images[c][brain & ~tumor])
        away = deep & (np.abs(case.images[c] - reference) > 20)
        ratio = (shifted[c][away] - reference) / (case.images[c][away] - reference)
        assert np.median(ratio) == pytest.approx(site_shifts.LESION_CONTRAST, abs=0.02)
        assert np.allclose(shifted[c][far], case.images[c][far])
    assert np.array_equal(shifted[:2], case.images[:2])  # T1 and T1c untouched


def test_gamma_is_monotonic_and_keeps_each_brain_maximum(small):
    case, brain = small
    for value, darker in ((0.7, False), (1.4, True)):
        shifted = _apply(f"gamma {value}", small)
        for c in range(4):
            before, after = case.images[c][brain], shifted[c][brain]
            assert after.max() == pytest.approx(before.max(), rel=1e-4)
            order = np.argsort(before, kind="stable")
            assert np.all(np.diff(after[order]) >= -1e-3)
            assert (np.median(after) < np.median(before)) == darker


def test_bias_field_is_smooth_and_within_its_amplitude(small):
    case, brain = small
    shifted = _apply("bias field", small)
    bright = brain & (case.images.min(axis=0) > 10)
    ratio = shifted[:, bright] / case.images[:, bright]
    bound = np.exp(site_shifts.BIAS_AMPLITUDE)
    assert ratio.min() >= 1 / bound - 1e-4 and ratio.max() <= bound + 1e-4
    assert ratio.max() / ratio.min() > 1.5  # strong
    assert not np.allclose(ratio[0], ratio[3])  # a field of its own per sequence


def test_rician_noise_has_the_clinical_snr_and_a_seed(small):
    case, brain = small
    shifted = _apply("rician noise", small)
    bright = brain & (case.images[FLAIR] > np.percentile(case.images[FLAIR][brain], 50))
    sigma = case.images[FLAIR][brain].mean() / site_shifts.CLINICAL_SNR
    # where the signal is well above the noise, the Rician noise is close to Gaussian of that sigma
    assert np.std(shifted[FLAIR][bright] - case.images[FLAIR][bright]) == pytest.approx(sigma, rel=0.1)
    assert np.array_equal(shifted, _apply("rician noise", small, seed=0))
    assert not np.array_equal(shifted, _apply("rician noise", small, seed=1))


def test_thick_slices_average_along_z_and_leave_a_z_constant_volume_unchanged():
    geometry = Geometry((8, 6, 20), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    constant = np.tile(np.arange(48, dtype=np.float32).reshape(1, 6, 8), (20, 1, 1))
    assert np.allclose(site_shifts.resample_thick(constant, geometry, 5.0), constant, atol=1e-4)
    stripes = np.zeros((20, 6, 8), np.float32)
    stripes[::2] = 100.0  # alternate slices: a 5 mm slice averages them away
    thick = site_shifts.resample_thick(stripes, geometry, 5.0)
    assert thick.std() < 0.2 * stripes.std()
    assert thick.mean() == pytest.approx(stripes.mean(), rel=0.1)
    ramp = np.tile(np.arange(20, dtype=np.float32).reshape(20, 1, 1), (1, 6, 8))
    # a linear ramp survives a box average and linear interpolation inside the stack (no shift of position)
    assert np.allclose(site_shifts.resample_thick(ramp, geometry, 5.0)[2:18], ramp[2:18], atol=1e-3)


def test_thick_slices_touch_only_flair_and_t2(small):
    case, _ = small
    shifted = _apply("thick slices", small)
    assert np.array_equal(shifted[:2], case.images[:2])
    assert not np.allclose(shifted[FLAIR], case.images[FLAIR])


def test_thick_flair_touches_flair_alone_and_keeps_the_background(small):
    case, brain = small
    shifted = _apply("thick FLAIR", small)
    assert np.array_equal(shifted[:FLAIR], case.images[:FLAIR].astype(np.float32))
    assert not np.allclose(shifted[FLAIR], case.images[FLAIR])
    assert np.all(shifted[:, ~brain] == 0)


def test_inplane_resampling_blurs_every_sequence_in_plane_only():
    geometry = Geometry((40, 40, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    rng = np.random.default_rng(3)
    images = np.full((4, 6, 40, 40), 100.0, np.float32) + rng.normal(0, 10, (4, 6, 40, 40)).astype(np.float32)
    brain = np.ones((6, 40, 40), bool)
    shifted = site_shifts.apply("in-plane resampling", images, brain, None, geometry)
    centre = (slice(None), slice(None), slice(12, 28), slice(12, 28))  # away from the rotation's corners
    # linear interpolation averages neighbours: the noise shrinks, the mean and each slice's level stay
    assert np.all(shifted[centre].std(axis=(2, 3)) < 0.85 * images[centre].std(axis=(2, 3)))
    assert np.allclose(shifted[centre].mean(axis=(2, 3)), images[centre].mean(axis=(2, 3)), atol=1.0)
    flat = np.tile(np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1) * 50 + 10, (4, 1, 40, 40))
    # nothing moves along the slice axis
    assert np.allclose(site_shifts.apply("in-plane resampling", flat, brain, None, geometry)[centre], flat[centre])


def test_scale_and_offset_change_nothing_in_clipping_and_z_scores(small):
    case, brain = small
    config = PreprocessingConfig(n4=False)
    clean = preprocess(case.images, config, spacing=case.geometry.spacing).images
    shifted = preprocess(_apply("scale+offset", small), config, spacing=case.geometry.spacing).images
    assert np.allclose(clean, shifted, atol=1e-4)


def test_slab_keeps_the_tumor_and_the_physical_positions(small):
    case, _ = small
    images, truth, geometry = site_shifts.slab(case.images, case.truth, case.geometry, 10)
    assert images.shape == (4, 10) + case.images.shape[2:] and truth.shape[0] == 10 == geometry.shape[0]
    largest = int(np.argmax(np.count_nonzero(case.truth, axis=(1, 2))))
    start = largest - 5
    assert np.array_equal(truth, case.truth[start:start + 10])
    direction = np.array(case.geometry.direction).reshape(3, 3)
    expected = np.array(case.geometry.origin) + direction[:, 2] * case.geometry.spacing[2] * start
    assert np.allclose(geometry.origin, expected)


def test_unknown_shift_and_missing_truth_are_refused(small):
    case, brain = small
    with pytest.raises(ValueError, match="unknown site shift"):
        site_shifts.apply("fog", case.images, brain, case.truth, case.geometry)
    with pytest.raises(ValueError, match="ground truth"):
        site_shifts.apply("lesion contrast x0.6", case.images, brain, None, case.geometry)


def test_benchmark_runs_the_pipeline_on_a_slab_resumes_and_reports(tmp_path, capsys):
    folder = phantom.write_phantom(phantom.make_phantom(5, "small"), tmp_path / "cases")["truth"].parent
    out = tmp_path / "bench"
    argv = ["robustness", str(folder), "--output", str(out), "--slab", "8", "--models", "LocalPathCNN",
            "--shifts", "clean", "thick slices", "scale+offset"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    with open(out / robustness.CSV_NAME, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["shift"] for r in rows] == ["clean", "thick slices", "scale+offset"]
    assert all(r["model"] == "LocalPathCNN" and r["slices"] == "8" for r in rows)
    dice = {r["shift"]: float(r["dice_complete"]) for r in rows}
    assert dice["clean"] > 0.3  # a real model on a real pipeline, not an empty prediction
    assert abs(dice["scale+offset"] - dice["clean"]) < 0.05
    assert 0 < float(rows[0]["tumor_share"]) < 0.5
    assert "| thick slices | 1 |" in printed and "Worst realistic shift: complete: thick slices" in printed
    # a rerun segments nothing again and prints the same tables
    assert cli.main(argv) == 0
    again = capsys.readouterr().out
    assert "Dice " not in again.split("## LocalPathCNN")[0]
    assert again.split("## LocalPathCNN")[1] == printed.split("## LocalPathCNN")[1]


def test_another_n4_shrink_reaches_preprocessing_and_labels_the_rows_apart(tmp_path, capsys, monkeypatch):
    folder = phantom.write_phantom(phantom.make_phantom(5, "small"), tmp_path / "cases")["truth"].parent
    seen = []

    def recording(images, config, **kwargs):  # the real preprocessing, its config noted
        seen.append(config)
        return preprocess(images, config, **kwargs)
    monkeypatch.setattr(robustness, "preprocess", recording)
    out = tmp_path / "bench"
    argv = ["robustness", str(folder), "--output", str(out), "--slab", "8", "--models", "LocalPathCNN",
            "--shifts", "clean"]
    assert cli.main(argv + ["--n4-shrink", "2"]) == 0
    assert [c.n4_shrink for c in seen] == [2] and seen[0] == PreprocessingConfig(n4_shrink=2)
    # the default's rows go beside them in the same table, neither resuming from the other
    assert cli.main(argv) == 0 and cli.main(argv + ["--n4-shrink", str(PreprocessingConfig().n4_shrink)]) == 0
    assert [c.n4_shrink for c in seen] == [2, PreprocessingConfig().n4_shrink]
    with open(out / robustness.CSV_NAME, newline="") as f:
        assert [r["model"] for r in csv.DictReader(f)] == ["LocalPathCNN, N4 shrink 2", "LocalPathCNN"]
    capsys.readouterr()
    assert cli.main(argv + ["--n4-shrink", "0"]) != 0
    assert "--n4-shrink 0" in capsys.readouterr().err


def test_benchmark_refuses_a_case_without_truth_and_goes_on(tmp_path, capsys):
    cases = tmp_path / "cases"
    folder = phantom.write_phantom(phantom.make_phantom(5, "small"), cases)["truth"].parent
    other = phantom.write_phantom(phantom.make_phantom(5, "small", name="NoTruth_001"), cases)["truth"]
    other.unlink()
    code = cli.main(["robustness", str(cases), "--output", str(tmp_path / "b"), "--slab", "4",
                     "--models", "LocalPathCNN", "--shifts", "clean"])
    captured = capsys.readouterr()
    assert code == 1 and "NoTruth_001: FAILED" in captured.err and "no ground truth" in captured.err
    assert folder.name in captured.out


def test_drops_and_worst_shift_from_rows():
    rows = [{"case": c, "model": "m", "shift": s, "dice_complete": d, "dice_core": d, "dice_enhancing": None}
            for c, values in (("a", (0.8, 0.7, 0.75)), ("b", (0.6, 0.58, 0.4)))
            for s, d in zip(("clean", "gamma 0.7", "thick slices"), values)]
    change = shift_scores.drops(rows)
    assert change["gamma 0.7"]["complete"] == pytest.approx([-0.1, -0.02])
    assert "enhancing" not in change["clean"]
    assert shift_scores.worst_shift(change, "complete") == "thick slices"


def test_a_cross_validation_run_scores_each_case_with_the_fold_model_that_held_it_out(tmp_path, capsys):
    from conftest import write_synthetic_case
    from BrainTumorCNNLib.learning import crossval, training
    from BrainTumorCNNLib.running.pipeline import SegmentationOptions
    cases = [write_synthetic_case(tmp_path / "cases", f"Synth_{i:03d}", seed=i) for i in range(4)]
    config = training.TrainingConfig(num_classes=4, phase1_epochs=1, phase2_epochs=0, batches_per_epoch=2,
                                     batch_size=4, output_size=4, preprocessing=PreprocessingConfig(n4=False),
                                     threads=1, device="cpu", patience=0, keep="last")
    run = tmp_path / "cv-tiny"
    crossval.run(cases, 2, run, config, SegmentationOptions(model="TwoPathCNN", device="cpu"), progress=False)
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text())
    default, distant = "small+flat (default)", "small+flat+within 10 mm of largest or over 1/4 of it"
    rules = summary["cleanup_rules"]
    rules[default] = {k: {**v, "mean": 1.0} for k, v in rules[default].items()}  # the default rule wins here
    summary_path.write_text(json.dumps(summary))
    argv = ["robustness", str(tmp_path / "cases"), "--output", str(tmp_path / "by-run"), "--run", str(run),
            "--shifts", "clean"]
    assert cli.main(argv) == 0
    with open(tmp_path / "by-run" / robustness.CSV_NAME, newline="") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert set(rows) == {c.name for c in cases} and {r["model"] for r in rows.values()} == {"cv-tiny"}
    # each row is the one its fold's kept weights give, and the other fold's would differ
    fold_of, differ = crossval.held_out_folds(run), 0
    for case in cases[:2]:
        scores = {}
        for fold in (0, 1):
            out = tmp_path / f"{case.name}-fold-{fold}"
            assert cli.main(["robustness", str(case), "--output", str(out), "--models", "TwoPathCNN",
                             "--weights", str(run / f"fold-{fold}" / "last.safetensors"), "--shifts", "clean"]) == 0
            with open(out / robustness.CSV_NAME, newline="") as f:
                scores[fold] = next(csv.DictReader(f))["sensitivity_complete"]
        assert rows[case.name]["sensitivity_complete"] == scores[fold_of[case.name]]
        differ += scores[0] != scores[1]
    assert differ  # the fold matters, so the check above can fail
    capsys.readouterr()
    assert cli.main(["robustness", str(write_synthetic_case(tmp_path / "other", "Other_001")), "--output",
                     str(tmp_path / "x"), "--run", str(run)]) != 0
    assert "Other_001: not a case of" in capsys.readouterr().err
    assert cli.main(argv + ["--models", "TwoPathCNN"]) != 0
    assert "leave out --models" in capsys.readouterr().err
    # a run that chose another cleanup rule is scored with it, under a label naming it
    rules[distant] = {k: {**v, "mean": 2.0} for k, v in rules[default].items()}
    summary_path.write_text(json.dumps(summary))
    assert cli.main(argv) == 0
    with open(tmp_path / "by-run" / robustness.CSV_NAME, newline="") as f:
        labels = {r["model"] for r in csv.DictReader(f)}
    assert labels == {"cv-tiny", f"cv-tiny, cleanup {distant}"}


def test_a_test_time_option_is_scored_on_each_fold_as_the_other_folds_chose_it(tmp_path):
    """Fold 0's cases gain from the option, fold 1's lose: each fold is scored with the choice of the
    other, so the honest figure is worse than both tables (the figure that picking per table hides)."""
    tool = maintainer_tool("measure_nested_option")
    run = tmp_path / "run"
    run.mkdir()
    (run / "folds.json").write_text(json.dumps({"folds": 2, "seed": 0, "cases": {"a": 0, "b": 0, "c": 1, "d": 1}}))
    dice = {"off": {"a": 0.6, "b": 0.6, "c": 0.9, "d": 0.9}, "on": {"a": 0.9, "b": 0.9, "c": 0.5, "d": 0.5}}
    for name, of_case in dice.items():
        rows = [{"case": case, "dice_complete": value, "dice_core": value, "dice_enhancing": None, "model": name,
                 "shift": shift, "slices": 32} for case, value in of_case.items() for shift in ("clean", "gamma 0.7")]
        tables.write_csv(tmp_path / f"{name}.csv", rows, mean=False)
    off, on = (tool.read_rows(tmp_path / f"{n}.csv", "clean") for n in ("off", "on"))
    assert off["a"] == {"dice_complete": 0.6, "dice_core": 0.6, "dice_enhancing": None}
    result = tool.nested_option(crossval.held_out_folds(run), off, on)
    assert result["choice"] == {0: "off", 1: "on"}
    chosen = result["dice"]["chosen on the other folds"]["dice_complete"]
    assert chosen["mean"] == pytest.approx(0.55) and chosen["n"] == 4
    assert result["dice"]["on"]["dice_complete"]["mean"] == pytest.approx(0.7)
    with pytest.raises(SystemExit, match="different cases"):
        tool.nested_option({"a": 0, "b": 0, "c": 1, "d": 1}, off, {k: on[k] for k in "abc"})
    with pytest.raises(SystemExit, match="no rows of the shift"):
        tool.read_rows(tmp_path / "off.csv", "bias field")


def test_lesion_contrast_is_measured_in_healthy_brain_sd_and_falls_with_the_shift(small):
    measure_lesion_contrast = maintainer_tool("measure_lesion_contrast")
    case, brain = small
    clean = preprocess(case.images, PreprocessingConfig(), spacing=case.geometry.spacing)
    shifted = preprocess(_apply("lesion contrast x0.6", small), PreprocessingConfig(), spacing=case.geometry.spacing)
    before = measure_lesion_contrast.contrast(clean.images, clean.brain_mask, case.truth)
    after = measure_lesion_contrast.contrast(shifted.images, shifted.brain_mask, case.truth)
    assert before["FLAIR"] > 1.0, "the phantom's tumor is bright on FLAIR"
    for name in measure_lesion_contrast.SEQUENCES:
        assert after[name] < before[name]
    with pytest.raises(ValueError, match="no labelled tumor"):
        measure_lesion_contrast.contrast(clean.images, clean.brain_mask, np.zeros_like(case.truth))
