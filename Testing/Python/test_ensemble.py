"""EnsembleCNN: the mean of its members' probabilities, dense and fast as any registry model, assembled
from a finished cross-validation run with a card naming what each member never saw."""
from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch

from BrainTumorCNNLib.frontends import cli
from BrainTumorCNNLib.learning import crossval, ensemble, training
from BrainTumorCNNLib.network import networks, registry, weights
from BrainTumorCNNLib.running import inference, pipeline
from BrainTumorCNNLib.running.postprocessing import CleanupConfig
from test_crossval import tiny
from test_inference import brain_volume, lively


def test_the_ensemble_gives_the_mean_of_its_members_probabilities_dense_and_fast():
    model = networks.EnsembleCNN(num_classes=4, members=3)
    for seed, member in enumerate(model.members):
        lively(member, seed)
    model.eval()
    x = torch.randn(2, 4, 40, 37)
    with torch.inference_mode():
        mean = torch.stack([member(x).exp() for member in model.members]).mean(0)
        torch.testing.assert_close(model(x).exp(), mean, atol=1e-6, rtol=0)
    volume, mask = brain_volume(slices=1)
    whole = inference.segment_volume(model, volume, mask, device="cpu", fast=True).probabilities
    each = [inference.segment_volume(member, volume, mask, device="cpu", fast=False).probabilities
            for member in model.members]
    assert np.abs(each[0] - each[1]).max() > 0.05, "degenerate test: the members agree"
    np.testing.assert_allclose(whole, np.mean(each, axis=0), atol=1e-4, rtol=0)
    # members run one after another: the memory bound is one member's, not the sum
    single = inference.activation_bytes_per_pixel(model.members[0])
    assert single < inference.activation_bytes_per_pixel(model) < 2 * single


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-fold cross-validation of a tiny TwoPathCNN on four synthetic cases."""
    from conftest import write_synthetic_case
    root = tmp_path_factory.mktemp("ensemble")
    cases = [write_synthetic_case(root / "cases", f"Synth_{i:03d}", seed=i) for i in range(4)]
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu")
    crossval.run(cases, 2, root / "cv", tiny(cases, keep="last"), options, seed=0, progress=False)
    return root / "cv", cases


def test_a_finished_run_becomes_one_network_whose_card_says_what_each_member_never_saw(finished_run, tmp_path,
                                                                                        monkeypatch, capsys):
    run, cases = finished_run
    models = tmp_path / "models"
    assert cli.main(["ensemble", str(run), "--output", str(models)]) == 0
    printed = capsys.readouterr().out
    model, card = weights.load("EnsembleCNN", models / "EnsembleCNN.safetensors")
    fold_of = json.loads((run / "folds.json").read_text())["cases"]
    assert [m["fold"] for m in card["members"]] == [0, 1]
    for member, slot in zip(card["members"], model.members):
        held_out = sorted(name for name, fold in fold_of.items() if fold == member["fold"])
        assert member["never_saw"] == held_out and f"fold {member['fold']}: never saw {', '.join(held_out)}" in printed
        assert sorted(member["trained_on"]) == sorted(set(fold_of) - set(held_out))
        fold_model, fold_card = weights.load("TwoPathCNN", run / f"fold-{member['fold']}" / "last.safetensors")
        assert member["sha256"] == fold_card["sha256"]
        for name, tensor in fold_model.state_dict().items():
            assert torch.equal(slot.state_dict()[name], tensor), name
    assert card["never_seen_by_any_member"] == []  # two folds: every case trained one member
    summary = json.loads((run / "summary.json").read_text())
    assert card["validation"]["folds"] == 2 and sorted(card["validation"]["cases"]) == sorted(fold_of)
    # the figure of what ships: each case cleaned with the rule its fold chose on the other fold's cases
    nested = summary["cleanup_rule_chosen_by_other_folds"]
    assert card["validation"]["dice"]["complete"] == pytest.approx(nested["scores"]["dice_complete"]["mean"],
                                                                   abs=1e-4)
    assert card["cleanup"]["dice_chosen_on_other_folds"]["complete"] == card["validation"]["dice"]["complete"]
    assert {r["case"]: r["cleanup"] for r in card["validation"]["per_case"]} == {
        name: nested["rule_of_fold"][str(fold)] for name, fold in fold_of.items()}
    rule = crossval.chosen_rule(summary)  # the cleanup rule the run's held-out cases chose, for the pipeline
    assert card["cleanup"]["rule"] == rule and set(card["cleanup"]) >= {"chosen", "dice_chosen_on_other_folds"}
    if crossval.CLEANUP_RULES[rule] is not None:
        assert CleanupConfig.of_model(card) == CleanupConfig.of_model({}, crossval.CLEANUP_RULES[rule])
    assert card["training"]["config"]["preprocessing"] == json.loads(
        (run / "fold-0" / "config.json").read_text())["preprocessing"]

    # asked to, and only then, it replaces its earlier file
    assert cli.main(["ensemble", str(run), "--output", str(models)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert cli.main(["ensemble", str(run), "--output", str(models), "--overwrite"]) == 0

    # cross-validated figures rank it first among the shipped models; `segment` runs it
    (models / "TwoPathCNN.json").write_text(json.dumps({"validation": {"dice": {"complete": 0.99}}}))
    shutil.copy(run / "fold-0" / "last.safetensors", models / "TwoPathCNN.safetensors")
    monkeypatch.setattr(registry, "MODELS_DIR", models)
    assert registry.default_model() == "EnsembleCNN"
    output = tmp_path / "segmented"
    assert cli.main(["segment", str(cases[0]), "--output", str(output), "--device", "cpu", "--no-n4"]) == 0
    assert "EnsembleCNN" in capsys.readouterr().out
    assert any(output.rglob("*.nii.gz"))


def test_the_runs_site_shift_benchmark_goes_into_its_card_and_the_default_is_chosen_at_the_worst_site(
        finished_run, tmp_path, monkeypatch):
    """`robustness --run` scores kept in the run's folder: the card carries each shift's mean change and the
    worst; the ranking weighs the worst site with the Dice; rows of another cleanup rule are refused."""
    source, cases = finished_run
    run = tmp_path / "cv"
    shutil.copytree(source, run)
    assert cli.main(["robustness", *map(str, cases), "--run", str(run), "--output", str(tmp_path / "rb"),
                     "--shifts", "clean", "gamma 0.7", "bias field", "--slab", "4", "--device", "cpu"]) == 0
    shutil.copy(tmp_path / "rb" / "robustness.csv", run / "robustness.csv")
    models = tmp_path / "models"
    card = ensemble.assemble(run, models)
    shifts = card["validation"]["site_shifts"]
    with open(run / "robustness.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    clean = {r["case"]: r for r in rows if r["shift"] == "clean"}
    expected = {}  # per shift, per region: the mean over the cases both score of shifted - clean
    for shift in ("gamma 0.7", "bias field"):
        for region in ("complete", "core", "enhancing"):
            changes = [float(r[f"dice_{region}"]) - float(clean[r["case"]][f"dice_{region}"]) for r in rows
                       if r["shift"] == shift and r[f"dice_{region}"] and clean[r["case"]][f"dice_{region}"]]
            if changes:
                expected.setdefault(shift, {})[region] = round(float(np.mean(changes)), 4)
    assert shifts["change"] == expected and sorted(shifts["cases"]) == sorted(c.name for c in cases)
    of_mean = {shift: round(float(np.mean(list(regions.values()))), 4) for shift, regions in expected.items()}
    worst = shifts["worst"]
    assert worst == {"shift": min(of_mean, key=of_mean.get), "mean_dice_change": min(of_mean.values())}
    assert "4-slice slab" in shifts["protocol"]

    # ranking: a better cross-validated Dice loses to the ensemble where its worst site is worse by more
    monkeypatch.setattr(registry, "MODELS_DIR", models)
    ours = registry.mean_dice(registry.get("EnsembleCNN"))
    assert registry.worst_site_dice(registry.get("EnsembleCNN")) == pytest.approx(
        ours + min(0.0, worst["mean_dice_change"]))
    shutil.copy(run / "fold-0" / "last.safetensors", models / "TwoPathCNN.safetensors")
    for loss, first in ((min(0.0, worst["mean_dice_change"]) - 0.05, "EnsembleCNN"),
                        (min(0.0, worst["mean_dice_change"]), "TwoPathCNN")):
        other = {"validation": {"folds": 2, "dice": {r: ours + 0.01 for r in ("complete", "core", "enhancing")},
                                "site_shifts": {"worst": {"shift": "bias field", "mean_dice_change": loss}}}}
        (models / "TwoPathCNN.json").write_text(json.dumps(other))
        assert registry.default_model() == first
    # a card without site-shift figures ranks after one measured, whatever its Dice
    (models / "TwoPathCNN.json").write_text(json.dumps({"validation": {"folds": 2, "dice": {"complete": 0.99}}}))
    assert registry.default_model() == "EnsembleCNN"

    # scores of the run under another cleanup rule than the card's are refused, naming both
    label = rows[0]["model"]
    with open(run / "robustness.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([dict(r, model="cv, cleanup small+flat+grown") for r in rows])
    with pytest.raises(ensemble.EnsembleError,
                       match=rf"cv, cleanup small\+flat\+grown, not the run as it is now \({re.escape(label)}\)"):
        ensemble.assemble(run, tmp_path / "other")


def test_an_unfinished_run_or_a_changed_member_is_refused(finished_run, tmp_path):
    run, _ = finished_run
    copy = tmp_path / "cv"
    shutil.copytree(run, copy)
    summary = copy / "fold-1" / "summary.json"
    state = json.loads(summary.read_text())
    summary.write_text(json.dumps(dict(state, epoch=state["epoch"] - 1)))
    with pytest.raises(ensemble.EnsembleError, match="fold 1 .* stopped at epoch 1 of 2"):
        ensemble.assemble(copy, tmp_path / "models")
    summary.write_text(json.dumps(state))
    weights_file = copy / "fold-0" / "last.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-1] + b"\0")
    with pytest.raises(weights.WeightsError, match="checksum"):
        ensemble.assemble(copy, tmp_path / "models")
    (copy / "summary.json").unlink()
    shutil.copy(run / "fold-0" / "last.safetensors", weights_file)
    with pytest.raises(ensemble.EnsembleError, match="summary.json is missing"):
        ensemble.assemble(copy, tmp_path / "models")
    assert not (tmp_path / "models" / "EnsembleCNN.safetensors").exists()
    with pytest.raises(ValueError, match="assembled from the folds"):
        training.build_model(training.TrainingConfig(model="EnsembleCNN"))


def test_a_finished_cascade_run_becomes_a_cascade_ensemble_whose_members_are_its_folds(finished_run, tmp_path,
                                                                                      capsys):
    """The folds of an InputCascadeCNN run (each built on the same fold of the TwoPathCNN run) make a
    CascadeEnsembleCNN: each member the fold's whole cascade, first network included; other runs are refused."""
    first, cases = finished_run
    options = pipeline.SegmentationOptions(model="InputCascadeCNN", device="cpu")
    config = tiny(cases, model="InputCascadeCNN", keep="last")
    crossval.run(cases, 2, tmp_path / "cascade", config, options, seed=0,
                 base_runs={"first_weights": first}, progress=False)
    models = tmp_path / "models"
    assert cli.main(["ensemble", str(tmp_path / "cascade"), "--output", str(models)]) == 0
    assert "CascadeEnsembleCNN: 2 members written" in capsys.readouterr().out
    assert not (models / "EnsembleCNN.safetensors").exists()
    model, card = weights.load("CascadeEnsembleCNN", models / "CascadeEnsembleCNN.safetensors")
    assert isinstance(model, networks.CascadeEnsembleCNN) and card["receptive_field"] == 65
    assert [m["architecture"] for m in card["members"]] == ["InputCascadeCNN"] * 2
    for fold, slot in enumerate(model.members):
        cascade, _ = weights.load("InputCascadeCNN", tmp_path / "cascade" / f"fold-{fold}" / "last.safetensors")
        fold_first, _ = weights.load("TwoPathCNN", first / f"fold-{fold}" / "last.safetensors")
        for name, tensor in cascade.state_dict().items():
            assert torch.equal(slot.state_dict()[name], tensor), name
        for name, tensor in fold_first.state_dict().items():
            assert torch.equal(slot.first.state_dict()[name], tensor), name
    assert registry.ensemble_of("InputCascadeCNN").name == "CascadeEnsembleCNN"
    assert registry.ensemble_of("TwoPathCNN").name == "EnsembleCNN"
    with pytest.raises(ValueError, match="no ensemble is made of LocalPathCNN"):
        registry.ensemble_of("LocalPathCNN")
    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "cascade", mixed)
    shutil.rmtree(mixed / "fold-1")
    shutil.copytree(first / "fold-1", mixed / "fold-1")
    with pytest.raises(ensemble.EnsembleError, match="fold 1 trained TwoPathCNN where fold 0 trained InputCascadeCNN"):
        ensemble.assemble(mixed, tmp_path / "other")


def test_the_first_networks_extent_joined_with_the_cascades_tissue():
    """measure_first_extent.first_extent: the first network's tumor, labelled by the cascade where it calls
    tumor there, else by the first network; the cascade's tumor outside the first's dropped."""
    from conftest import maintainer_tool
    first_extent = maintainer_tool("measure_first_extent").first_extent
    first = np.array([[0, 2, 2, 1, 0]], np.uint8)
    cascade = np.array([[4, 4, 0, 1, 2]], np.uint8)
    assert first_extent(first, cascade).tolist() == [[0, 4, 2, 1, 0]]
    assert first_extent(first, cascade).dtype == np.uint8
