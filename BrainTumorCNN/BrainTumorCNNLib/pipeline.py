"""One segmentation, end to end: preprocessing -> dense inference -> cleanup.

The Slicer logic, the batch command and the demo all call `segment`, so a case
gives the same labels whichever way it is run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import numpy as np

from . import inference, labels, registry, weights
from .geometry import Geometry
from .postprocessing import CleanupConfig, cleanup
from .preprocessing import PreprocessingConfig, preprocess

Progress = Callable[[float, str], None]


@dataclass
class SegmentationOptions:
    model: Optional[str] = None  # registry name; None = the best shipped model
    weights_path: Optional[str] = None  # other weights for `model` (with their model card beside them)
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    fast: bool = True  # FFT convolutions where they are faster
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    cleanup: Optional[CleanupConfig] = field(default_factory=CleanupConfig)  # None = no cleanup


@dataclass
class Segmentation:
    labels: np.ndarray  # uint8 (Z, Y, X), internal values (0/1/2/4 for 4-class models, 0-4 for 5-class)
    probabilities: np.ndarray  # float32 (C, Z, Y, X), class probabilities before cleanup
    num_classes: int
    model_name: str
    card: dict
    cleanup_report: object = None

    @property
    def tissues(self) -> Tuple[labels.Tissue, ...]:
        return labels.class_tissues(self.num_classes)


def segment(images: np.ndarray, geometry: Geometry, options: SegmentationOptions = SegmentationOptions(),
            progress: Optional[Progress] = None, cancel: Optional[Callable[[], bool]] = None) -> Segmentation:
    """Segment a raw (4, Z, Y, X) volume (T1, T1c, T2, FLAIR) on `geometry`'s grid.

    Raises inference.Cancelled when `cancel()` turns true."""
    report = progress or (lambda fraction, message: None)
    name = options.model or registry.default_model()
    report(0.0, f"loading {name}")
    model, card = weights.load(name, options.weights_path)
    report(0.02, "preprocessing (clipping, N4 bias correction, normalisation)")
    pre = preprocess(images, options.preprocessing, spacing=geometry.spacing)
    _check_cancel(cancel)
    result = inference.segment_volume(
        model, pre.images, pre.brain_mask, device=options.device, fast=options.fast,
        progress=lambda f, m: report(0.1 + 0.85 * f, m), cancel=cancel)
    out_labels, cleanup_report = result.labels, None
    if options.cleanup is not None:
        report(0.96, "removing small and flat components")
        out_labels, cleanup_report = cleanup(out_labels, geometry.spacing, options.cleanup)
    report(1.0, "done")
    return Segmentation(out_labels, result.probabilities, model.num_classes, name, card, cleanup_report)


def _check_cancel(cancel: Optional[Callable[[], bool]]) -> None:
    if cancel is not None and cancel():
        raise inference.Cancelled()
