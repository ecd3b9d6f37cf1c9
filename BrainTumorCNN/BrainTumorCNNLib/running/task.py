"""A segmentation on a worker thread, so a GUI stays responsive while it runs (the web page's job; the
Slicer module runs the same `prepare_and_segment` in a child process: frontends/child.py)."""
from __future__ import annotations

import threading
from typing import Callable, List, Mapping, Optional, Tuple

import numpy as np

from ..modalities import MODALITIES
from ..preparing import preparation
from ..reading import sanity
from ..reading.geometry import Geometry
from . import inference, pipeline
from .inference import Progress

Volumes = Mapping[str, Tuple[np.ndarray, Geometry]]


class Followed:
    """Work that a thread of this process runs or watches (`_thread`): waiting for it, and whether it ended."""

    _thread: threading.Thread

    def wait(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()


class SegmentationTask(Followed):
    """Preparation (preparation.py: registration, resampling onto the T1c grid)
    and `pipeline.segment` on a worker thread, so the GUI stays responsive.

    MRML is not thread-safe: the arrays are read from the scene before the
    thread starts and the result is put into it after the thread ends, both on
    the main thread; the worker touches neither the scene nor Qt."""

    def __init__(self, volumes: Volumes, options: pipeline.SegmentationOptions,
                 prepare: preparation.PreparationOptions = preparation.PreparationOptions(register=False,
                                                                                          resample=False),
                 names: Optional[Mapping[str, str]] = None):
        """`volumes`: {sequence: (array, geometry)}; `names` name them in messages ("T2 (volume name)")."""
        names = dict(names or {m: m for m in MODALITIES})
        preparation.plan({m: g for m, (_, g) in volumes.items()}, prepare, names)  # a refused plan raises here
        self.geometry = volumes[preparation.REFERENCE][1]  # the result's grid
        self.warnings: List[str] = []  # about the inputs, for the user to see with the result
        self.progress: Tuple[float, str] = (0.0, "starting")  # replaced whole, so read without a lock
        self.prepared: Optional[preparation.Prepared] = None
        self.result = None
        self.error: Optional[BaseException] = None
        self._cancel = threading.Event()

        def run():
            try:
                self.prepared, self.warnings, self.result = prepare_and_segment(
                    volumes, options, prepare, names, self._report, self._cancel.is_set)
            except BaseException as exc:  # noqa: B036 - handed to the main thread
                self.error = exc

        self._thread = threading.Thread(target=run, name="BrainTumorCNN segmentation", daemon=True)
        self._thread.start()

    def _report(self, fraction: float, message: str) -> None:
        self.progress = (fraction, message)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, inference.Cancelled)


def prepare_and_segment(volumes: Volumes, options: pipeline.SegmentationOptions,
                        prepare: preparation.PreparationOptions, names: Mapping[str, str], progress: Progress,
                        cancel: Callable[[], bool], inputs: Optional[pipeline.Inputs] = None
                        ) -> Tuple[preparation.Prepared, List[str], pipeline.Segmentation]:
    """The volumes put on the T1c grid and segmented: (what preparation did, warnings about the inputs,
    the segmentation; `inputs` as Segmenter.segment).  Raises inference.Cancelled once `cancel()` turns
    true."""
    def check_cancel() -> None:
        if cancel():
            raise inference.Cancelled()

    prepared = preparation.prepare(volumes, prepare, names, progress=lambda f, message: progress(0.0, message),
                                   check_cancel=check_cancel)
    images = prepared.images()
    warnings = prepared.warnings + sanity.check_slots(images, [names[m] for m in MODALITIES])
    result = pipeline.segment(images, prepared.geometry, options, progress=progress, cancel=cancel, inputs=inputs)
    return prepared, warnings, result
