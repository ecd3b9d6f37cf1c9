"""Progress of one case on the console: `braintumorcnn segment` and the other
front ends that segment files."""
from __future__ import annotations

import math
import sys
from typing import Optional, TextIO


class ProgressLine:
    """A pipeline.Progress callback showing one case on `stream`: one line updated in place on a
    terminal; elsewhere (a log, a pipe) a line per `step` of the work, so a log holds a few lines, not
    hundreds of updates."""

    def __init__(self, stream: Optional[TextIO] = None, step: float = 0.1):
        self.stream = stream if stream is not None else sys.stdout
        self.terminal = self.stream.isatty()
        self.step = step
        self.next = 0.0  # the fraction that earns the next line

    def __call__(self, fraction: float, message: str) -> None:
        if self.terminal:
            self.stream.write(f"\r  [{fraction:4.0%}] {message:<60}")
        elif fraction >= self.next - 1e-9:
            self.stream.write(f"  [{fraction:4.0%}] {message}\n")
            self.next = (math.floor(fraction / self.step + 1e-9) + 1) * self.step
        else:
            return
        self.stream.flush()

    def finish(self, message: str) -> None:
        """The case's closing line (ends the updated line on a terminal)."""
        self.stream.write(f"\r  {message:<70}\n" if self.terminal else f"  {message}\n")
        self.stream.flush()
