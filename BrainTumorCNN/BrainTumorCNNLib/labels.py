"""The one table of tumor labels: tissues, file label schemes, evaluation regions.

Internal label values are the paper's BRATS 2013 values (0 non-tumor,
1 necrosis, 2 edema, 3 non-enhancing tumor, 4 enhancing tumor).  BraTS
2017-2021 data merges necrosis and non-enhancing tumor into one class
(NCR/NET) stored as 1; we keep it as 1 so a label map of a 4-class model is
already in the BraTS 2017-2021 file scheme (0/1/2/4) and one of a 5-class
model in the paper's scheme (0-4).  The evaluation regions are unaffected.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

import numpy as np


@dataclass(frozen=True)
class Tissue:
    """A segment a model can output, with what Slicer needs to show and export it."""

    key: str
    value: int  # internal label value (paper / BraTS 2017-2021 file value)
    name: str
    color: Tuple[float, float, float]  # RGB in [0, 1]
    # DICOM coded terminology (SNOMED CT): (code value, scheme, meaning); the same in the Slicer segments
    # and the DICOM SEG (dicom_seg.py).  Category from DICOM PS3.16 CID 7150 Segmentation Property Category,
    # types from CID 7159 Lesion Segmentation Type; meanings as Slicer's General Anatomy terminology
    # spells them, so Slicer matches its own entries.
    category: Tuple[str, str, str]
    type: Tuple[str, str, str]


_MORPH = ("49755003", "SCT", "Morphologically Altered Structure")

TISSUES: Dict[str, Tissue] = {
    t.key: t
    for t in (
        Tissue("necrosis", 1, "Necrosis", (0.80, 0.20, 0.20), _MORPH, ("6574001", "SCT", "Necrosis")),
        Tissue("ncr_net", 1, "Necrotic/non-enhancing tumor core", (0.80, 0.20, 0.20), _MORPH,
               ("6574001", "SCT", "Necrosis")),
        Tissue("edema", 2, "Edema", (0.20, 0.75, 0.25), _MORPH, ("79654002", "SCT", "Edema")),
        Tissue("non_enhancing", 3, "Non-enhancing tumor", (0.95, 0.85, 0.20), _MORPH,
               ("108369006", "SCT", "Neoplasm")),
        Tissue("enhancing", 4, "Enhancing tumor", (0.95, 0.55, 0.10), _MORPH,
               ("108369006", "SCT", "Neoplasm")),
    )
}

TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def terminology_entry(tissue: Tissue) -> str:
    """Slicer's terminology tag of a tissue (category and type as DICOM codes),
    so the Segment Editor and DICOM SEG export recognise the segment."""
    code = lambda c: f"{c[1]}^{c[0]}^{c[2]}"  # noqa: E731 - scheme^value^meaning
    return f"{TERMINOLOGY_CONTEXT}~{code(tissue.category)}~{code(tissue.type)}~^^~{ANATOMIC_CONTEXT}~^^~^^"


#: Output classes of a network, by number of classes: class index -> tissue key
#: (index 0 is always background).
CLASS_TISSUES: Dict[int, Tuple[str, ...]] = {
    5: ("background", "necrosis", "edema", "non_enhancing", "enhancing"),
    4: ("background", "ncr_net", "edema", "enhancing"),
}


def class_values(num_classes: int) -> np.ndarray:
    """Internal label value of each network class, shape (num_classes,), uint8."""
    keys = _class_keys(num_classes)
    return np.array([0] + [TISSUES[k].value for k in keys[1:]], dtype=np.uint8)


def class_tissues(num_classes: int) -> Tuple[Tissue, ...]:
    """The tissues (without background) a `num_classes` network outputs."""
    return tuple(TISSUES[k] for k in _class_keys(num_classes)[1:])


def labels_to_classes(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Map internal label values to class indices of a `num_classes` network (uint8).

    For 4 classes, necrosis (1) and non-enhancing (3) both become NCR/NET.
    """
    lut = np.zeros(256, dtype=np.uint8)
    if num_classes == 4:
        lut[[1, 2, 3, 4]] = [1, 2, 1, 3]
    else:
        _class_keys(num_classes)
        lut[[1, 2, 3, 4]] = [1, 2, 3, 4]
    return lut[labels.astype(np.uint8)]


def _class_keys(num_classes: int) -> Tuple[str, ...]:
    try:
        return CLASS_TISSUES[num_classes]
    except KeyError:
        raise ValueError(f"num_classes must be one of {sorted(CLASS_TISSUES)}, not {num_classes}") from None


# --- Evaluation regions -----------------------------------------------------

REGIONS: Dict[str, Tuple[int, ...]] = {
    "complete": (1, 2, 3, 4),
    "core": (1, 3, 4),
    "enhancing": (4,),
}


def class_regions(num_classes: int) -> np.ndarray:
    """bool (len(REGIONS), num_classes): which of a network's classes each evaluation region holds."""
    values = class_values(num_classes)
    return np.array([np.isin(values, members) for members in REGIONS.values()])


#: What readers call the regions (BraTS: whole tumor, tumor core, enhancing tumor).
REGION_NAMES: Dict[str, str] = {"complete": "whole tumor", "core": "tumor core", "enhancing": "enhancing tumor"}


def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of an evaluation region in an internal label map."""
    return np.isin(labels, REGIONS[region])


# --- Label schemes of files -------------------------------------------------

@dataclass(frozen=True)
class LabelScheme:
    """How one data release stores labels, and which regions its labels define."""

    name: str
    to_internal: Mapping[int, int]  # file value -> internal value
    regions: Tuple[str, ...] = tuple(REGIONS)

    def convert(self, labels: np.ndarray, source: str = "label map") -> np.ndarray:
        """File label values -> internal values (uint8); unknown values raise ValueError."""
        labels = np.asarray(labels)
        if labels.dtype.kind == "f":
            if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
                raise ValueError(f"{source}: label values must be whole numbers ({self.name} scheme)")
        values = np.unique(labels).astype(np.int64)
        unknown = sorted(set(values.tolist()) - set(self.to_internal) - {0})
        if unknown:
            raise ValueError(
                f"{source}: unexpected label values {unknown} for the {self.name} scheme "
                f"(expected {sorted({0, *self.to_internal})}); check the label scheme of the file")
        lut = np.zeros(int(values.max(initial=0)) + 1, dtype=np.uint8)
        for file_value, internal in self.to_internal.items():
            if file_value < lut.size:
                lut[file_value] = internal
        return lut[labels.astype(np.int64)]

    def from_internal(self, labels: np.ndarray) -> np.ndarray:
        """Internal values -> this scheme's file values (uint8)."""
        inverse = np.zeros(256, dtype=np.uint8)
        for file_value, internal in self.to_internal.items():
            inverse[internal] = file_value
        return inverse[labels.astype(np.uint8)]


SCHEMES: Dict[str, LabelScheme] = {
    s.name: s
    for s in (
        LabelScheme("brats2013", {1: 1, 2: 2, 3: 3, 4: 4}),
        LabelScheme("brats2021", {1: 1, 2: 2, 4: 4}),
        LabelScheme("brats2023", {1: 1, 2: 2, 3: 4}),
        LabelScheme("msd", {1: 2, 2: 3, 3: 4}),
        # BRATS 2012: 1 edema, 2 tumor core without a necrosis / enhancing split.
        LabelScheme("brats2012", {1: 2, 2: 3}, regions=("complete", "core")),
    )
}


def output_scheme(num_classes: int) -> LabelScheme:
    """The file scheme label maps of a `num_classes` model are written in."""
    return SCHEMES["brats2021" if num_classes == 4 else "brats2013"]


def scheme(name: str) -> LabelScheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown label scheme {name!r}; known: {', '.join(SCHEMES)}") from None

