"""A segmented case's output files, named and written as `braintumorcnn segment` writes them (and the
web page's downloads, the demo and the cluster runs name them).

Per case: `<case>.seg.nrrd` (a Slicer segmentation, mrml.py, its header holding how it was made),
`<case>.json` (how it was made: the Segmenter's provenance record, provenance.py), `<case>_labels.nii.gz` on the input
grid (BraTS 2017-2021 values for 4-class models, the paper's 0-4 for 5-class models; reading/io.py
writes it), `<case>_preview.png` (preview.py) and, for DICOM input, `<case>.seg.dcm` (a DICOM SEG
against the T1c series, dicom_seg.py), and when asked `<case>_uncertainty.nii.gz` (the entropy map of the
probabilities, float32 0-1 on the input grid: running/uncertainty.py).  They are written to temporary names and moved into place
together once all are written, the label map last (its presence marks the case finished), so a case
that fails leaves none of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..atomic import atomic_paths
from ..reading import io
from ..reading.geometry import Geometry
from . import dicom_seg, mrml, preview, provenance as provenance_record


def output_paths(output: Path, case: str) -> Dict[str, Path]:
    """The files every case gets, in the order they are moved into place: the label map,
    which marks the case finished, last (a DICOM case also gets dicom_seg_path's)."""
    return {"segmentation": output / f"{case}.seg.nrrd", "preview": output / f"{case}_preview.png",
            "provenance": output / f"{case}.json", "labels": output / f"{case}_labels.nii.gz"}


def dicom_seg_path(output: Path, case: str) -> Path:
    return output / f"{case}.seg.dcm"


def uncertainty_path(output: Path, case: str) -> Path:
    return output / f"{case}_uncertainty.nii.gz"


def finished(paths: Dict[str, Path]) -> bool:
    """Whether a case's outputs are all there (a rerun skips it)."""
    return all(p.is_file() for p in paths.values())


def preview_title(case: str, model_name: str, dice: Optional[Mapping[str, float]] = None) -> str:
    """The preview's title: the case, the model and, when the case has ground truth, the Dice of each
    region against it ({region: Dice})."""
    title = f"{case}: {model_name}"
    if dice:
        title += " - Dice " + ", ".join(f"{region} {value:.2f}" for region, value in dice.items())
    return title


def write_outputs(output: Path, case: str, labels: np.ndarray, geometry: Geometry, num_classes: int,
                  images: Sequence[np.ndarray], title: str, provenance: Mapping, truth: Optional[np.ndarray] = None,
                  segmentation=None, uncertainty: Optional[np.ndarray] = None) -> Dict[str, Path]:
    """Write all of a case's outputs into `output`, or (on an error) none of them.

    labels: (slices, H, W) internal label values on `geometry`; images: the four sequences on the
    same grid (the preview's background); provenance: how the labels were made (a Segmenter's record),
    written as `<case>.json` and into the `.seg.nrrd` header; truth: the reference labels, outlined in the preview;
    segmentation: a DICOM SEG made by dicom_seg.make_dicom_seg, written as `<case>.seg.dcm`; uncertainty:
    the entropy map (Segmentation.uncertainty_map), written as `<case>_uncertainty.nii.gz`."""
    paths = output_paths(output, case)
    if segmentation is not None:
        paths = {"dicom_seg": dicom_seg_path(output, case), **paths}
    if uncertainty is not None:
        paths = {"uncertainty": uncertainty_path(output, case), **paths}
    with atomic_paths(list(paths.values())) as temporaries:
        tmp = dict(zip(paths, temporaries))
        mrml.write_segmentation_file(labels, geometry, num_classes, tmp["segmentation"], provenance)
        provenance_record.write_json(tmp["provenance"], provenance)
        preview.write_preview(images, labels, tmp["preview"], num_classes, title=title, geometry=geometry,
                              truth=truth)
        if segmentation is not None:
            dicom_seg.write_dicom_seg(segmentation, tmp["dicom_seg"])
        if uncertainty is not None:
            io.write_map(uncertainty.astype(np.float32, copy=False), geometry, tmp["uncertainty"])
        io.write_labels(labels, geometry, tmp["labels"])
    return paths
