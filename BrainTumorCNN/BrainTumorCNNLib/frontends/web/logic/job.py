"""The segmentation of an opened case, off the server's event loop: the Slicer module's worker task
(running/task.py runs pipeline.segment on a thread, with progress and cancel), given the options
`braintumorcnn segment` uses by default, so the page stays responsive and gives the command's labels."""
from __future__ import annotations

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
    """The shipped models, the default (best) first, each titled with the Dice its card reports."""
    shipped = registry.shipped()
    if not shipped:
        raise FileNotFoundError(f"no trained weights found in {registry.MODELS_DIR}; set BRAINTUMORCNN_MODELS "
                                "to a folder of weights")
    best = registry.default_model()
    choices = []
    for name in [best] + sorted(n for n in shipped if n != best):
        validation = (shipped[name].card() or {}).get("validation", {})
        dice = validation.get("dice", {})
        how = f"{validation['folds']}-fold cross-validated Dice" if "folds" in validation else "validation Dice"
        scores = ", ".join(f"{region} {dice[region]:.2f}" for region in label_table.REGIONS if region in dice)
        choices.append({"title": f"{name} ({how} {scores})" if scores else f"{name} (not validated)",
                        "value": name})
    return choices
