"""The segmentation of an opened case, off the server's event loop: the worker task (running/task.py
runs pipeline.segment on a thread, with progress and cancel; the session is a process of its own), given the options
`braintumorcnn segment` uses by default, so the page stays responsive and gives the command's labels."""
from __future__ import annotations

import re
from typing import Dict, List

from .... import labels as label_table
from ....modalities import MODALITIES
from ....network import registry
from ....reading import io
from ....running import pipeline
from ....running.task import SegmentationTask


def start(case: io.Case, model: str) -> SegmentationTask:
    """Start segmenting `case` (read and prepared by cases.read) with `model` on a worker thread."""
    volumes = {m: (case.images[i], case.geometry) for i, m in enumerate(MODALITIES)}
    names = {m: f"{m} ({case.files[m].name})" if m in case.files else m for m in MODALITIES}
    return SegmentationTask(volumes, pipeline.SegmentationOptions(model=model), names=names)


def model_choices() -> List[Dict[str, str]]:
    """The shipped models, best first by the registry's ranking (registry.default_model: cross-validated
    figures before others, then the mean of the cards' Dice), each titled with the Dice its card reports."""
    shipped = registry.shipped()
    if not shipped:
        raise FileNotFoundError(f"no trained weights found in {registry.MODELS_DIR}; set BRAINTUMORCNN_MODELS "
                                "to a folder of weights")
    best = registry.default_model()
    validations = {name: (model.card() or {}).get("validation", {}) for name, model in shipped.items()}

    def mean_dice(name: str) -> float:
        dice = validations[name].get("dice", {})
        return sum(dice.values()) / len(dice) if dice else -1.0

    def rank(name: str) -> tuple:  # as default_model ranks them, best first
        validation = validations[name]
        return (name != best, "folds" not in validation, "folds_run" in validation, -mean_dice(name), name)

    choices = []
    for name in sorted(shipped, key=rank):
        validation = validations[name]
        dice = validation.get("dice", {})
        how = f"{validation['folds']}-fold cross-validated Dice" if "folds" in validation else "validation Dice"
        scores = ", ".join(f"{region} {dice[region]:.2f}" for region in label_table.REGIONS if region in dice)
        choices.append({"title": f"{name} ({how} {scores})" if scores else f"{name} (not validated)",
                        "value": name, "mean_dice": round(mean_dice(name), 4)})
    return choices


#: "slice 45/135 (cpu)": the inference's count, whose total changes when screening has found the tumor's
#: slices (every third brain slice first, then those next to tumor), so the page shows time instead.
_SLICE_COUNT = re.compile(r"\bslice \d+/\d+\s*")


def progress_text(fraction: float, message: str, elapsed_s: float) -> str:
    """A running job's progress line: what it does, the share done, the time it has run and, once a
    tenth is done, about how long it has left (linear in the share done)."""
    doing = _SLICE_COUNT.sub("segmenting slices ", message).strip()
    text = f"{doing} - {100 * fraction:.0f} %, {_minutes(elapsed_s)} elapsed"
    if fraction >= 0.1:
        text += f", about {_minutes(elapsed_s * (1 - fraction) / fraction)} left"
    return text


def _minutes(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
