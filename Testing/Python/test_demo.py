"""`braintumorcnn demo`: phantom -> segmentation -> files and Dice, end to end on a small phantom."""
from __future__ import annotations

from BrainTumorCNNLib import cli, registry


def test_demo_writes_segmentation_and_reports_dice(untrained_models, tmp_path, capsys):
    output = tmp_path / "demo"
    assert cli.main(["demo", "--output", str(output), "--size", "small", "--seed", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
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
    assert "braintumorcnn train" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()  # nothing made before the model is known

