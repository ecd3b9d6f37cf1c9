"""The bidimensional measure readers take of an enhancing tumor (RANO, after Macdonald): on one axial
section, each lesion's longest diameter times the longest diameter perpendicular to it, summed.

Defined here exactly, so a number means one thing (mm, from the voxel spacing):

- The axial sections are the slices across the array axis that runs closest to the patient's
  head-foot axis (the image direction; a sagittal acquisition is cut across its columns).  The
  measure is taken on the section with the most enhancing voxels (of equal ones, the one with the
  larger sum of products, then the first).
- A lesion is an in-plane connected component of enhancing voxels (8-connected), with the holes
  it encloses filled: a rim's necrotic centre lies inside its diameters, as readers measure
  across it.
- A voxel counts as the rectangle it covers (the in-plane spacing), so diameters run edge to
  edge: a lesion 10 voxels long is 10 voxels long, not 9 as between voxel centres.
- The longest diameter is the largest distance between two points of the lesion.  The
  perpendicular diameter is the longest segment perpendicular to it that lies inside the lesion
  (for a lesion with several longest diameters, the one that gives the longest perpendicular).
  An ellipse of axes A > B measures A and B; a W x H rectangle (W > H) measures its diagonal D
  and H * D / W, the longest segment across it perpendicular to the diagonal.
- A lesion is measurable in RANO's sense when both diameters are at least 10 mm; the sum covers
  every lesion of the section, and says how many are measurable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from ..reading.geometry import Geometry

MEASURABLE_MM = 10.0  # RANO: a measurable lesion has both perpendicular diameters at least this long
_TIE_MM = 1e-6  # longest diameters this close are equal
_NUDGE = 1e-7  # mm: chords are taken this far either side of each corner (the limits there)


@dataclass(frozen=True)
class Lesion:
    """One lesion of the section: its two diameters (mm) and its area (mm², holes filled)."""

    longest_mm: float
    perpendicular_mm: float
    area_mm2: float

    @property
    def product_mm2(self) -> float:
        return self.longest_mm * self.perpendicular_mm

    @property
    def measurable(self) -> bool:
        return min(self.longest_mm, self.perpendicular_mm) >= MEASURABLE_MM


@dataclass(frozen=True)
class Bidimensional:
    """The measure of a label map's enhancing tumor: the axial section it was taken on (`axis`: the
    array axis cut, 0 Z, 1 Y, 2 X; `section`: 0-based index along it, None without enhancing
    tumor) and its lesions, largest product first."""

    axis: int
    section: Optional[int]
    lesions: Tuple[Lesion, ...]

    @property
    def sum_of_products_mm2(self) -> float:
        return float(sum(lesion.product_mm2 for lesion in self.lesions))

    @property
    def measurable(self) -> int:
        return sum(lesion.measurable for lesion in self.lesions)

    def describe(self) -> str:
        if self.section is None:
            return "no enhancing tumor"
        diameters = " + ".join(f"{l.longest_mm:.1f} x {l.perpendicular_mm:.1f}" for l in self.lesions)
        return (f"{self.sum_of_products_mm2:.0f} mm² on axial slice {self.section + 1} "
                f"({len(self.lesions)} lesion{'s' * (len(self.lesions) != 1)}: {diameters} mm; "
                f"{self.measurable} measurable)")


def axial_axis(geometry: Geometry) -> int:
    """The array axis (0 Z, 1 Y, 2 X) that runs closest to the patient's head-foot axis."""
    direction = np.asarray(geometry.direction, float).reshape(3, 3)  # column i: index axis i (x, y, z)
    return 2 - int(np.abs(direction[2]).argmax())


def measure(enhancing: np.ndarray, geometry: Geometry) -> Bidimensional:
    """The bidimensional measure of a (Z, Y, X) mask of enhancing tumor on `geometry`."""
    axis = axial_axis(geometry)
    spacing = tuple(geometry.spacing[::-1])  # per array axis
    in_plane = tuple(spacing[a] for a in range(3) if a != axis)
    counts = enhancing.sum(axis=tuple(a for a in range(3) if a != axis))
    if not counts.any():
        return Bidimensional(axis, None, ())
    best: Optional[Bidimensional] = None
    for index in np.flatnonzero(counts == counts.max()):
        found = Bidimensional(axis, int(index), measure_section(np.take(enhancing, index, axis=axis), in_plane))
        if best is None or found.sum_of_products_mm2 > best.sum_of_products_mm2 + _TIE_MM:
            best = found
    return best


def measure_section(mask: np.ndarray, spacing: Sequence[float]) -> Tuple[Lesion, ...]:
    """The lesions of a 2-D mask with pixel `spacing` (rows, columns; mm), largest product first."""
    components, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    lesions = []
    for box, number in zip(ndimage.find_objects(components), range(1, count + 1)):
        lesion = ndimage.binary_fill_holes(components[box] == number)
        longest, perpendicular = diameters(lesion, spacing)
        lesions.append(Lesion(longest, perpendicular, float(lesion.sum() * spacing[0] * spacing[1])))
    return tuple(sorted(lesions, key=lambda l: -l.product_mm2))


def diameters(lesion: np.ndarray, spacing: Sequence[float]) -> Tuple[float, float]:
    """(longest, perpendicular) diameters in mm of a 2-D mask whose pixels are rectangles of size
    `spacing` (rows, columns; mm)."""
    half = np.asarray(spacing, float) / 2
    centres = np.argwhere(lesion) * np.asarray(spacing, float)
    edge = np.argwhere(lesion & ~ndimage.binary_erosion(lesion, border_value=0)) * np.asarray(spacing, float)
    # the union's outline turns only at corners of its edge pixels
    corners = np.unique(np.concatenate([edge + half * np.array(sign) for sign in
                                        ((-1, -1), (-1, 1), (1, -1), (1, 1))]), axis=0)
    hull = corners[ConvexHull(corners).vertices]
    apart = np.linalg.norm(hull[:, None] - hull[None], axis=2)
    longest = float(apart.max())
    perpendicular = 0.0
    for i, j in zip(*np.nonzero(np.triu(apart >= longest - _TIE_MM))):
        along = (hull[j] - hull[i]) / apart[i, j]
        perpendicular = max(perpendicular, _longest_chord(centres, half, corners, along))
    return longest, perpendicular


def _longest_chord(centres: np.ndarray, half: np.ndarray, corners: np.ndarray, along: np.ndarray) -> float:
    """The longest segment inside the union of rectangles (centres, half sizes) that runs
    perpendicular to the unit vector `along`.

    A chord's length is linear in its offset along `along` between two corners' offsets (no corner
    is crossed, so its ends stay on the same edges), so the longest lies at a corner's offset; it
    is taken just either side of each."""
    across = np.array([-along[1], along[0]])
    offsets = np.unique(np.round(corners @ along, 9))
    longest = 0.0
    for offset in np.concatenate([offsets - _NUDGE, offsets + _NUDGE]):
        # the line offset * along + t * across inside each rectangle: t in [low, high]
        low = np.full(len(centres), -np.inf)
        high = np.full(len(centres), np.inf)
        for axis in range(2):
            start = offset * along[axis]
            if abs(across[axis]) < 1e-12:
                outside = np.abs(start - centres[:, axis]) > half[axis]
                low[outside], high[outside] = np.inf, -np.inf
                continue
            a = (centres[:, axis] - half[axis] - start) / across[axis]
            b = (centres[:, axis] + half[axis] - start) / across[axis]
            low, high = np.maximum(low, np.minimum(a, b)), np.minimum(high, np.maximum(a, b))
        crossed = low < high
        if not crossed.any():
            continue
        order = np.argsort(low[crossed])
        low, high = low[crossed][order], high[crossed][order]
        reach = np.maximum.accumulate(high)
        starts = np.concatenate([[True], low[1:] > reach[:-1] + 1e-9])  # a gap begins a new run
        run = np.cumsum(starts) - 1
        first = low[starts]
        ends = np.full(int(run[-1]) + 1, -np.inf)
        np.maximum.at(ends, run, high)
        longest = max(longest, float((ends - first).max()))
    return longest
