"""A segmentation on a worker thread, so a GUI stays responsive while it runs."""
from __future__ import annotations

import threading
from typing import List, Optional, Tuple

from . import inference, pipeline


class SegmentationTask:
    """`pipeline.segment` on a worker thread, so the GUI stays responsive.

    MRML is not thread-safe: the arrays are read from the scene before the
    thread starts and the result is put into it after the thread ends, both on
    the main thread; the worker touches neither the scene nor Qt."""

    def __init__(self, images, geometry, options, warnings=()):
        self.geometry = geometry
        self.warnings: List[str] = list(warnings)  # about the inputs, for the user to see with the result
        self.progress: Tuple[float, str] = (0.0, "starting")  # replaced whole, so read without a lock
        self.result = None
        self.error: Optional[BaseException] = None
        self._cancel = threading.Event()

        def run():
            try:
                self.result = pipeline.segment(images, geometry, options, progress=self._report,
                                               cancel=self._cancel.is_set)
            except BaseException as exc:  # noqa: B036 - handed to the main thread
                self.error = exc

        self._thread = threading.Thread(target=run, name="BrainTumorCNN segmentation", daemon=True)
        self._thread.start()

    def _report(self, fraction: float, message: str) -> None:
        self.progress = (fraction, message)

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, inference.Cancelled)
