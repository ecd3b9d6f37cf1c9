"""DICOM SEG output: the segmentation as a DICOM object a PACS and a DICOM
viewer take, beside the `.seg.nrrd` and the label map, when the input was DICOM.

It is written on the T1c series' own grid (one frame per T1c slice, the label
map being on that grid already), references the T1c series and its instances
(so a viewer shows it over the T1c), belongs to the T1c's study and patient,
and carries one segment per tissue of the model, named, coloured and coded as
the Slicer segments are (labels.py).  highdicom writes it (an optional
dependency: the `dicom` extra); BINARY segmentation type, which every DICOM SEG
reader knows (the newer LABELMAP type is not yet read by all).

A T1c series whose headers cannot carry a SEG (no Frame of Reference UID, say)
gets none: NoDicomSeg names the series and what it lacks, checked from its
header before the segmentation (check_source) and by highdicom when the SEG is
made; the case's other outputs do not depend on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from .. import __version__
from .. import labels as label_table
from ..atomic import atomic_path
from ..reading.dicom import Series

PathLike = Union[str, Path]
SERIES_NUMBER = 300  # the series number of the SEG in the study (scanners number their series below 100)
SERIES_DESCRIPTION = "BrainTumorCNN tumor segmentation"
#: What a SEG takes from the series it segments: it joins that series' study and frame of reference
#: and references the series and each of its instances.
SOURCE_UIDS = ("StudyInstanceUID", "FrameOfReferenceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")


class NoDicomSeg(ValueError):
    """A series no DICOM SEG can be made against; names the series and what it lacks."""


def require():
    """highdicom and pydicom, or ImportError saying how to install them."""
    try:
        import highdicom
        import pydicom
    except ImportError as exc:
        raise ImportError(f"writing a DICOM SEG needs highdicom and pydicom ({exc}); install them with "
                          "pip install 'braintumorcnn[dicom]'") from None
    return highdicom, pydicom


def segment_descriptions(num_classes: int, model_name: str) -> list:
    """One highdicom SegmentDescription per tissue of a `num_classes` model,
    numbered 1.. in class order (segment number = network class index)."""
    hd, _ = require()
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(name=model_name, family=codes.cid7162.ArtificialIntelligence,
                                                   version=__version__, source="BrainTumorCNN")
    return [hd.seg.SegmentDescription(
        segment_number=number, segment_label=tissue.name,
        segmented_property_category=hd.sr.CodedConcept(tissue.category[0], tissue.category[1], tissue.category[2]),
        segmented_property_type=hd.sr.CodedConcept(tissue.type[0], tissue.type[1], tissue.type[2]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        tracking_id=tissue.key, tracking_uid=hd.UID(),
        display_color=hd.color.CIELabColor.from_rgb(*(255 * c for c in tissue.color)))
        for number, tissue in enumerate(label_table.class_tissues(num_classes), start=1)]


def check_source(series: Series) -> None:
    """NoDicomSeg, naming the series and the attribute, when the header of
    its first file lacks one of SOURCE_UIDS; reads no pixels."""
    _, pydicom = require()
    header = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    missing = [f"{keyword} {pydicom.tag.Tag(pydicom.datadict.tag_for_keyword(keyword))}"
               for keyword in SOURCE_UIDS if not str(header.get(keyword, "")).strip()]
    if missing:
        raise NoDicomSeg(f"the T1c {series} has no {', no '.join(missing)}, which a DICOM SEG takes from the "
                         "series it segments")


def make_dicom_seg(labels: np.ndarray, num_classes: int, model_name: str, series: Series):
    """An internal label map (Z, Y, X) on the grid of the DICOM `series` (its
    files one per slice, in the order the series was read) as a highdicom
    Segmentation, in memory; NoDicomSeg when highdicom refuses the series'
    headers, ValueError when the label map is on another grid."""
    hd, pydicom = require()
    sources = [pydicom.dcmread(str(f)) for f in series.files]
    frames = sum(int(getattr(s, "NumberOfFrames", 1)) for s in sources)
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    if labels.shape != (frames, rows, columns):
        raise ValueError(f"the label map {labels.shape} is not on the grid of the DICOM series it is written "
                         f"against, {series} ({frames} slices of {rows} x {columns})")
    pixels = label_table.labels_to_classes(labels, num_classes)
    try:
        return hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(num_classes, model_name),
            series_instance_uid=hd.UID(), series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="BrainTumorCNN", manufacturer_model_name=model_name, software_versions=__version__,
            device_serial_number="none", series_description=SERIES_DESCRIPTION,
            content_description="Brain tumor tissues, segmented automatically; research use only")
    except (ValueError, AttributeError) as exc:  # highdicom's checks of the source headers
        raise NoDicomSeg(f"no DICOM SEG can be made against the T1c {series}: {exc}") from None


def write_dicom_seg(segmentation, path: PathLike) -> Path:
    """Save a Segmentation of make_dicom_seg at `path`, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        segmentation.save_as(str(tmp))
    return path
