"""One case from its files to its output files, as `braintumorcnn segment`
runs it on this machine (batch.py) or on a cluster's worker (cluster.py): read
and prepared (running/cases.py), segmented by the run's Segmenter
(running/segmenter.py, built once for every case) and written
(writing/outputs.py: `<case>.seg.nrrd`, `<case>.json` (how it was made),
`<case>_labels.nii.gz`, `<case>_preview.png`, `<case>.seg.dcm` for DICOM
input and `<case>_uncertainty.nii.gz` when asked, all or none).  Its volumes and
confidence figure (the expected Dice per region, running/uncertainty.py) are
printed, and the figure goes into its metrics row, with a warning when the model
is unsure of the result.  A
DICOM SEG that cannot be made (highdicom missing, a T1c series without a Frame
of Reference UID) is reported and the case delivered without it.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

from ..modalities import MODALITIES
from ..reading import io
from .. import labels
from ..running import cases, pipeline, segmenter as segmenters, uncertainty as doubt
from ..scoring import metrics
from ..writing import dicom_seg, mrml
from ..writing.outputs import preview_title, write_outputs
from .progress import ProgressLine

Source = Union[Path, Dict[str, Path]]


@dataclass
class Delivered:
    """What run_case delivered: the metrics row (the confidence figure, and the scores when truth is
    known), and why an output is missing."""

    row: Optional[dict] = None
    missing: List[str] = field(default_factory=list)  # a line per output not written (a DICOM SEG) and why


def metrics_row(name: str, predicted, case: io.Case) -> dict:
    scores = metrics.evaluate_case(predicted, case.truth, case.geometry.spacing, case.scheme.regions)
    return {"case": name, **scores.as_row()}


def confidence_row(figure: Mapping[str, float]) -> Dict[str, float]:
    """metrics.csv's columns of a confidence figure: expected_dice_<region>."""
    return {f"expected_dice_{region}": value for region, value in figure.items()}


def recorded_confidence(provenance_file: Path) -> Dict[str, float]:
    """The confidence figure a case's `<case>.json` holds ({} for results made before it was recorded)."""
    record = json.loads(Path(provenance_file).read_text(encoding="utf-8"))
    return dict(record.get("confidence", {}).get("expected_dice", {}))


def describe_result(label_map, geometry, num_classes: int, figure: Mapping[str, float]) -> List[str]:
    """The lines `segment` prints of a result: each region's volume (mL), the confidence figure and, when the
    model is unsure (uncertainty.unsure), the warning."""
    volumes = mrml.tumor_volumes_ml(label_map, geometry, num_classes)
    lines = ["volumes (mL): " + ", ".join(f"{labels.REGION_NAMES[r]} {volumes[f'{r} tumor']:.2f}"
                                          for r in labels.REGIONS),
             "confidence (the Dice the model expects of its labels): "
             + ", ".join(f"{labels.REGION_NAMES[r]} {v:.2f}" for r, v in figure.items())]
    return lines + ([f"WARNING: {doubt.UNSURE}"] if doubt.unsure(dict(figure)) else [])


def finished_row(name: str, provenance_file: Path, predicted, case: io.Case) -> dict:
    """The metrics row of a case segmented by an earlier run: its recorded confidence figure, and its
    scores when it has truth."""
    return {"case": name, **confidence_row(recorded_confidence(provenance_file)),
            **(metrics_row(name, predicted, case) if case.truth is not None else {})}


def dice_of(row: Optional[dict], regions) -> Optional[Dict[str, float]]:
    """{region: Dice} of a metrics row (metrics_row), None without one."""
    return {region: row[f"dice_{region}"] for region in regions} if row else None


def run_case(name: str, source: Source, output: Path,
             segmenter: Union[segmenters.Segmenter, pipeline.SegmentationOptions],
             truth: Optional[Path], resample: bool, register: Optional[bool] = None,
             uncertainty: bool = False) -> Delivered:
    """Segment one case with `segmenter` (or this process's Segmenter for these options:
    segmenter.shared) and write its outputs, all of them or (on an error) none; `uncertainty`: also
    the entropy map."""
    if not isinstance(segmenter, segmenters.Segmenter):
        segmenter = segmenters.shared(segmenter)
    case = cases.read_case(source, truth=truth, resample=resample, register=register, name=name)
    for step in case.preparation:  # what was done to put the sequences on the T1c grid
        print(f"  {step.describe()}")
        if step.sequence in case.registrations:
            print(f"    {case.registrations[step.sequence].summary()}")
    delivered = Delivered()
    dicom_reference = case.series.get("T1c")
    if dicom_reference is not None:
        try:
            dicom_seg.require()
            dicom_seg.check_source(dicom_reference)  # before minutes of work
        except (ImportError, dicom_seg.NoDicomSeg) as exc:
            _missing(delivered, exc)
            dicom_reference = None
    started = time.time()
    progress = ProgressLine()
    inputs = {m: case.files[m] for m in MODALITIES if m in case.files}  # the truth file is no input
    result = segmenter.segment(case.images, case.geometry, progress=progress, inputs=inputs)
    progress.finish(f"segmented in {time.time() - started:.1f} s with {result.model_name}")
    if result.extraction.mode != "off":
        print(f"  {result.extraction.summary()}", flush=True)
    for line in describe_result(result.labels, case.geometry, result.num_classes, result.confidence):
        print(f"  {line}", flush=True)
    delivered.row = {"case": name, **confidence_row(result.confidence),
                     **(metrics_row(name, result.labels, case) if case.truth is not None else {})}
    title = preview_title(name, result.model_name,
                          dice_of(delivered.row, case.scheme.regions) if case.truth is not None else None)  # no truth: no scheme
    segmentation = None
    if dicom_reference is not None:
        try:
            segmentation = dicom_seg.make_dicom_seg(result.labels, result.num_classes, result.model_name,
                                                    dicom_reference)
        except dicom_seg.NoDicomSeg as exc:
            _missing(delivered, exc)
    write_outputs(output, name, result.labels, case.geometry, result.num_classes, case.images, title,
                  result.provenance, truth=case.truth, segmentation=segmentation,
                  uncertainty=result.uncertainty_map() if uncertainty else None)
    return delivered


def _missing(delivered: Delivered, reason: Exception) -> None:
    line = f"no DICOM SEG: {reason}; the other outputs are written"
    delivered.missing.append(line)
    print(f"  {line}", file=sys.stderr, flush=True)
