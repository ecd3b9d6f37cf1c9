"""Connected-component cleanup of a predicted label map (the paper's post-processing).

Havaei et al. remove "flat blobs which might appear in the predictions due to
bright corners of the brains close to the skull" with connected components.
Here the components are those of the complete-tumor region (every label > 0),
in 3-D, and three rules decide which components are kept; each can be switched
off in `CleanupConfig`:

- small: fewer than `min_volume_ml` millilitres (from the voxel spacing);
- flat: spanning at most `flat_max_slices` slices along the array's slice axis
  (axis 0, Z: the axial slices the 2-D networks are run on);
- not largest: every component but the largest, when `keep_largest_only`;
- distant: farther than `max_distance_mm` from the largest component (a gentler
  form of the previous rule: satellites next to the main tumor stay, blobs in
  another lobe go), and smaller than `distant_max_share` of it (so a second focus
  of a multifocal tumor, often as large as the first, stays).

A removed component becomes background (0); the voxels of kept components keep
their label values, so the sub-regions (core, enhancing) of the kept tumor are
untouched.  The rules are per component, so cleaning twice changes nothing.

After the components, `postprocess` may grow the kept tumor by its edema
(`edema_flair_share`): the networks stop short of the faint outer edema (on the
cross-validation's 20 patients a third of the whole tumor they miss lies within
1 mm of what they call, its FLAIR about 0.8 z above the brain against 1.7 for the
edema they find), so voxels within `edema_growth_mm` of the tumor, connected to
it, whose FLAIR lies above the median FLAIR of the brain outside the tumor by
`edema_flair_share` of the way to the median FLAIR of the edema found, become
edema.  The threshold is relative to the case's own edema, so a site whose lesions
are fainter on FLAIR grows as far (a fixed height above the brain grew less there).
Growing after the component rules keeps them exact under screening
(`unseen_span`): it only reads the tumor they kept.

Defaults were checked against the expert labels in `../shared/data` (BraTS
2012/2021/2023, 1 mm voxels): cleaning the ground truth removes only specks of
1-39 voxels and keeps a 0.15 mL, 5-slice satellite lesion and both foci
(14.9 and 12.6 mL) of a multifocal tumor; `keep_largest_only` would drop the
second focus, so it is off by default.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .. import labels as label_table


@dataclass(frozen=True)
class CleanupConfig:
    """Which components of the complete-tumor region are removed (see the module docstring)."""

    drop_small: bool = True
    #: Components smaller than this (mL = cm^3 = 1000 mm^3) are removed: 0.1 mL is 100
    #: voxels of 1 mm^3, far below any tumor an annotator outlines as the main lesion.
    min_volume_ml: float = 0.1
    drop_flat: bool = True
    #: Components spanning this many axial slices (array axis 0) or fewer are removed.
    #: Meant for slices of about 1 mm (BraTS); lower it or set drop_flat=False for
    #: thick-slice data, where a real lesion may span two slices.
    flat_max_slices: int = 2
    #: Keep only the largest component (removes the other foci of multifocal tumors).
    keep_largest_only: bool = False
    #: Remove components whose nearest voxel is farther than this (mm) from the largest one.
    max_distance_mm: Optional[float] = None
    #: ... and only those with fewer voxels than this share of the largest: the second focus of
    #: BraTS2021_00009 (12.6 mL, 85 % of the first) lies 18-20 mm from it.  1 removes every distant one.
    distant_max_share: float = 1.0
    #: 26-connectivity (True) or 6-connectivity (False).  26 never splits a tumor at a
    #: diagonal contact, so it removes less.
    fully_connected: bool = True
    #: Grow the kept tumor, as edema, into connected voxels whose FLAIR lies this share of the way from the
    #: median FLAIR of the brain outside the tumor to that of the edema found (None: no growth; see the
    #: module docstring) ...
    edema_flair_share: Optional[float] = None
    #: ... no farther than this from the tumor (mm).
    edema_growth_mm: float = 2.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.min_volume_ml) or self.min_volume_ml < 0:
            raise ValueError(f"min_volume_ml must be a finite number >= 0, not {self.min_volume_ml}")
        if int(self.flat_max_slices) != self.flat_max_slices or self.flat_max_slices < 0:
            raise ValueError(f"flat_max_slices must be a whole number >= 0, not {self.flat_max_slices}")
        if self.max_distance_mm is not None and not (np.isfinite(self.max_distance_mm) and self.max_distance_mm >= 0):
            raise ValueError(f"max_distance_mm must be a finite number >= 0 or None, not {self.max_distance_mm}")
        if not 0 < self.distant_max_share <= 1:
            raise ValueError(f"distant_max_share must lie in (0, 1], not {self.distant_max_share}")
        if self.edema_flair_share is not None and not 0 <= self.edema_flair_share <= 1:
            raise ValueError(f"edema_flair_share must lie in [0, 1] or be None, not {self.edema_flair_share}")
        if not (np.isfinite(self.edema_growth_mm) and self.edema_growth_mm >= 0):
            raise ValueError(f"edema_growth_mm must be a finite number >= 0, not {self.edema_growth_mm}")

    def unseen_span(self) -> int:
        """Consecutive slices that inference may leave unrun between two tumor-free slices without
        changing the cleaned labels: a component lying wholly inside them spans that many slices at
        most, so the flat rule removes it; nor can it change the distance rule, whose reference is the
        largest component the other rules keep.  0 with `keep_largest_only`, which ranks every component,
        flat ones too."""
        if not self.drop_flat or self.keep_largest_only:
            return 0
        return int(self.flat_max_slices)

    #: The fields a model's card may set (CleanupConfig.of_model): the rules that compare components ...
    COMPONENT_FIELDS = ("max_distance_mm", "distant_max_share", "keep_largest_only")
    #: ... and the edema growth.
    GROWTH_FIELDS = ("edema_flair_share", "edema_growth_mm")
    CARD_FIELDS = COMPONENT_FIELDS + GROWTH_FIELDS

    @classmethod
    def of_model(cls, card: dict, base: Optional["CleanupConfig"] = None) -> "CleanupConfig":
        """`base` (default: the defaults) with the rules the model's card chose by cross-validation (its
        "cleanup": CARD_FIELDS), as nnU-Net ships the post-processing its folds chose: its rule comparing
        components unless `base` compares components itself, its edema growth unless `base` grows."""
        base = base or cls()
        chosen = {k: v for k, v in (card.get("cleanup") or {}).items() if k in cls.CARD_FIELDS}
        out = base
        if not (base.max_distance_mm is not None or base.keep_largest_only):
            out = replace(out, **{k: v for k, v in chosen.items() if k in cls.COMPONENT_FIELDS})
        if base.edema_flair_share is None and chosen.get("edema_flair_share") is not None:
            out = replace(out, **{k: v for k, v in chosen.items() if k in cls.GROWTH_FIELDS})
        return out

    def card_fields(self) -> dict:
        """What a model's card holds of this rule (its "cleanup"), for `of_model` to read back."""
        return {k: getattr(self, k) for k in self.CARD_FIELDS}

    @classmethod
    def disabled(cls) -> "CleanupConfig":
        """A configuration that removes nothing."""
        return cls(drop_small=False, drop_flat=False, keep_largest_only=False)


@dataclass(frozen=True)
class Component:
    """One connected component of the complete-tumor region."""

    voxels: int
    volume_ml: float
    slices: int  # extent along array axis 0 (Z), in slices
    bounding_box: Tuple[Tuple[int, int], ...]  # ((z0, z1), (y0, y1), (x0, x1)), end exclusive
    reasons: Tuple[str, ...] = ()  # why it was removed ("small", "flat", "not largest"); empty = kept


@dataclass
class CleanupReport:
    """What `cleanup` did: every component found, those removed and why."""

    components: List[Component] = field(default_factory=list)  # largest first
    grown_ml: float = 0.0  # edema added by the growth (CleanupConfig.edema_flair_share)

    @property
    def removed(self) -> List[Component]:
        return [c for c in self.components if c.reasons]

    @property
    def kept(self) -> List[Component]:
        return [c for c in self.components if not c.reasons]

    @property
    def voxels_removed(self) -> int:
        return sum(c.voxels for c in self.removed)

    @property
    def volume_removed_ml(self) -> float:
        return sum(c.volume_ml for c in self.removed)

    def counts(self) -> dict:
        """Number of removed components per reason (a component may have several)."""
        out: dict = {}
        for c in self.removed:
            for reason in c.reasons:
                out[reason] = out.get(reason, 0) + 1
        return out

    def summary(self) -> str:
        if not self.components:
            return "cleanup: no tumor components"
        removed = self.removed
        grown = f"; edema grown by {self.grown_ml:.2f} mL" if self.grown_ml else ""
        if not removed:
            return f"cleanup: kept all {len(self.components)} tumor component(s){grown}"
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts().items()))
        return (f"cleanup: removed {len(removed)} of {len(self.components)} tumor component(s) "
                f"({why}; {self.voxels_removed} voxels, {self.volume_removed_ml:.3f} mL){grown}")

    def __str__(self) -> str:
        return self.summary()


def cleanup(labels: np.ndarray, spacing: Sequence[float],
            config: CleanupConfig = CleanupConfig()) -> Tuple[np.ndarray, CleanupReport]:
    """Remove small, flat and (optionally) all but the largest tumor components.

    labels: uint8 (Z, Y, X) internal label map (0 background, 1-4 tumor classes).
    spacing: voxel spacing in mm, ITK order (x, y, z), as in `Geometry.spacing`.
    Returns the cleaned label map (a new uint8 array, same shape; removed voxels are 0,
    every other voxel unchanged) and a `CleanupReport`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"cleanup needs a 3-D (Z, Y, X) label map, got shape {labels.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers (x, y, z) in mm, not {spacing}")
    out = np.array(labels, dtype=np.uint8, copy=True)
    tumor = out > 0
    if not tumor.any():
        return out, CleanupReport()

    mask = sitk.GetImageFromArray(tumor.view(np.uint8))
    mask.SetSpacing(spacing)
    # Relabelled by size: component 1 is the largest (ties keep ConnectedComponent's scan order).
    components = sitk.RelabelComponent(sitk.ConnectedComponent(mask, config.fully_connected),
                                       sortByObjectSize=True)
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.ComputeFeretDiameterOff()
    shape.ComputePerimeterOff()
    shape.Execute(components)
    voxel_ml = float(np.prod(spacing)) / 1000.0

    report = CleanupReport()
    labels_found = sorted(shape.GetLabels())
    reasons = {}
    for label in labels_found:
        voxels = int(shape.GetNumberOfPixels(label))
        found = []
        if config.keep_largest_only and label != 1:
            found.append("not largest")
        if config.drop_small and voxels * voxel_ml < config.min_volume_ml:
            found.append("small")
        if config.drop_flat and shape.GetBoundingBox(label)[5] <= config.flat_max_slices:
            found.append("flat")
        reasons[label] = found
    # distances to the largest component the other rules keep (so cleaning twice changes nothing)
    reference = next((label for label in labels_found if not reasons[label]), None)
    if config.max_distance_mm is not None and reference is not None and len(labels_found) > 1:
        to_reference = sitk.SignedMaurerDistanceMap(components == reference, insideIsPositive=False,
                                                    squaredDistance=False, useImageSpacing=True)
        distance = sitk.LabelStatisticsImageFilter()
        distance.Execute(to_reference, components)
        largest = shape.GetNumberOfPixels(reference)
        for label in labels_found:
            if (label != reference and distance.GetMinimum(label) > config.max_distance_mm
                    and shape.GetNumberOfPixels(label) < config.distant_max_share * largest):
                reasons[label].append("distant")
    remove = np.zeros(max(labels_found) + 1, dtype=bool)
    for label in labels_found:
        voxels = int(shape.GetNumberOfPixels(label))
        x0, y0, z0, sx, sy, sz = shape.GetBoundingBox(label)
        remove[label] = bool(reasons[label])
        report.components.append(Component(voxels, voxels * voxel_ml, int(sz),
                                           ((z0, z0 + sz), (y0, y0 + sy), (x0, x0 + sx)), tuple(reasons[label])))
    if remove.any():
        out[remove[sitk.GetArrayViewFromImage(components)]] = 0
    return out, report


def grow_edema(labels: np.ndarray, flair: np.ndarray, brain: np.ndarray, spacing: Sequence[float],
               share: float, within_mm: float) -> np.ndarray:
    """`labels` (uint8 (Z, Y, X)) with the brain voxels connected to the tumor (26-connected, through such
    voxels) within `within_mm` of it whose `flair` exceeds the median of the brain outside the tumor by
    `share` of the way to the median of the edema found (of the whole tumor, if it has no edema), labelled
    edema; a new array.  No tumor, or a tumor no brighter than the brain, no growth."""
    tumor = labels > 0
    healthy = brain & ~tumor
    out = np.array(labels, dtype=np.uint8, copy=True)
    if not tumor.any() or not healthy.any():
        return out
    edema = labels == label_table.TISSUES["edema"].value
    brain_level = float(np.median(flair[healthy]))
    edema_level = float(np.median(flair[edema if edema.any() else tumor]))
    if edema_level <= brain_level:
        return out
    threshold = brain_level + share * (edema_level - brain_level)
    sampling = tuple(float(s) for s in spacing)[::-1]  # (x, y, z) -> array axes (z, y, x)
    # only the tumor's bounding box grown by the reach can be reached: the work stays there
    where = np.nonzero(tumor)
    box = tuple(slice(max(0, int(i.min()) - reach), int(i.max()) + 1 + reach)
                for i, reach in zip(where, (int(np.ceil(within_mm / s)) + 1 for s in sampling)))
    near = ndimage.distance_transform_edt(~tumor[box], sampling=sampling) <= within_mm
    allowed = tumor[box] | (healthy[box] & near & (flair[box] > threshold))
    grown = ndimage.binary_propagation(tumor[box], structure=np.ones((3, 3, 3), bool), mask=allowed)
    out[box][grown & ~tumor[box]] = label_table.TISSUES["edema"].value
    return out


def postprocess(labels: np.ndarray, spacing: Sequence[float], config: CleanupConfig, flair: np.ndarray,
                brain: np.ndarray) -> Tuple[np.ndarray, CleanupReport]:
    """`cleanup`, then the edema growth the config asks for (`grow_edema`) on what it kept; `flair` and
    `brain` (the preprocessed FLAIR and the brain mask, the labels' grid) are read only for the growth."""
    out, report = cleanup(labels, spacing, config)
    if config.edema_flair_share is not None and report.kept:
        before = int(np.count_nonzero(out))
        out = grow_edema(out, flair, brain, spacing, config.edema_flair_share, config.edema_growth_mm)
        report.grown_ml = (int(np.count_nonzero(out)) - before) * float(np.prod(spacing)) / 1000.0
    return out, report
