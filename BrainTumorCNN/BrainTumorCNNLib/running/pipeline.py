"""One segmentation, end to end: brain extraction -> preprocessing -> dense inference -> cleanup.

The Slicer logic, the batch command and the demo all call `segment`, so a case
gives the same labels whichever way it is run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import numpy as np

from .. import labels
from ..network import registry, weights
from ..preparing import brain_extraction
from ..preparing.preprocessing import PreprocessingConfig, brain_mask, preprocess, through_plane_average
from ..reading.geometry import Geometry
from . import inference
from .inference import Progress
from .postprocessing import CleanupConfig, cleanup


@dataclass
class SegmentationOptions:
    model: Optional[str] = None  # registry name; None = the best shipped model
    weights_path: Optional[str] = None  # other weights for `model` (with their model card beside them)
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    fast: bool = True  # FFT convolutions where they are faster
    flips: bool = False  # test-time augmentation: probabilities averaged with a left-right flipped pass
    # direct convolutions' arithmetic (inference.PRECISIONS): "auto" = bfloat16 where the CPU computes it natively
    precision: str = "auto"
    # screening (inference.segment_volume's screen_step): slices far from any tumor are not run, the cleaned
    # labels unchanged; their probabilities stay background, so turn it off to look at probabilities there
    screen: bool = True
    brain_extraction: str = "auto"  # "auto" (when a skull is detected) | "on" | "off": brain_extraction.py
    # N4's settings; the normalisation statistics are the model's own (PreprocessingConfig.of_model)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    cleanup: Optional[CleanupConfig] = field(default_factory=CleanupConfig)  # None = no cleanup
    # with cleanup, also the distance rule the model's card chose by cross-validation (CleanupConfig.of_model)
    model_cleanup: bool = True
    # FLAIR and T2 averaged along the slice axis before preprocessing (preprocessing.through_plane_average)
    through_plane: bool = False


@dataclass
class Segmentation:
    labels: np.ndarray  # uint8 (Z, Y, X), internal values (0/1/2/4 for 4-class models, 0-4 for 5-class)
    probabilities: np.ndarray  # float32 (C, Z, Y, X), before cleanup; background in slices screening skipped
    num_classes: int
    model_name: str
    card: dict
    cleanup_report: object = None
    extraction: Optional[brain_extraction.ExtractionReport] = None  # what brain extraction did (segment)

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
    if options.brain_extraction != "off":
        report(0.01, "checking for a skull" if options.brain_extraction == "auto" else "brain extraction")
    images, extraction = brain_extraction.prepare(images, geometry, options.brain_extraction, options.device)
    _check_cancel(cancel)
    if options.through_plane:
        images = through_plane_average(images, brain_mask(images), geometry.spacing[2])
    report(0.02, "preprocessing (clipping, N4 bias correction, normalisation)")
    pre = preprocess(images, PreprocessingConfig.of_model(card, options.preprocessing), spacing=geometry.spacing)
    _check_cancel(cancel)
    result = segment_preprocessed(model, name, card, pre.images, pre.brain_mask, geometry.spacing, options,
                                  progress=lambda f, m: report(0.1 + 0.9 * f, m), cancel=cancel)
    result.extraction = extraction
    return result


def segment_preprocessed(model, name: str, card: dict, volume: np.ndarray, brain: np.ndarray,
                         spacing: Tuple[float, float, float], options: SegmentationOptions,
                         progress: Optional[Progress] = None,
                         cancel: Optional[Callable[[], bool]] = None) -> Segmentation:
    """Dense inference (averaged over a left-right flip when `options.flips`) and cleanup of a
    preprocessed volume; `segment` and cross-validation share it."""
    report = progress or (lambda fraction, message: None)
    rule = cleanup_rule(options, card)
    result = inference.segment_volume(
        model, volume, brain, device=options.device, fast=options.fast, precision=options.precision,
        flips=options.flips, screen_step=_screen_step(options.screen, rule), cancel=cancel,
        progress=lambda f, m: report(0.95 * f, m))
    out_labels = result.labels
    cleanup_report = None
    if rule is not None:
        report(0.96, "removing small, flat" + (" and distant" if rule.max_distance_mm is not None else "")
               + " components")
        out_labels, cleanup_report = cleanup(out_labels, spacing, rule)
    report(1.0, "done")
    return Segmentation(out_labels, result.probabilities, model.num_classes, name, card, cleanup_report)


def cleanup_rule(options: SegmentationOptions, card: dict) -> Optional[CleanupConfig]:
    """The cleanup these options give with this model: theirs, plus the rule the model's card carries
    when `options.model_cleanup` (CleanupConfig.of_model); None without cleanup."""
    if options.cleanup is None or not options.model_cleanup:
        return options.cleanup
    return CleanupConfig.of_model(card, options.cleanup)


def screen_step(options: SegmentationOptions, card: Optional[dict] = None) -> int:
    """inference.segment_volume's screen_step for these options and model: as many unrun slices as its
    cleanup removes anyway (CleanupConfig.unseen_span), 1 (every slice) without screening or cleanup."""
    return _screen_step(options.screen, cleanup_rule(options, card or {}))


def _screen_step(screen: bool, rule: Optional[CleanupConfig]) -> int:
    return 1 + rule.unseen_span() if screen and rule is not None else 1


def _check_cancel(cancel: Optional[Callable[[], bool]]) -> None:
    if cancel is not None and cancel():
        raise inference.Cancelled()
