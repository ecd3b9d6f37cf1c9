"""`braintumorcnn demo`: phantom -> segmentation -> files and Dice, end to end on a small phantom."""
from __future__ import annotations

from BrainTumorCNNLib.frontends import cli, demo
from BrainTumorCNNLib.network import registry


def test_demo_writes_segmentation_reports_dice_and_fails_an_untrained_model(untrained_models, tmp_path, capsys):
    output = tmp_path / "demo"
    status = cli.main(["demo", "--output", str(output), "--size", "small", "--seed", "2", "--device", "cpu"])
    captured = capsys.readouterr()
    printed = captured.out
    assert status == 1, "an untrained model must fail the demo"
    assert "below the floor" in captured.err and f"{demo.MIN_MEAN_DICE}" in captured.err
    name = "Phantom_00002"
    for suffix in ("t1", "t1ce", "t2", "flair", "seg"):
        assert (output / name / f"{name}_{suffix}.nii.gz").is_file()
    for produced in (f"{name}.seg.nrrd", f"{name}_labels.nii.gz", f"{name}_preview.png"):
        assert (output / produced).stat().st_size > 0, produced
    assert "Dice: complete" in printed and "core" in printed and "enhancing" in printed
    assert "TwoPathCNN" in printed


def test_demo_without_weights_says_how_to_get_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path / "empty")
    assert cli.main(["demo", "--output", str(tmp_path / "out"), "--size", "small"]) == 2
    err = capsys.readouterr().err
    assert "braintumorcnn train" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing made before the model is known

