"""The model registry: the one list of models the GUI, the CLI and training read."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Type

from torch import nn

from .. import labels
from . import networks

#: The shipped weights and model cards (`<name>.safetensors` + `<name>.json`) inside the package, where
#: a wheel (pyproject.toml) and the Slicer extension (BrainTumorCNN/CMakeLists.txt) install them.
INSTALLED_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
#: The same files in a source checkout (also an editable install), where ship_model.py writes them.
SOURCE_MODELS_DIR = Path(__file__).resolve().parents[3] / "Resources" / "Models"
#: Where the registry reads weights: BRAINTUMORCNN_MODELS (a user's own trained models), else the
#: installed folder when there is one, else the checkout's.
MODELS_DIR = Path(os.environ.get("BRAINTUMORCNN_MODELS")
                  or (INSTALLED_MODELS_DIR if INSTALLED_MODELS_DIR.is_dir() else SOURCE_MODELS_DIR))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    cls: Type[nn.Module]
    two_phase: bool
    description: str

    @property
    def receptive_field(self) -> int:
        return self.cls.receptive_field

    @property
    def weights_path(self) -> Path:
        return MODELS_DIR / f"{self.name}.safetensors"

    @property
    def card_path(self) -> Path:
        return MODELS_DIR / f"{self.name}.json"

    def card(self) -> Optional[dict]:
        """The model card shipped with the weights, or None when none is shipped."""
        if not self.card_path.is_file():
            return None
        return json.loads(self.card_path.read_text())

    def build(self, num_classes: int, in_channels: int = 4, **kwargs) -> nn.Module:
        return self.cls(in_channels=in_channels, num_classes=num_classes, **kwargs)

    def card_arguments(self, card: dict) -> dict:
        """What building the network of a weights file needs beyond its classes: an ensemble's members."""
        return {"members": len(card["members"])} if issubclass(self.cls, networks.EnsembleCNN) else {}


MODELS: Dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("TwoPathCNN", networks.TwoPathCNN, True, "Local + global paths, two-phase training"),
        ModelSpec("TwoPathCNN-1phase", networks.TwoPathCNN, False, "Local + global paths, one-phase training"),
        ModelSpec("LocalPathCNN", networks.LocalPathCNN, True, "Local path only"),
        ModelSpec("GlobalPathCNN", networks.GlobalPathCNN, True, "Global path only"),
        ModelSpec("AverageCNN", networks.AverageCNN, True, "Mean of LocalPathCNN and GlobalPathCNN"),
        ModelSpec("InputCascadeCNN", networks.InputCascadeCNN, True, "TwoPathCNN maps fed to the input"),
        ModelSpec("LocalCascadeCNN", networks.LocalCascadeCNN, True, "TwoPathCNN maps fed to the local path"),
        ModelSpec("MFCascadeCNN", networks.MFCascadeCNN, True, "TwoPathCNN maps fed before the output"),
        ModelSpec("SliceStackCNN", networks.SliceStackCNN, True,
                  "Ours: TwoPathCNN whose local path also reads the slices 3 above and below"),
        ModelSpec("EnsembleCNN", networks.EnsembleCNN, True,
                  "Mean probabilities of the TwoPathCNNs of a cross-validation run's folds"),
        ModelSpec("CascadeEnsembleCNN", networks.CascadeEnsembleCNN, True,
                  "Mean probabilities of the InputCascadeCNNs of a cross-validation run's folds"),
    )
}


def get(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def ensemble_of(member: str) -> ModelSpec:
    """The ensemble whose members are the registry model `member` (the folds of its cross-validation run)."""
    architecture = get(member).cls
    for spec in MODELS.values():
        if issubclass(spec.cls, networks.EnsembleCNN) and spec.cls.member_class is architecture:
            return spec
    raise ValueError(f"no ensemble is made of {member}; ensembles are made of "
                     + ", ".join(s.cls.member_class.__name__ for s in MODELS.values()
                                 if issubclass(s.cls, networks.EnsembleCNN)))


def shipped() -> Dict[str, ModelSpec]:
    """Models whose weights and card are present."""
    return {n: s for n, s in MODELS.items() if s.weights_path.is_file() and s.card_path.is_file()}


def mean_dice(spec: ModelSpec) -> float:
    """The mean over the regions of the Dice its card reports; -1 without one."""
    dice = (spec.card() or {}).get("validation", {}).get("dice", {})
    return sum(dice.values()) / len(dice) if dice else -1.0


def worst_site_dice(spec: ModelSpec) -> float:
    """The mean Dice (`mean_dice`) the card's worst site shift leaves: its cross-validated Dice plus the
    worst shift's mean change (validation.site_shifts, learning/ensemble.py; a gain counts as none); the
    mean Dice alone where the card has no site-shift figures."""
    worst = (spec.card() or {}).get("validation", {}).get("site_shifts", {}).get("worst", {})
    return mean_dice(spec) + min(0.0, float(worst.get("mean_dice_change", 0.0)))


def ranked() -> List[ModelSpec]:
    """The shipped models, best first: figures cross-validated over every fold before those scored on one
    fold's held-out cases (`folds_run`) or on a few validation cases, which flatter; then those measured
    under site shifts before those not; then by the mean Dice (complete, core, enhancing) at the worst site
    shift (`worst_site_dice`: a default must hold on sites unlike the training's); then by name."""
    def rank(spec: ModelSpec) -> tuple:
        validation = (spec.card() or {}).get("validation", {})
        return ("folds" not in validation, "folds_run" in validation, "site_shifts" not in validation,
                -worst_site_dice(spec), spec.name)

    available = shipped()
    if not available:
        raise FileNotFoundError(
            f"no trained weights found in {MODELS_DIR}; train a model with `braintumorcnn train` "
            "or set BRAINTUMORCNN_MODELS to a folder of weights")
    return sorted(available.values(), key=rank)


def default_model() -> str:
    """The best shipped model (`ranked`)."""
    return ranked()[0].name


def card_label(spec: ModelSpec) -> str:
    """How every front end names a shipped model in its list: with the Dice its card reports and how it was
    measured ("4-fold cross-validated Dice ..." or "validation Dice ..."), the regions as readers name them."""
    validation = (spec.card() or {}).get("validation", {})
    dice = validation.get("dice", {})
    scores = ", ".join(f"{labels.REGION_NAMES[region]} {dice[region]:.2f}" for region in labels.REGIONS
                       if region in dice)
    if not scores:
        return f"{spec.name} (not validated)"
    how = f"{validation['folds']}-fold cross-validated Dice" if "folds" in validation else "validation Dice"
    return f"{spec.name} ({how} {scores})"
