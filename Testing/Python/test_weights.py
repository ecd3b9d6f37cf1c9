"""Weights load only from verified safetensors files."""
import json
import pickle

import pytest
import torch

from BrainTumorCNNLib.network import networks, weights


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = networks.TwoPathCNN(num_classes=4)
    path = tmp_path / "TwoPathCNN.safetensors"
    weights.save(model, "TwoPathCNN", path, {"note": "test"})
    return model.eval(), path


def test_round_trip_gives_the_same_outputs(saved):
    model, path = saved
    loaded, card = weights.load("TwoPathCNN", path)
    x = torch.randn(1, 4, 40, 40)
    assert torch.equal(model(x), loaded(x))
    assert card["num_classes"] == 4 and card["note"] == "test" and len(card["sha256"]) == 64


def test_tampered_file_is_refused(saved):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(weights.WeightsError, match="checksum"):
        weights.load("TwoPathCNN", path)


def test_missing_card_is_refused(saved):
    _, path = saved
    path.with_suffix(".json").unlink()
    with pytest.raises(weights.WeightsError, match="no model card"):
        weights.load("TwoPathCNN", path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "LocalPathCNN.safetensors"
    weights.save(networks.LocalPathCNN(num_classes=4), "LocalPathCNN", path, {})
    with pytest.raises(weights.WeightsError, match="does not fit TwoPathCNN"):
        weights.load("TwoPathCNN", path)


class _Exploit:
    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, saved):
    """A malicious pickle with a matching checksum in its card is still never unpickled."""
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    path = tmp_path / "TwoPathCNN.safetensors"
    path.write_bytes(pickle.dumps({"output.weight": _Exploit()}))
    card_path = path.with_suffix(".json")
    card = json.loads(saved[1].with_suffix(".json").read_text())
    card["sha256"] = weights.sha256(path)
    card_path.write_text(json.dumps(card))
    with pytest.raises(weights.WeightsError, match="not a valid safetensors"):
        weights.load("TwoPathCNN", path)
    assert not marker.exists()


def test_default_model_prefers_cross_validated_figures(untrained_models):
    """Two validation cases flatter: a card with cross-validated Dice outranks a higher few-case Dice."""
    import torch
    from BrainTumorCNNLib.network import registry, weights
    assert registry.default_model() == "TwoPathCNN"  # 0.5 vs 0.2, neither cross-validated
    model = registry.get("LocalPathCNN").build(num_classes=5)
    torch.manual_seed(1)
    weights.save(model, "LocalPathCNN", untrained_models / "LocalPathCNN.safetensors",
                 {"label_scheme": "brats2013",
                  "validation": {"dice": {"complete": 0.2, "core": 0.2, "enhancing": 0.2}, "folds": 3}})
    assert registry.default_model() == "LocalPathCNN"
    # one fold's held-out cases are fewer, so they rank below a full cross-validation whatever their Dice
    weights.save(registry.get("GlobalPathCNN").build(num_classes=5), "GlobalPathCNN",
                 untrained_models / "GlobalPathCNN.safetensors",
                 {"label_scheme": "brats2013", "validation": {
                     "dice": {"complete": 0.9, "core": 0.9, "enhancing": 0.9}, "folds": 3, "folds_run": [0]}})
    assert registry.default_model() == "LocalPathCNN"
