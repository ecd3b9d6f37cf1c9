"""One segmentation, end to end: brain extraction -> preprocessing -> dense inference -> cleanup.

The Slicer logic, the batch command, the page and the demo all segment through a
`segmenter.Segmenter` (built once, used for every case), so a case gives the same labels
whichever way it is run; `segment` is the one-call form, reusing this process's Segmenter
for the same options (segmenter.shared).  The options and result types are defined in
segmenter.py and named here for the callers that import them from this module.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from ..preparing.preprocessing import PreprocessingConfig
from ..reading.geometry import Geometry
from . import cascade, inference
from .inference import Progress
from .segmenter import (Inputs, Segmentation, SegmentationOptions, cleanup_rule, run_preprocessed, screen_step,
                        shared)

__all__ = ["Inputs", "PreprocessingConfig", "Progress", "Segmentation", "SegmentationOptions", "cleanup_rule", "screen_step", "segment",
           "segment_preprocessed"]


def segment(images: np.ndarray, geometry: Geometry, options: SegmentationOptions = SegmentationOptions(),
            progress: Optional[Progress] = None, cancel: Optional[Callable[[], bool]] = None,
            inputs: Optional[Inputs] = None) -> Segmentation:
    """Segment a raw (4, Z, Y, X) volume (T1, T1c, T2, FLAIR) on `geometry`'s grid with this process's
    Segmenter for `options` (built on the first call); `inputs` as Segmenter.segment.

    Raises inference.Cancelled when `cancel()` turns true."""
    if progress is not None:
        progress(0.0, f"loading {options.model or 'the best shipped model'}")
    return shared(options).segment(images, geometry, progress=progress, cancel=cancel, inputs=inputs)


def segment_preprocessed(model, name: str, card: dict, volume: np.ndarray, brain: np.ndarray,
                         spacing: Tuple[float, float, float], options: SegmentationOptions,
                         progress: Optional[Progress] = None,
                         cancel: Optional[Callable[[], bool]] = None) -> Segmentation:
    """Dense inference (averaged over a left-right flip when `options.flips`) and cleanup of a
    preprocessed volume by a model already loaded (cross-validation's folds, robustness' models)."""
    runner = cascade.runner_for(model, inference.resolve_device(options.device), options.fast,
                                inference.DEFAULT_MEMORY_BUDGET, None, options.precision, options.two_stage)
    return run_preprocessed(runner, name, card, volume, brain, spacing, options, progress=progress, cancel=cancel)
