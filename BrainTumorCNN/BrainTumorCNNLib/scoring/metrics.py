"""The BraTS scores of a segmentation: Dice, sensitivity, precision, specificity, HD95.

Per evaluation region (labels.REGIONS: complete {1,2,3,4}, core {1,3,4},
enhancing {4}), with P the predicted and T the true region mask and P0, T0
their complements over the whole volume:

- Dice = 2|P∩T| / (|P| + |T|)
- sensitivity = |P∩T| / |T|
- precision = |P∩T| / |P| (beside sensitivity it tells under-calling from over-calling)
- specificity = |P0∩T0| / |T0|
- HD95: the 95th percentile (numpy's linear interpolation) of the pooled
  distances, in mm (voxel spacing applied), from every surface voxel of P to the
  nearest surface voxel of T and from every surface voxel of T to the nearest of
  P; a surface voxel is a mask voxel with a face neighbour (6-connectivity)
  outside the mask or outside the image.  This is the definition of the BraTS
  organisers' `brats-evaluation` package (panoptica's HD95, from MedPy).

Empty regions, the BraTS convention:
- empty in both truth and prediction: Dice 1, sensitivity 1, HD95 0 mm
  (`brats-evaluation` reports NaN here and leaves such cases out of its means;
  BraTS 2018-2023 rankings scored them 1 and 0, which is what is used here);
- empty in one only: Dice 0, HD95 = `EMPTY_HD95_MM` = 373 mm, the penalty
  `brats-evaluation` substitutes for an infinite HD95 (the diagonal of the
  240x240x155 mm SRI-24 box, 373.13 mm, rounded down as the package does);
  sensitivity 0 when the truth is empty (as in the BraTS 2023 metrics code,
  from GaNDLF); precision and specificity mirror it (precision 0 when the
  prediction alone is empty; specificity 1 when T0 and P0 are both empty, 0 when
  only T0 is).
- non-empty in both but not overlapping: Dice 0 and the measured HD95
  (`brats-evaluation` reports an infinite HD95, i.e. 373, whenever the overlap is
  empty; BraTS 2018-2023 rankings measured the distance, as here).

Where both are defined, the scores equal `brats-evaluation`'s global Dice and
HD95 (its global HD95 ignores the voxel spacing: BraTS data is 1 mm isotropic).

Regions a truth file's label scheme does not define are skipped (BRATS 2012
truth has no enhancing label: `LabelScheme.regions`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import labels as label_table

#: HD95 (mm) when a region is empty in exactly one of truth and prediction.
EMPTY_HD95_MM = 373.0
METRICS = ("dice", "sensitivity", "precision", "specificity", "hd95")
METRIC_TITLES = {"dice": "Dice", "sensitivity": "Sensitivity", "precision": "Precision", "specificity": "Specificity",
                 "hd95": "HD95 (mm)"}
INTERNAL_VALUES = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class RegionMetrics:
    """The scores of one region of one case."""

    dice: float
    sensitivity: float
    precision: float
    specificity: float
    hd95: float  # mm
    truth_voxels: int
    predicted_voxels: int


@dataclass
class CaseMetrics:
    """The scores of one case, by region (only the regions its truth defines)."""

    regions: Dict[str, RegionMetrics] = field(default_factory=dict)

    def __getitem__(self, region: str) -> RegionMetrics:
        return self.regions[region]

    def as_row(self) -> Dict[str, float]:
        """{"dice_complete": ..., "dice_core": ..., ..., "hd95_enhancing": ...}, metric by metric."""
        return {f"{metric}_{region}": float(getattr(scores, metric))
                for metric in METRICS for region, scores in self.regions.items()}


# --- Metrics ------------------------------------------------------------------


def overlap(predicted: np.ndarray, truth: np.ndarray) -> Tuple[int, int]:
    """|P∩T| and |P| + |T| of two boolean masks: what Dice is made of (sums over windows or slices
    give the Dice of their union)."""
    return int(np.count_nonzero(predicted & truth)), int(np.count_nonzero(predicted)) + int(np.count_nonzero(truth))


def dice_of(intersection: int, sizes: int) -> float:
    """2|P∩T| / (|P| + |T|); 1 when both are empty (the BraTS convention above)."""
    return 1.0 if sizes == 0 else 2.0 * intersection / sizes

def _array_spacing(spacing: Sequence[float]) -> Tuple[float, float, float]:
    """ITK-order (x, y, z) spacing -> array-order (z, y, x), checked."""
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive numbers (x, y, z) in mm, not {tuple(spacing)}")
    return values[2], values[1], values[0]


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a boolean (Z, Y, X) mask: mask voxels with a face neighbour
    outside the mask or outside the array."""
    mask = np.asarray(mask, dtype=bool)
    p = np.pad(mask, 1)
    interior = (p[1:-1, 1:-1, 1:-1] & p[:-2, 1:-1, 1:-1] & p[2:, 1:-1, 1:-1] & p[1:-1, :-2, 1:-1]
                & p[1:-1, 2:, 1:-1] & p[1:-1, 1:-1, :-2] & p[1:-1, 1:-1, 2:])
    return mask & ~interior


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Distances (mm, float64) from each surface voxel of `a` to the nearest surface voxel
    of `b`, and from each of `b` to the nearest of `a`.  Both masks must be non-empty.

    a, b: boolean (Z, Y, X) masks; spacing: mm, ITK order (x, y, z)."""
    surface_a, surface_b = surface(a), surface(b)
    if not surface_a.any() or not surface_b.any():
        raise ValueError("surface distances need two non-empty masks")
    # Distances between surface voxels do not depend on anything outside their bounding box.
    both = surface_a | surface_b
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(both))
    surface_a, surface_b = surface_a[box], surface_b[box]
    return _distance_to(surface_b, spacing)[surface_a], _distance_to(surface_a, spacing)[surface_b]


def _distance_to(target: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance (mm) of every voxel to the nearest voxel of `target` (exact, Maurer)."""
    import SimpleITK as sitk  # here: training imports this module's Dice on machines without SimpleITK
    image = sitk.GetImageFromArray(target.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing))
    # Squared distances: whole numbers (exact in float32) on 1 mm grids; the root in float64.
    squared = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=True, useImageSpacing=True)).astype(np.float64)
    # Outside `target` the map is the distance to the nearest target voxel; inside it is not needed.
    return np.where(target, 0.0, np.sqrt(np.abs(squared)))


def hausdorff95(predicted: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """HD95 in mm between two boolean (Z, Y, X) masks, with the empty-mask convention
    of the module docstring.  spacing: mm, ITK order (x, y, z)."""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    has_p, has_t = bool(predicted.any()), bool(truth.any())
    if not has_p and not has_t:
        return 0.0
    if has_p != has_t:
        return EMPTY_HD95_MM
    d_pt, d_tp = surface_distances(predicted, truth, spacing)
    return float(np.percentile(np.concatenate([d_pt, d_tp]), 95))


def region_metrics(predicted: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
                   total_voxels: Optional[int] = None) -> RegionMetrics:
    """Dice, sensitivity, precision, specificity and HD95 of one region.

    predicted, truth: boolean (Z, Y, X) masks of the region; spacing: mm, (x, y, z);
    total_voxels: voxels of the whole volume when the masks are a crop of it (for the
    specificity; everything outside the crop is background in both)."""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    if predicted.shape != truth.shape:
        raise ValueError(f"prediction shape {predicted.shape} differs from truth shape {truth.shape}")
    _array_spacing(spacing)
    n = predicted.size if total_voxels is None else int(total_voxels)
    p, t = int(np.count_nonzero(predicted)), int(np.count_nonzero(truth))
    tp = int(np.count_nonzero(predicted & truth))
    tn = n - p - t + tp  # |P0 ∩ T0|
    dice = dice_of(tp, p + t)
    sensitivity = (1.0 if p == 0 else 0.0) if t == 0 else tp / t
    precision = (1.0 if t == 0 else 0.0) if p == 0 else tp / p
    specificity = (1.0 if p == n else 0.0) if t == n else tn / (n - t)
    return RegionMetrics(dice, sensitivity, precision, specificity, hausdorff95(predicted, truth, spacing), t, p)


def check_labels(labels: np.ndarray, source: str = "label map") -> np.ndarray:
    """An internal label map (values 0-4) as uint8; other values raise ValueError naming `source`."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "f" and (not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels))):
        raise ValueError(f"{source}: label values must be whole numbers (internal values 0-4)")
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"{source}: a label map must be numeric, not {labels.dtype}")
    values = np.unique(labels)
    unexpected = sorted(v for v in values.tolist() if v not in INTERNAL_VALUES)
    if unexpected:
        raise ValueError(
            f"{source}: unexpected label values {[int(v) for v in unexpected]} (expected internal values "
            f"0-4: 0/1/2/4 from 4-class models, 0-4 from 5-class models); a map in another scheme needs "
            f"--prediction-scheme (one of {', '.join(label_table.SCHEMES)})")
    return labels.astype(np.uint8)


def evaluate_case(predicted: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
                  regions: Iterable[str] = tuple(label_table.REGIONS)) -> CaseMetrics:
    """Scores of one case.

    predicted, truth: (Z, Y, X) internal label maps (0-4) on the same grid;
    spacing: mm, ITK order (x, y, z) (`Geometry.spacing`);
    regions: the regions to score, e.g. `case.scheme.regions` (BRATS 2012 truth: complete, core).
    """
    predicted = check_labels(predicted, "prediction")
    truth = check_labels(truth, "truth")
    if predicted.ndim != 3 or predicted.shape != truth.shape:
        raise ValueError(f"prediction shape {predicted.shape} and truth shape {truth.shape} must be the same 3-D grid")
    truth_shape = truth.shape
    regions = tuple(regions)
    unknown = [r for r in regions if r not in label_table.REGIONS]
    if unknown:
        raise ValueError(f"unknown region(s) {unknown}; known: {', '.join(label_table.REGIONS)}")
    # Every score depends only on the bounding box of all tumor voxels (outside it both maps
    # are background, as outside the image), plus the total voxel count for the specificity.
    tumor = np.nonzero((predicted > 0) | (truth > 0))
    if tumor[0].size:
        box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in tumor)
        predicted, truth = predicted[box], truth[box]
    out = CaseMetrics()
    for region in regions:
        out.regions[region] = region_metrics(label_table.region_mask(predicted, region),
                                             label_table.region_mask(truth, region), spacing,
                                             total_voxels=np.prod(truth_shape))
    return out


def summarize(cases: Iterable[Union[CaseMetrics, Mapping[str, object]]], statistic: str = "mean") -> Dict[str, float]:
    """Mean (or "median") of each score over the cases that have it (NaN and missing ignored).

    cases: CaseMetrics or rows as from `CaseMetrics.as_row()` (other keys, e.g. "case", ignored)."""
    reduce = {"mean": np.mean, "median": np.median}[statistic]
    values: Dict[str, List[float]] = {}
    for item in cases:
        row = item.as_row() if isinstance(item, CaseMetrics) else item
        for key in _score_keys(row):
            value = as_float(row[key])
            if value is not None and not math.isnan(value):
                values.setdefault(key, []).append(value)
    return {key: float(reduce(v)) for key, v in values.items()}


def _score_keys(row: Mapping[str, object]) -> List[str]:
    return [f"{m}_{r}" for m in METRICS for r in label_table.REGIONS if f"{m}_{r}" in row]


def as_float(value) -> Optional[float]:
    """A score read from a row (a float, or its text in a CSV); None when absent or not a number."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
