"""The segmentation of an opened case, off the server's event loop: the worker task (running/task.py
runs pipeline.segment on a thread, with progress and cancel; the session is a process of its own), given the options
`braintumorcnn segment` uses by default, so the page stays responsive and gives the command's labels."""
from __future__ import annotations

import re
from typing import Dict, List

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
    """The shipped models, best first (registry.ranked, as the Slicer module lists them), each titled with
    the Dice its card reports (registry.card_label)."""
    return [{"title": registry.card_label(spec), "value": spec.name, "mean_dice": round(registry.mean_dice(spec), 4)}
            for spec in registry.ranked()]


#: "slice 45/108 (cpu)": the inference's count, screening's own and then the whole run's (every third brain
#: slice first, then those next to tumor: two totals), so the page shows time instead.
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
