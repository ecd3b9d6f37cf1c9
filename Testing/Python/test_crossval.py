"""Cross-validation by case, the preprocessed-case cache, augmentation, sampling shares, test-time flips."""
import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.learning import augmentation, crossval, sampling, training
from BrainTumorCNNLib.network import weights
from BrainTumorCNNLib.preparing.preprocessing import BACKGROUND_VALUE, PreprocessingConfig
from BrainTumorCNNLib.running import inference, pipeline

NO_N4 = PreprocessingConfig(n4=False)

NAMES = ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00003", "BraTS2021_00005", "BraTS2021_00006",
         "BraTS20_Training_001", "Brats18_TCIA01_231_1", "Brats18_TCIA02_151_1", "BraTS-GLI-00000-000",
         "BRATS_HG0015"]


def test_folds_are_fixed_by_the_seed_balanced_and_mix_releases():
    folds = crossval.assign_folds(NAMES, 3, seed=0)
    assert set(folds) == set(NAMES) and set(folds.values()) == {0, 1, 2}
    sizes = np.bincount(list(folds.values()))
    assert sizes.max() - sizes.min() <= 1
    assert crossval.assign_folds(list(reversed(NAMES)), 3, seed=0) == folds  # order of the arguments is irrelevant
    assert any(crossval.assign_folds(NAMES, 3, seed=s) != folds for s in range(1, 5))
    # the two BraTS 2018 cases (one site pool) never share a fold with 3 folds and 10 cases dealt in turn
    assert folds["Brats18_TCIA01_231_1"] != folds["Brats18_TCIA02_151_1"]
    for fold in range(3):
        releases = {crossval.release(n) for n, f in folds.items() if f == fold}
        assert len(releases) >= 2, (fold, releases)


def test_release_names_every_layout():
    assert [crossval.release(n) for n in ("BraTS2021_00000", "BraTS20_Training_001", "Brats18_TCIA01_231_1",
                                          "BraTS-GLI-00000-000", "BRATS_HG0015", "my_case")] == [
        "BraTS 2021", "BraTS 2020", "BraTS 2018", "BraTS 2023", "BRATS 2012/2013", "other"]


def test_bad_number_of_folds_is_refused():
    with pytest.raises(ValueError, match="--folds"):
        crossval.assign_folds(NAMES[:3], 4, seed=0)


def tiny(cases, **overrides):
    base = dict(model="TwoPathCNN", num_classes=4, phase1_epochs=1, phase2_epochs=1, batches_per_epoch=2,
                batch_size=4, output_size=4, preprocessing=NO_N4, threads=1, device="cpu", patience=0)
    base.update(overrides)
    return training.TrainingConfig(**base)


def test_crossval_scores_every_case_once_resumes_and_keeps_its_split(tmp_path):
    from conftest import write_synthetic_case
    cases = [write_synthetic_case(tmp_path / "cases", f"Synth_{i:03d}", seed=i) for i in range(4)]
    run = tmp_path / "cv"
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu")
    result = crossval.run(cases, 2, run, tiny(cases), options, seed=0, progress=False)
    rows = list(csv.DictReader((run / "per_case.csv").open()))
    folds = json.loads((run / "folds.json").read_text())["cases"]
    assert sorted(r["case"] for r in rows) == sorted(folds) == [f"Synth_{i:03d}" for i in range(4)]
    for row in rows:  # each case scored by the model of the fold that held it out, and trained on by the other
        assert int(row["fold"]) == folds[row["case"]]
        config = json.loads((run / f"fold-{row['fold']}" / "config.json").read_text())
        assert all(not c.endswith(row["case"]) for c in config["train_cases"])
        other = json.loads((run / f"fold-{1 - int(row['fold'])}" / "config.json").read_text())
        assert any(c.endswith(row["case"]) for c in other["train_cases"])
        assert 0 <= float(row["dice_complete"]) <= 1
    dice = [float(r["dice_complete"]) for r in rows]
    assert result["scores"]["dice_complete"]["mean"] == pytest.approx(np.mean(dice))
    assert result["scores"]["dice_complete"]["sd"] == pytest.approx(np.std(dice, ddof=1))
    assert set(result["cleanup_rules"]) == set(crossval.CLEANUP_RULES)
    # the default rule's figures are those of the per-case table
    assert result["cleanup_rules"]["small+flat (default)"]["dice_complete"]["mean"] == pytest.approx(np.mean(dice))
    chosen = result["cleanup_rule_chosen_by_other_folds"]
    assert set(chosen["rule_of_fold"]) == {"0", "1"} and set(chosen["rule_of_fold"].values()) <= set(crossval.CLEANUP_RULES)
    nested = list(csv.DictReader((run / crossval.NESTED_CSV).open()))  # per case, the rule its fold chose
    assert sorted(r["case"] for r in nested) == sorted(folds)
    assert all(r["cleanup"] == chosen["rule_of_fold"][r["fold"]] for r in nested)
    for row in nested:  # the stored prediction cleaned with that rule
        case = sampling.load_case(cases[int(row["case"][-3:])], tiny(cases).preprocessing)
        labels = np.load(run / f"fold-{row['fold']}" / "predictions" / f"{row['case']}.npz")["labels"]
        rescored = crossval.score(case, labels, crossval.CLEANUP_RULES[row["cleanup"]])
        assert float(row["sensitivity_core"]) == pytest.approx(rescored["sensitivity_core"], abs=1e-5)
    assert chosen["scores"]["dice_complete"]["mean"] == pytest.approx(np.mean([float(r["dice_complete"])
                                                                              for r in nested]))

    weights_before = {p: p.stat().st_mtime_ns for p in run.glob("fold-*/best.safetensors")}
    again = crossval.run(cases, 2, run, tiny(cases), options, seed=0, progress=False)
    assert {p: p.stat().st_mtime_ns for p in run.glob("fold-*/best.safetensors")} == weights_before  # not retrained
    for key, value in result["scores"].items():  # the rerun reads the rows back (CSV, 6 digits)
        assert again["scores"][key]["mean"] == pytest.approx(value["mean"], rel=1e-5), key
    with pytest.raises(ValueError, match="new --run-dir"):
        crossval.run(cases, 2, run, tiny(cases), options, seed=1, progress=False)


def test_a_fold_finished_by_another_process_meanwhile_enters_the_summary(tmp_path, monkeypatch):
    """Folds run at once by separate processes (`--only-folds K`): the last to finish summarises every fold,
    as the other folds' scores are read after its own training, not before."""
    from conftest import write_synthetic_case
    cases = [write_synthetic_case(tmp_path / "cases", f"Synth_{i:03d}", seed=i) for i in range(4)]
    run = tmp_path / "cv"
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu", precision="float32")
    real = crossval._train

    def fold_0_finishes_meanwhile(config, fold_dir, *args):
        if fold_dir.name == "fold-1":  # the other process trains and scores fold 0 while this one trains fold 1
            crossval.run(cases, 2, run, tiny(cases), options, seed=0, only_folds=[0], progress=False)
        return real(config, fold_dir, *args)

    monkeypatch.setattr(crossval, "_train", fold_0_finishes_meanwhile)
    result = crossval.run(cases, 2, run, tiny(cases), options, seed=0, only_folds=[1], progress=False)
    assert sorted(r["case"] for r in csv.DictReader((run / "per_case.csv").open())) == [
        f"Synth_{i:03d}" for i in range(4)]
    assert result["scores"]["dice_complete"]["n"] == 4


def test_each_folds_cleanup_rule_is_chosen_on_the_other_folds_cases():
    """A rule that wins on a fold's own cases but loses on the others' is not that fold's choice."""
    def rows(*dice):
        return [{"dice_complete": d, "dice_core": d, "dice_enhancing": d} for d in dice]
    folds = [0, 0, 1, 1, 2, 2]
    scored = {"a": rows(0.9, 0.9, 0.5, 0.5, 0.5, 0.5), "b": rows(0.6, 0.6, 0.6, 0.6, 0.6, 0.6),
              "c": rows(0.1, 0.1, 0.7, 0.7, 0.1, 0.1)}
    # fold 0: a 0.5, b 0.6, c 0.4 on folds 1-2; fold 1: a 0.7, b 0.6; fold 2: a 0.7, b 0.6, c 0.4
    assert crossval.nested_rule_choice(folds, scored) == {0: "b", 1: "a", 2: "a"}


def test_the_same_scan_under_two_names_is_one_patient_dealt_into_one_fold(tmp_path):
    from conftest import renamed_copy, write_synthetic_case
    cases = [write_synthetic_case(tmp_path, f"Synth_{i:03d}", seed=i) for i in range(5)]
    cases.append(renamed_copy(cases[1], "Synth_101"))
    loaded = [sampling.load_case(c, NO_N4) for c in cases]
    groups = sampling.same_patient_groups(loaded)
    assert groups == [["Synth_001", "Synth_101"]]
    names = [c.name for c in loaded]
    for seed in range(10):
        folds = crossval.assign_folds(names, 3, seed, groups)
        assert folds["Synth_001"] == folds["Synth_101"], seed
        assert set(folds.values()) == {0, 1, 2}
    # without the grouping some seed deals the twins apart: the check above can fail
    assert any(crossval.assign_folds(names, 3, s)["Synth_001"] != crossval.assign_folds(names, 3, s)["Synth_101"]
               for s in range(10))
    # grouping leaves the deal of other cases' names as it was
    assert crossval.assign_folds(NAMES, 3, 0, []) == crossval.assign_folds(NAMES, 3, 0)
    with pytest.raises(ValueError, match="different patients"):
        crossval.assign_folds(["a", "b"], 2, 0, [["a", "b"]])


def test_inner_validation_draws_a_patient_with_all_its_scans():
    trainable = ["a", "b", "c", "d", "twin1", "twin2"]
    groups = [["twin1", "twin2"]]
    seen = set()
    for seed in range(20):
        drawn = crossval._inner_validation(trainable, 2, groups, np.random.default_rng(seed))
        assert ("twin1" in drawn) == ("twin2" in drawn), drawn
        seen.add(tuple(drawn))
    assert any("twin1" in d for d in seen) and len(seen) > 3
    # without the group the twins are drawn apart for some seed: the check above can fail
    assert any(("twin1" in d) != ("twin2" in d) for d in
               (crossval._inner_validation(trainable, 2, [], np.random.default_rng(s)) for s in range(20)))


def test_a_split_that_trained_on_a_held_out_cases_twin_leaves_it_out_of_the_means(tmp_path):
    from conftest import renamed_copy, write_synthetic_case
    cases = [write_synthetic_case(tmp_path / "cases", f"Synth_{i:03d}", seed=i) for i in range(4)]
    cases.append(renamed_copy(cases[0], "Synth_100"))
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu")
    fresh = crossval.run(cases, 2, tmp_path / "fresh", tiny(cases), options, seed=0, progress=False)
    folds = json.loads((tmp_path / "fresh" / "folds.json").read_text())["cases"]
    assert folds["Synth_000"] == folds["Synth_100"]
    # held out together, the patient counts once in the means
    assert fresh["cases"] == 4 and fresh["left_out_same_patient_trained"] == {}
    assert fresh["left_out_same_patient_repeated"] == {"Synth_100": "Synth_000"}
    rows = list(csv.DictReader((tmp_path / "fresh" / "per_case.csv").open()))
    assert len(rows) == 5 and {r["case"]: r["same_patient_scored"] for r in rows}["Synth_100"] == "Synth_000"
    kept = [float(r["dice_complete"]) for r in rows if r["case"] != "Synth_100"]
    assert fresh["scores"]["dice_complete"]["mean"] == pytest.approx(np.mean(kept))

    # a run dealt before the grouping (twins apart) keeps its split when resumed, but the twins' scores saw
    # the answer: listed in per_case.csv, left out of the means
    old = tmp_path / "old"
    old.mkdir()
    split = {"Synth_000": 0, "Synth_001": 0, "Synth_002": 1, "Synth_003": 1, "Synth_100": 1}
    (old / "folds.json").write_text(json.dumps({"folds": 2, "seed": 0, "cases": split}))
    result = crossval.run(cases, 2, old, tiny(cases), options, seed=0, progress=False)
    assert json.loads((old / "folds.json").read_text())["cases"] == split
    assert result["left_out_same_patient_trained"] == {"Synth_000": "Synth_100", "Synth_100": "Synth_000"}
    rows = list(csv.DictReader((old / "per_case.csv").open()))
    assert {r["case"]: r["twin_trained"] for r in rows} == {
        "Synth_000": "Synth_100", "Synth_001": "", "Synth_002": "", "Synth_003": "", "Synth_100": "Synth_000"}
    kept = [float(r["dice_complete"]) for r in rows if not r["twin_trained"]]
    assert result["cases"] == 3
    assert result["scores"]["dice_complete"]["mean"] == pytest.approx(np.mean(kept))
    assert result["scores"]["dice_complete"]["n"] == 3


def test_cascade_folds_build_on_the_first_network_of_the_same_fold(tmp_path):
    from conftest import write_synthetic_case
    cases = [write_synthetic_case(tmp_path / "cases", f"Synth_{i:03d}", seed=i) for i in range(4)]
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu")
    crossval.run(cases, 2, tmp_path / "first", tiny(cases), options, seed=0, progress=False)
    config = tiny(cases, model="MFCascadeCNN", phase2_epochs=0)
    result = crossval.run(cases, 2, tmp_path / "cascade", config, replace(options, model="MFCascadeCNN"), seed=0,
                          base_runs={"first_weights": tmp_path / "first"}, progress=False)
    assert result["cases"] == 4
    for fold in range(2):
        used = json.loads((tmp_path / "cascade" / f"fold-{fold}" / "config.json").read_text())["first_weights"]
        assert Path(used) == tmp_path / "first" / f"fold-{fold}" / "best.safetensors"
        first = load_file(used)
        second = load_file(str(tmp_path / "cascade" / f"fold-{fold}" / "best.safetensors"))
        assert all(torch.equal(second[f"first.{k}"], v) for k, v in first.items())
    with pytest.raises(ValueError, match="same folds"):  # a first network trained on another split would leak
        crossval.run(cases, 2, tmp_path / "other", config, options, seed=1,
                     base_runs={"first_weights": tmp_path / "first"}, progress=False)


def test_a_further_stage_starts_from_the_weights_each_fold_kept(tmp_path):
    from conftest import write_synthetic_case
    cases = [write_synthetic_case(tmp_path / "cases", f"Synth_{i:03d}", seed=i) for i in range(4)]
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu")
    crossval.run(cases, 2, tmp_path / "base", tiny(cases, keep="last"), options, seed=0, progress=False)
    # a stage that barely moves the weights: they must come out as they went in (no fresh output biases)
    still = tiny(cases, phase2_epochs=0, learning_rate=1e-12, l1=0.0, l2=0.0, keep="last")
    crossval.run(cases, 2, tmp_path / "stage", still, options, seed=0,
                 base_runs={"start_weights": tmp_path / "base"}, progress=False)
    for fold in range(2):
        used = json.loads((tmp_path / "stage" / f"fold-{fold}" / "config.json").read_text())["start_weights"]
        assert Path(used) == tmp_path / "base" / f"fold-{fold}" / "last.safetensors"  # the kept ones, not best
        start, end = load_file(used), load_file(str(tmp_path / "stage" / f"fold-{fold}" / "last.safetensors"))
        assert start.keys() == end.keys()
        for key, value in start.items():
            torch.testing.assert_close(end[key], value, atol=1e-6, rtol=0, msg=key)
    kept = str(tmp_path / "base" / "fold-0" / "last.safetensors")
    with pytest.raises(ValueError, match="preprocessing"):
        training.build_model(tiny(cases, start_weights=kept, preprocessing=PreprocessingConfig()))
    with pytest.raises(ValueError, match="classes"):
        training.build_model(tiny(cases, start_weights=kept, num_classes=5))


def test_cache_is_compact_exact_and_trains_with_torch_and_numpy_only(tmp_path, synthetic_cases):
    case = sampling.load_case(synthetic_cases[0], NO_N4, tmp_path / "cache")
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1 and case.images.dtype == np.float16
    from BrainTumorCNNLib.preparing.preprocessing import preprocess
    from BrainTumorCNNLib.running.cases import read_case
    raw = read_case(synthetic_cases[0])
    pre = preprocess(raw.images, NO_N4)
    np.testing.assert_array_equal(case.uncrop(case.truth), raw.truth)
    z0, z1, y0, y1, x0, x1 = case.box
    np.testing.assert_allclose(case.images.astype(np.float32), pre.images[:, z0:z1, y0:y1, x0:x1], atol=4e-3)
    assert pre.brain_mask.sum() == case.brain.sum()  # the crop holds the whole brain

    script = f"""
import sys
sys.modules["SimpleITK"] = None  # any import of SimpleITK (or matplotlib) now fails
sys.modules["matplotlib"] = None
from pathlib import Path
from BrainTumorCNNLib.learning import training
config = training.TrainingConfig(train_cases={[str(f) for f in files]!r}, phase1_epochs=1, phase2_epochs=0,
                                 batches_per_epoch=1, batch_size=2, output_size=2, threads=1, device="cpu")
training.train(config, Path({str(tmp_path / 'run')!r}), progress=False)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_cache_of_older_preprocessing_is_refused(tmp_path, synthetic_cases, monkeypatch):
    case = sampling.load_case(synthetic_cases[0], NO_N4)
    path = sampling.write_cache(case, tmp_path / "old.npz")
    monkeypatch.setattr(sampling, "PREPROCESSING_VERSION", sampling.PREPROCESSING_VERSION + 1)
    with pytest.raises(ValueError, match="rebuild the cache"):
        sampling.load_case(path, NO_N4)


def _sampler(cases, **config):
    loaded = sampling.load_cases(cases, NO_N4)
    return sampling.PatchSampler(loaded, 33, 1, 4, np.random.default_rng(0), sampling.SamplingConfig(**config))


def test_border_share_draws_centres_next_to_a_change_of_class(synthetic_cases):
    sampler = _sampler(synthetic_cases, border_fraction=1.0, border_width=2)
    cases, flats = sampler.centres(400, balanced=True)
    for i, flat in zip(cases, flats):
        z, r, c = np.unravel_index(flat, sampler.shapes[i])
        around = sampler.classes[i][z, r - 2:r + 3, c - 2:c + 3]
        assert len(np.unique(around)) > 1


def test_hard_negative_share_draws_bright_healthy_tissue(synthetic_cases):
    probe = _sampler(synthetic_cases[:1])
    healthy = (probe.classes[0] == 0) & (probe.images[0][0] != BACKGROUND_VALUE)
    brightest = np.maximum(probe.images[0][2], probe.images[0][3])[healthy].astype(np.float32)
    threshold = float(np.percentile(brightest, 95))  # the brightest 5 % of healthy tissue
    sampler = _sampler(synthetic_cases, hard_negative_fraction=1.0, hard_negative_z=threshold)
    cases, flats = sampler.centres(300, balanced=True)
    for i, flat in zip(cases, flats):
        z, r, c = np.unravel_index(flat, sampler.shapes[i])
        assert sampler.classes[i][z, r, c] == 0
        assert max(sampler.images[i][2, z, r, c], sampler.images[i][3, z, r, c]) > threshold


def _labelled_patches(n=8, size=41, seed=0):
    """Patches whose first channel equals their label map (blocks of classes) inside a disc of brain."""
    rng = np.random.default_rng(seed)
    y = np.kron(rng.integers(0, 4, (n, 5, 5)), np.ones((9, 9), dtype=np.int64))[:, :size, :size]
    yy, xx = np.mgrid[:size, :size]
    brain = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 < (size // 2 - 1) ** 2
    x = np.repeat(y[:, None].astype(np.float32), 4, axis=1)
    x[:, :, ~brain] = BACKGROUND_VALUE
    return torch.from_numpy(x), torch.from_numpy(y), brain


def test_warps_move_labels_with_the_image():
    x, y, _ = _labelled_patches()
    config = augmentation.AugmentationConfig(enabled=True, rotation_deg=15, zoom=0.1)
    gen = torch.Generator().manual_seed(0)
    wx, wy = augmentation._warp(x, y, config, gen)
    # pixels interpolated inside one block of one class (not mixed at block edges or the brain's edge)
    pure = (wx[:, 0] != BACKGROUND_VALUE) & ((wx[:, 0] - wx[:, 0].round()).abs() < 1e-3)
    assert pure.float().mean() > 0.4
    agree = (wx[:, 0].round().long() == wy)[pure].float().mean()
    assert agree > 0.97, agree
    assert not torch.equal(wy, y)  # something moved


def test_flip_reverses_the_columns_of_image_and_labels():
    x, y, _ = _labelled_patches()
    config = augmentation.AugmentationConfig(enabled=True, rotation_deg=0, zoom=0, flip=True)
    wx, wy = augmentation._warp(x, y, config, torch.Generator().manual_seed(3))
    for i in range(len(x)):
        flipped = torch.equal(wy[i], y[i].flip(-1))
        assert flipped or torch.equal(wy[i], y[i])
        assert torch.allclose(wx[i], x[i].flip(-1) if flipped else x[i], atol=1e-4)


def test_intensity_augmentation_keeps_background_and_changes_brain():
    x, y, brain = _labelled_patches()
    x = x + 0.1 * torch.randn(x.shape) * torch.from_numpy(brain)
    config = augmentation.AugmentationConfig(enabled=True)
    out = augmentation._intensities(x.clone(), config, torch.Generator().manual_seed(1))
    assert torch.all(out[:, :, ~torch.from_numpy(brain)] == BACKGROUND_VALUE)
    change = (out - x)[:, :, torch.from_numpy(brain)].abs().mean()
    assert 0.01 < change < 2.0, change
    again = augmentation._intensities(x.clone(), config, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # the generator decides everything


def test_lesion_contrast_augmentation_moves_only_tumor_flair_and_t2_towards_the_brain_centre():
    x, y, brain = _labelled_patches()
    x = x + 0.5 * torch.from_numpy(brain)  # tumor and brain away from 0
    out = augmentation._lesion_contrast(x, y, 0.4, torch.Generator().manual_seed(2))
    assert torch.equal(out[:, :2], x[:, :2])  # T1, T1c untouched
    inside = torch.nn.functional.max_pool2d((y == 0).float()[:, None], 3, stride=1, padding=1)[:, 0] == 0
    inside &= torch.from_numpy(brain)
    healthy = (y == 0)
    healthy = torch.nn.functional.max_pool2d((~healthy).float()[:, None], 3, stride=1, padding=1)[:, 0] == 0
    for c in (2, 3):
        ratio = out[:, c][inside] / x[:, c][inside]
        assert ratio.min() >= 0.6 - 1e-5 and ratio.max() <= 1 + 1e-5 and ratio.min() < 0.95
        assert torch.equal(out[:, c][healthy], x[:, c][healthy])
    assert torch.all(out[x == BACKGROUND_VALUE] == BACKGROUND_VALUE)


def test_augment_returns_the_network_sizes():
    config = augmentation.AugmentationConfig(enabled=True)
    size, window = 36, 4
    margin = config.margin(size)
    x = torch.randn(3, 4, size + 2 * margin, size + 2 * margin)
    y = torch.randint(0, 4, (3, size + 2 * margin, size + 2 * margin))
    ox, oy = augmentation.augment(x, y, config, size, window, torch.Generator().manual_seed(0))
    assert ox.shape == (3, 4, size, size) and oy.shape == (3, window, window)


def test_stacked_slices_change_alike_per_modality_and_a_single_slice_draws_as_before():
    """SliceStackCNN's patches: each modality's contrast, gamma, bias field and offset the same on every slice
    it reads (one scanner), and the one-slice networks' draws, on which their runs resume, unchanged."""
    config = augmentation.AugmentationConfig(enabled=True, noise=0.0, blur=0.0, lesion_contrast=0.5)
    size, window = 36, 4
    margin = config.margin(size)
    one = torch.randn(3, 4, size + 2 * margin, size + 2 * margin)
    one[:, :, :5] = BACKGROUND_VALUE  # some background, kept as such
    y = torch.randint(0, 4, (3, size + 2 * margin, size + 2 * margin))
    stacked, _ = augmentation.augment(one.repeat(1, 3, 1, 1), y, config, size, window,
                                      torch.Generator().manual_seed(0), images=4, slices=3)
    assert torch.allclose(stacked[:, :4], stacked[:, 4:8]) and torch.allclose(stacked[:, :4], stacked[:, 8:])
    alone, _ = augmentation.augment(one, y, config, size, window, torch.Generator().manual_seed(0))
    assert torch.allclose(alone, stacked[:, :4], atol=1e-6)  # the same draws, in the same order
    assert not torch.allclose(alone, augmentation.crop(one, y, size, window)[0])  # and they did change it


def test_lr_range_test_suggests_a_rate_below_divergence(synthetic_cases):
    config = tiny(synthetic_cases)
    loaded = sampling.load_cases(synthetic_cases, NO_N4)
    sampler = sampling.PatchSampler(loaded, 33, 4, 4, np.random.default_rng(0))
    model = training.build_model(config)

    def batch():
        x, y = sampler.batch(8, balanced=True)
        return torch.from_numpy(x), torch.from_numpy(y)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    rate, curve = training.lr_range_test(model, config, batch, steps=12)
    rates = [r for r, _ in curve]
    assert rates == sorted(rates) and len(curve) >= 2
    assert rates[0] / 3 <= rate <= rates[-1] / 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model itself is untouched


def test_test_time_flips_average_the_two_passes(synthetic_cases, untrained_models):
    from BrainTumorCNNLib.preparing.preprocessing import preprocess
    from BrainTumorCNNLib.running.cases import read_case
    case = read_case(synthetic_cases[0])
    pre = preprocess(case.images, NO_N4)
    model, card = weights.load("TwoPathCNN")
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu", flips=True, cleanup=None,
                                           precision="float32", preprocessing=NO_N4)
    result = pipeline.segment(case.images, case.geometry, options)
    direct = inference.segment_volume(model, pre.images, pre.brain_mask, device="cpu").probabilities
    flipped = inference.segment_volume(model, np.ascontiguousarray(pre.images[..., ::-1]),
                                       np.ascontiguousarray(pre.brain_mask[..., ::-1]), device="cpu").probabilities
    np.testing.assert_allclose(result.probabilities, (direct + flipped[..., ::-1]) / 2, atol=1e-5)
    values = labels.class_values(4)
    np.testing.assert_array_equal(result.labels, values[np.argmax(result.probabilities, axis=0)])


def test_case_names_of_cache_files_and_folders(tmp_path):
    assert sampling.case_name(tmp_path / "BraTS2021_00000-6797b616a08d0219.npz") == "BraTS2021_00000"
    assert sampling.case_name(tmp_path / "BraTS-GLI-00000-000-761c12704992b0b4.npz") == "BraTS-GLI-00000-000"
    assert sampling.case_name(tmp_path / "BraTS2021_00000") == "BraTS2021_00000"


def test_the_cleanup_rules_a_model_may_carry_remove_no_expert_labelled_tumor(shared_data):
    """What makes a rule fit to be applied by default (crossval.MODEL_RULES); the others do remove some."""
    from BrainTumorCNNLib.reading import io
    from BrainTumorCNNLib.running.cases import read_case
    from BrainTumorCNNLib.running.postprocessing import cleanup
    lost = {name: {} for name in crossval.CLEANUP_RULES if name != "none"}
    for folder in [case for release in sorted(shared_data.iterdir()) if release.is_dir()
                   for case in io.find_cases(release)]:
        case = read_case(folder)
        for name in lost:
            cleaned, _ = cleanup(case.truth, case.geometry.spacing, crossval.CLEANUP_RULES[name])
            removed_ml = np.count_nonzero(case.truth != cleaned) * np.prod(case.geometry.spacing) / 1000
            if removed_ml >= 0.1:  # specks under the small rule's 0.1 mL are not tumor the rule denies
                lost[name][case.name] = removed_ml
    for name in crossval.MODEL_RULES:
        assert lost[name] == {}, name
    assert lost["small+flat+within 10 mm of largest"].keys() == {"BraTS2021_00009"}
    assert "BraTS2021_00009" in lost["small+flat+largest only"]
