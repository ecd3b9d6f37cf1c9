"""The files a session downloads, written by the writers `braintumorcnn segment` uses and named as
it names them (outputs.output_paths), from the segmentation as edited in the page."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional

import numpy as np

from .... import labels as label_table
from ....reading import io
from ....scoring import metrics
from ....writing import dicom_seg, mrml, outputs, preview

#: What the page offers: kind -> (button text, MIME type).
KINDS = {
    "segmentation": ("Segmentation (.seg.nrrd)", "application/octet-stream"),
    "labels": ("Label map (.nii.gz)", "application/gzip"),
    "preview": ("Preview (.png)", "image/png"),
    "dicom_seg": ("DICOM SEG (.seg.dcm)", "application/dicom"),
}


def dice(case: io.Case, labels: np.ndarray) -> Optional[Dict[str, float]]:
    """{region: Dice} of `labels` against the case's ground truth, as `segment` scores it; None without truth."""
    if case.truth is None:
        return None
    scores = metrics.evaluate_case(labels, case.truth, case.geometry.spacing, case.scheme.regions).as_row()
    return {region: scores[f"dice_{region}"] for region in case.scheme.regions}


def quick_dice(case: io.Case, labels: np.ndarray) -> Optional[Dict[str, float]]:
    """{region: Dice} against the case's ground truth, Dice alone (no surface distances), fast enough to
    follow every edit; the same numbers as `dice`."""
    if case.truth is None:
        return None
    scores = {}
    for region in case.scheme.regions:
        scores[region] = metrics.dice_of(*metrics.overlap(label_table.region_mask(labels, region),
                                                          label_table.region_mask(case.truth, region)))
    return scores


def write_segmentation(node, folder: Path, case: io.Case, provenance: Optional[Mapping] = None) -> Path:
    """The `.seg.nrrd` download: the page's segmentation node as it stands, every segment as named
    (those the reader added too, which the label map leaves out), with how the result was made."""
    return mrml.write_segmentation_node(node, outputs.output_paths(folder, case.name)["segmentation"],
                                        provenance or None)


def write(kind: str, folder: Path, case: io.Case, labels: np.ndarray, num_classes: int, model_name: str) -> Path:
    """Write one download of `case`'s `labels` (internal values, on its grid) into `folder`."""
    paths = outputs.output_paths(folder, case.name)
    if kind == "segmentation":
        return mrml.write_segmentation_file(labels, case.geometry, num_classes, paths["segmentation"])
    if kind == "labels":
        return io.write_labels(labels, case.geometry, paths["labels"])
    if kind == "preview":
        title = outputs.preview_title(case.name, model_name, dice(case, labels))
        return preview.write_preview(case.images, labels, paths["preview"], num_classes, title=title,
                                     geometry=case.geometry, truth=case.truth)
    if kind == "dicom_seg":
        reference = case.series.get("T1c")
        if reference is None:
            raise ValueError(f"{case.name}: a DICOM SEG is made only for DICOM input (this case was read from files)")
        segmentation = dicom_seg.make_dicom_seg(labels, num_classes, model_name, reference)  # NoDicomSeg: why not
        return dicom_seg.write_dicom_seg(segmentation, outputs.dicom_seg_path(folder, case.name))
    raise ValueError(f"unknown download {kind!r}; one of {', '.join(KINDS)}")
