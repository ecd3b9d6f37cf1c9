"""One case from its files to its output files, as `braintumorcnn segment`
runs it on this machine (batch.py) or on a cluster's worker (cluster.py).

Per case: `<case>.seg.nrrd` (a Slicer segmentation), `<case>_labels.nii.gz` on
the input grid (BraTS 2017-2021 values for 4-class models, the paper's 0-4 for
5-class models) and `<case>_preview.png`; for DICOM input also `<case>.seg.dcm`
(a DICOM SEG against the T1c series, dicom_seg.py).  A DICOM SEG that cannot be
made (highdicom missing, a T1c series without a Frame of Reference UID) is
reported and the case delivered without it.  The outputs are written to
temporary names and moved into place together once all are written, the label
map last (its presence marks the case finished), so a case that fails leaves
none of them.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

from ..atomic import atomic_paths
from ..reading import io
from ..running import cases, pipeline
from ..scoring import metrics
from . import dicom_seg, mrml, preview
from .progress import ProgressLine

Source = Union[Path, Dict[str, Path]]


@dataclass
class Delivered:
    """What run_case delivered: the metrics row when truth is known, and why an output is missing."""

    row: Optional[dict] = None
    missing: List[str] = field(default_factory=list)  # a line per output not written (a DICOM SEG) and why


def output_paths(output: Path, case: str) -> Dict[str, Path]:
    """The files every case gets, in the order they are moved into place: the label map,
    which marks the case finished, last (a DICOM case also gets dicom_seg_path's)."""
    return {"segmentation": output / f"{case}.seg.nrrd", "preview": output / f"{case}_preview.png",
            "labels": output / f"{case}_labels.nii.gz"}


def dicom_seg_path(output: Path, case: str) -> Path:
    return output / f"{case}.seg.dcm"


def finished(paths: Dict[str, Path]) -> bool:
    """Whether a case's outputs are all there (a rerun skips it)."""
    return all(p.is_file() for p in paths.values())


def metrics_row(name: str, predicted, case: io.Case) -> dict:
    scores = metrics.evaluate_case(predicted, case.truth, case.geometry.spacing, case.scheme.regions)
    return {"case": name, **scores.as_row()}


def run_case(name: str, source: Source, output: Path, options: pipeline.SegmentationOptions,
             truth: Optional[Path], resample: bool, register: Optional[bool] = None) -> Delivered:
    """Segment one case and write its outputs, all of them or (on an error) none."""
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
    result = pipeline.segment(case.images, case.geometry, options, progress=progress)
    progress.finish(f"segmented in {time.time() - started:.1f} s with {result.model_name}")
    if result.extraction.mode != "off":
        print(f"  {result.extraction.summary()}", flush=True)
    delivered.row = metrics_row(name, result.labels, case) if case.truth is not None else None
    title = f"{name}: {result.model_name}"
    if delivered.row:
        title += " - Dice " + ", ".join(f"{region} {delivered.row[f'dice_{region}']:.2f}"
                                        for region in case.scheme.regions)
    segmentation = None
    if dicom_reference is not None:
        try:
            segmentation = dicom_seg.make_dicom_seg(result.labels, result.num_classes, result.model_name,
                                                    dicom_reference)
        except dicom_seg.NoDicomSeg as exc:
            _missing(delivered, exc)
    paths = output_paths(output, name)
    if segmentation is not None:
        paths = {"dicom_seg": dicom_seg_path(output, name), **paths}
    with atomic_paths(list(paths.values())) as temporaries:
        tmp = dict(zip(paths, temporaries))
        mrml.write_segmentation_file(result.labels, case.geometry, result.num_classes, tmp["segmentation"])
        preview.write_preview(case.images, result.labels, tmp["preview"], result.num_classes, title=title,
                              geometry=case.geometry, truth=case.truth)
        if segmentation is not None:
            dicom_seg.write_dicom_seg(segmentation, tmp["dicom_seg"])
        io.write_labels(result.labels, case.geometry, tmp["labels"])
    return delivered


def _missing(delivered: Delivered, reason: Exception) -> None:
    line = f"no DICOM SEG: {reason}; the other outputs are written"
    delivered.missing.append(line)
    print(f"  {line}", file=sys.stderr, flush=True)
