"""Safe weights: safetensors files (no pickle) checked against the SHA-256 in
their model card before anything is loaded."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_path, write_text
from . import registry


class WeightsError(RuntimeError):
    """Weights that cannot be trusted or do not fit the model."""


def sha256(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(model: nn.Module, model_name: str, weights_path: Union[str, Path], card: dict) -> dict:
    """Write `model`'s weights (safetensors) and its card (JSON, with checksum and
    architecture) atomically; returns the card written."""
    weights_path = Path(weights_path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"model": model_name})
    card = dict(card, model=model_name, architecture=type(model).__name__,
                num_classes=model.num_classes, in_channels=model.in_channels,
                weights_file=weights_path.name, sha256=sha256(weights_path))
    write_text(weights_path.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    return card


def load(model_name: str, weights_path: Optional[Union[str, Path]] = None,
         device: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, dict]:
    """Build the registry model `model_name` and load verified weights into it.

    Refuses (WeightsError) a file that is not safetensors, whose checksum differs
    from its card, or whose tensors do not fit the architecture."""
    spec = registry.get(model_name)
    weights_path = Path(weights_path) if weights_path else spec.weights_path
    card_path = weights_path.with_suffix(".json")
    if not weights_path.is_file():
        raise WeightsError(f"no weights for {model_name} at {weights_path}; train them with "
                           f"`braintumorcnn train --model {model_name}`")
    if not card_path.is_file():
        raise WeightsError(f"{weights_path} has no model card {card_path.name}; refusing unverified weights")
    card = json.loads(card_path.read_text())
    actual = sha256(weights_path)
    if card.get("sha256") != actual:
        raise WeightsError(f"{weights_path}: checksum {actual[:12]}... does not match its model card "
                           f"({str(card.get('sha256'))[:12]}...); the file was changed or belongs to another model")
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{weights_path} is not a valid safetensors file ({exc})") from None
    try:
        arguments = spec.card_arguments(card)
    except (KeyError, TypeError):
        raise WeightsError(f"{card_path} does not describe a {model_name} (its members are missing)") from None
    model = spec.build(num_classes=int(card["num_classes"]), in_channels=int(card.get("in_channels", 4)),
                       **arguments)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{weights_path} does not fit {model_name}: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), card
