"""One case from its files to its output files, as `braintumorcnn segment`
runs it on this machine (batch.py) or on a cluster's worker (cluster.py): read
and prepared (running/cases.py), segmented by the run's Segmenter
(running/segmenter.py, built once for every case) and written
(writing/outputs.py: `<case>.seg.nrrd`, `<case>.json` (how it was made),
`<case>_labels.nii.gz`, `<case>_preview.png`, and `<case>.seg.dcm` for DICOM
input, all or none).  A
DICOM SEG that cannot be made (highdicom missing, a T1c series without a Frame
of Reference UID) is reported and the case delivered without it.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

from ..modalities import MODALITIES
from ..reading import io
from ..running import cases, pipeline, segmenter as segmenters
from ..scoring import metrics
from ..writing import dicom_seg
from ..writing.outputs import preview_title, write_outputs
from .progress import ProgressLine

Source = Union[Path, Dict[str, Path]]


@dataclass
class Delivered:
    """What run_case delivered: the metrics row when truth is known, and why an output is missing."""

    row: Optional[dict] = None
    missing: List[str] = field(default_factory=list)  # a line per output not written (a DICOM SEG) and why


def metrics_row(name: str, predicted, case: io.Case) -> dict:
    scores = metrics.evaluate_case(predicted, case.truth, case.geometry.spacing, case.scheme.regions)
    return {"case": name, **scores.as_row()}


def dice_of(row: Optional[dict], regions) -> Optional[Dict[str, float]]:
    """{region: Dice} of a metrics row (metrics_row), None without one."""
    return {region: row[f"dice_{region}"] for region in regions} if row else None


def run_case(name: str, source: Source, output: Path,
             segmenter: Union[segmenters.Segmenter, pipeline.SegmentationOptions],
             truth: Optional[Path], resample: bool, register: Optional[bool] = None) -> Delivered:
    """Segment one case with `segmenter` (or this process's Segmenter for these options:
    segmenter.shared) and write its outputs, all of them or (on an error) none."""
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
    delivered.row = metrics_row(name, result.labels, case) if case.truth is not None else None
    title = preview_title(name, result.model_name,
                          dice_of(delivered.row, case.scheme.regions) if delivered.row else None)  # no truth: no scheme
    segmentation = None
    if dicom_reference is not None:
        try:
            segmentation = dicom_seg.make_dicom_seg(result.labels, result.num_classes, result.model_name,
                                                    dicom_reference)
        except dicom_seg.NoDicomSeg as exc:
            _missing(delivered, exc)
    write_outputs(output, name, result.labels, case.geometry, result.num_classes, case.images, title,
                  result.provenance, truth=case.truth, segmentation=segmentation)
    return delivered


def _missing(delivered: Delivered, reason: Exception) -> None:
    line = f"no DICOM SEG: {reason}; the other outputs are written"
    delivered.missing.append(line)
    print(f"  {line}", file=sys.stderr, flush=True)
