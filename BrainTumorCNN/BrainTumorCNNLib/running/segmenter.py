"""A segmentation, end to end (brain extraction -> preprocessing -> dense inference -> cleanup), by a
`Segmenter` built once and used for every case: the verified model (weights loaded once, their SHA-256
checked against the card), its prepared fast copy (inference.Runner: made on the first case, only
fitted to each later case's largest crop) and the options resolved (device, precision, screening,
cleanup rule).  The batch command builds one per run; the page's jobs and the Slicer module's runs
share one per process and options (`shared`).  Every result carries its provenance: how it was made,
written into every output (writing/outputs.py, writing/mrml.py).
"""
from __future__ import annotations

import datetime
import hashlib
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from .. import __version__, labels
from ..modalities import MODALITIES
from ..network import registry, weights
from ..preparing import brain_extraction
from ..preparing.preprocessing import PreprocessingConfig, brain_mask, preprocess, through_plane_average
from ..reading.geometry import Geometry
from . import cascade, inference, uncertainty
from .inference import Progress
from .postprocessing import CleanupConfig, postprocess


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
    # with cleanup, also the distance rule the model's card chose by cross-validation (CleanupConfig.of_model) ...
    model_cleanup: bool = True
    # ... and the edema growth it chose (postprocessing.grow_edema)
    edema_growth: bool = True
    # FLAIR and T2 averaged along the slice axis before preprocessing (preprocessing.through_plane_average)
    through_plane: bool = False
    # a cascade (or an ensemble of cascades) runs its second network only near its first network's tumor
    # (running/cascade.py; False: over the whole brain, `--whole-cascade`; other models: no effect)
    two_stage: bool = True


@dataclass
class Segmentation:
    labels: np.ndarray  # uint8 (Z, Y, X), internal values (0/1/2/4 for 4-class models, 0-4 for 5-class)
    probabilities: np.ndarray  # float32 (C, Z, Y, X), before cleanup; background in slices screening skipped
    num_classes: int
    model_name: str
    card: dict
    cleanup_report: object = None
    extraction: Optional[brain_extraction.ExtractionReport] = None  # what brain extraction did (segment)
    provenance: Dict[str, object] = field(default_factory=dict)  # how it was made (Segmenter.segment)
    # the confidence figure (uncertainty.confidence: {region: expected Dice}; Segmenter.segment), also in
    # the provenance record; empty when not computed (cross-validation's runs)
    confidence: Dict[str, float] = field(default_factory=dict)
    # the entropy map (uncertainty.entropy_map), float32 (Z, Y, X) 0-1, once made (uncertainty_map)
    uncertainty: Optional[np.ndarray] = None

    @property
    def tissues(self) -> Tuple[labels.Tissue, ...]:
        return labels.class_tissues(self.num_classes)

    @property
    def unsure(self) -> bool:
        """Whether the confidence figure falls where cross-validation saw poor results (uncertainty.unsure)."""
        return uncertainty.unsure(self.confidence)

    def uncertainty_map(self) -> np.ndarray:
        """The entropy map of the probabilities the labels came from (an ensemble's: its members' mean),
        made once and kept; slices screening skipped are background there, entropy 0."""
        if self.uncertainty is None:
            if self.probabilities is None:
                raise ValueError("no uncertainty map: the probabilities were not kept")
            self.uncertainty = uncertainty.entropy_map(self.probabilities)
        return self.uncertainty


#: Inputs named in a provenance record: {sequence: file or DICOM series folder} (hashed), or
#: {sequence: a name} for inputs that are no file (a Slicer volume node).
Inputs = Mapping[str, Union[Path, str]]


class Segmenter:
    """The model, its prepared copy and the resolved options of one set of SegmentationOptions, for
    every case segmented with them; one case at a time (a second caller waits)."""

    def __init__(self, options: SegmentationOptions = SegmentationOptions()):
        self.options = options
        self.model_name = options.model or registry.default_model()
        self.weights_path = Path(options.weights_path) if options.weights_path else \
            registry.get(self.model_name).weights_path
        self.model, self.card = weights.load(self.model_name, self.weights_path)  # refuses a checksum mismatch
        self.weights_sha256: str = self.card["sha256"]
        self.rule = cleanup_rule(options, self.card)
        self.screen_step = _screen_step(options.screen, self.rule)
        self.preprocessing = PreprocessingConfig.of_model(self.card, options.preprocessing)
        # the runner also sets up the allocator (allocator.py), before any case's preprocessing
        self.runner = cascade.runner_for(self.model, inference.resolve_device(options.device), options.fast,
                                         inference.DEFAULT_MEMORY_BUDGET, None, options.precision, options.two_stage)
        self._lock = threading.Lock()

    @property
    def precision(self) -> str:
        """The direct convolutions' arithmetic ("auto" resolved on the device in use)."""
        return self.runner.precision

    def segment(self, images: np.ndarray, geometry: Geometry, progress: Optional[Progress] = None,
                cancel: Optional[Callable[[], bool]] = None, inputs: Optional[Inputs] = None) -> Segmentation:
        """Segment a raw (4, Z, Y, X) volume (T1, T1c, T2, FLAIR) on `geometry`'s grid; `inputs` names
        where the images came from, for the provenance record.  Raises inference.Cancelled when
        `cancel()` turns true."""
        report = progress or (lambda fraction, message: None)
        mode = self.options.brain_extraction
        with self._lock:
            if mode != "off":
                report(0.01, "checking for a skull" if mode == "auto" else "brain extraction")
            images, extraction = brain_extraction.prepare(images, geometry, mode, self.options.device)
            _check_cancel(cancel)
            if self.options.through_plane:
                images = through_plane_average(images, brain_mask(images), geometry.spacing[2])
            report(0.02, "preprocessing (clipping, N4 bias correction, normalisation)")
            pre = preprocess(images, self.preprocessing, spacing=geometry.spacing)
            _check_cancel(cancel)
            result = run_preprocessed(self.runner, self.model_name, self.card, pre.images, pre.brain_mask,
                                      geometry.spacing, self.options, progress=lambda f, m: report(0.1 + 0.9 * f, m),
                                      cancel=cancel)
            result.confidence = uncertainty.confidence(result.probabilities, result.labels, pre.brain_mask,
                                                       geometry.spacing)
        result.extraction = extraction
        result.provenance = {**self.provenance(extraction, inputs),
                             "confidence": {"expected_dice": dict(result.confidence)}}
        return result

    def provenance(self, extraction: Optional[brain_extraction.ExtractionReport] = None,
                   inputs: Optional[Inputs] = None) -> Dict[str, object]:
        """How a result of this segmenter was made: software, model and weights' SHA-256, the options as
        they ran, the inputs (files with their SHA-256) and the time (UTC).  JSON-ready."""
        options = self.options
        return {
            "software": {"name": "BrainTumorCNN", "version": __version__, "torch": torch.__version__},
            "model": {"name": self.model_name, "weights_file": self.weights_path.name,
                      "weights_sha256": self.weights_sha256},
            "options": {
                "device": self.runner.device.type, "precision": self.precision, "precision_asked": options.precision,
                "fast": options.fast, "flips": options.flips, "through_plane": options.through_plane,
                "two_stage": cascade.runs_two_stages(self.runner),
                "screening": {"on": self.screen_step > 1, "step": self.screen_step},
                "brain_extraction": {"mode": options.brain_extraction,
                                     "extracted": bool(extraction.extracted) if extraction else None},
                "preprocessing": _jsonable(asdict(self.preprocessing)),
                "cleanup": _jsonable(asdict(self.rule)) if self.rule is not None else None,
            },
            "inputs": [_describe_input(sequence, source) for sequence, source in (inputs or {}).items()],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }


def run_preprocessed(runner: cascade.Engine, name: str, card: dict, volume: np.ndarray, brain: np.ndarray,
                     spacing: Tuple[float, float, float], options: SegmentationOptions,
                     progress: Optional[Progress] = None,
                     cancel: Optional[Callable[[], bool]] = None) -> Segmentation:
    """Dense inference by `runner` (averaged over a left-right flip when `options.flips`) and cleanup of a
    preprocessed volume: the Segmenter's work after preprocessing, and cross-validation's
    (pipeline.segment_preprocessed)."""
    report = progress or (lambda fraction, message: None)
    rule = cleanup_rule(options, card)
    result = runner.segment(volume, brain, flips=options.flips, screen_step=_screen_step(options.screen, rule),
                            cancel=cancel, progress=lambda f, m: report(0.95 * f, m))
    out_labels = result.labels
    cleanup_report = None
    if rule is not None:
        report(0.96, "removing small, flat" + (" and distant" if rule.max_distance_mm is not None else "")
               + " components" + (", growing the edema" if rule.edema_flair_share is not None else ""))
        out_labels, cleanup_report = postprocess(out_labels, spacing, rule, volume[MODALITIES.index("FLAIR")], brain)
    report(1.0, "done")
    return Segmentation(out_labels, result.probabilities, int(runner.model.num_classes), name, card, cleanup_report)


_shared: Dict[str, object] = {}
_shared_lock = threading.Lock()


def shared(options: SegmentationOptions) -> Segmenter:
    """This process's Segmenter for `options`: the last one built when the options and the weights file
    (path, size, time) are the same, else a new one in its place (the page's jobs and the Slicer
    module's runs reuse it instead of reloading and preparing the model for every case)."""
    name = options.model or registry.default_model()
    path = Path(options.weights_path) if options.weights_path else registry.get(name).weights_path
    stat = path.stat() if path.is_file() else None
    key = (repr(options), name, str(path.resolve()), stat and (stat.st_size, stat.st_mtime_ns))
    with _shared_lock:
        if _shared.get("key") != key:
            _shared.clear()  # the old model is released before the new one loads
            _shared.update(key=key, segmenter=Segmenter(options))
        return _shared["segmenter"]


def cleanup_rule(options: SegmentationOptions, card: dict) -> Optional[CleanupConfig]:
    """The cleanup these options give with this model: theirs, plus what the model's card carries
    (CleanupConfig.of_model): its rule comparing components when `options.model_cleanup`, its edema growth
    when `options.edema_growth`; None without cleanup."""
    if options.cleanup is None:
        return None
    chosen = (card.get("cleanup") or {}).items()
    fields = ((CleanupConfig.COMPONENT_FIELDS if options.model_cleanup else ())
              + (CleanupConfig.GROWTH_FIELDS if options.edema_growth else ()))
    return CleanupConfig.of_model({"cleanup": {k: v for k, v in chosen if k in fields}}, options.cleanup)


def screen_step(options: SegmentationOptions, card: Optional[dict] = None) -> int:
    """inference.segment_volume's screen_step for these options and model: as many unrun slices as its
    cleanup removes anyway (CleanupConfig.unseen_span), 1 (every slice) without screening or cleanup."""
    return _screen_step(options.screen, cleanup_rule(options, card or {}))


def _screen_step(screen: bool, rule: Optional[CleanupConfig]) -> int:
    return 1 + rule.unseen_span() if screen and rule is not None else 1


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (a DICOM series: each one's relative name and contents,
    in sorted order)."""
    path = Path(path)
    if path.is_file():
        return weights.sha256(path)
    digest = hashlib.sha256()
    for member in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(member.relative_to(path).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(weights.sha256(member)))
    return digest.hexdigest()


def _describe_input(sequence: str, source: Union[Path, str]) -> Dict[str, str]:
    if isinstance(source, Path) and source.exists():
        return {"sequence": sequence, "path": str(source.resolve()), "sha256": file_sha256(source)}
    return {"sequence": sequence, "name": str(source)}


def _jsonable(value):
    """Tuples as lists, so a record reads back equal to what was written."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _check_cancel(cancel: Optional[Callable[[], bool]]) -> None:
    if cancel is not None and cancel():
        raise inference.Cancelled()
