"""Image geometry (ITK / LPS convention) and the one place it is checked.

Arrays in the engine are indexed (Z, Y, X) = (slice, row, column); spacing,
origin and direction are given in ITK order (x, y, z), in mm, LPS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Tuple

import numpy as np
import SimpleITK as sitk

SPACING_TOLERANCE = 1e-3  # mm (relative for spacing)
ORIGIN_TOLERANCE = 1e-2  # mm
DIRECTION_TOLERANCE = 1e-4


class GeometryError(ValueError):
    """Volumes that should share a voxel grid do not."""


@dataclass(frozen=True)
class Geometry:
    size: Tuple[int, int, int]  # voxels (x, y, z)
    spacing: Tuple[float, float, float]  # mm (x, y, z)
    origin: Tuple[float, float, float]  # mm, LPS
    direction: Tuple[float, ...]  # 3x3 row-major, LPS

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3-D image, got {image.GetDimension()}-D")
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    @property
    def shape(self) -> Tuple[int, int, int]:
        """Array shape (Z, Y, X)."""
        return self.size[2], self.size[1], self.size[0]

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def apply(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def differences(self, other: "Geometry") -> list:
        """Human-readable differences from `other` (empty when they share a grid)."""
        out = []
        if self.size != other.size:
            out.append(f"size {self.size} vs {other.size}")
        if not np.allclose(self.spacing, other.spacing, rtol=SPACING_TOLERANCE, atol=0):
            out.append(f"spacing {_numbers(self.spacing)} vs {_numbers(other.spacing)} mm")
        if not np.allclose(self.origin, other.origin, atol=ORIGIN_TOLERANCE, rtol=0):
            out.append(f"origin {_numbers(self.origin)} vs {_numbers(other.origin)} mm")
        if not np.allclose(self.direction, other.direction, atol=DIRECTION_TOLERANCE, rtol=0):
            out.append(f"direction {_numbers(self.direction)} vs {_numbers(other.direction)}")
        return out


def _numbers(values) -> str:
    """Values as a message shows them: float32 header noise (1.100000023841858) rounded away."""
    return "(" + ", ".join(f"{round(float(v), 4):g}" for v in values) + ")"


def to_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A (Z, Y, X) array as a SimpleITK image on `geometry`'s grid."""
    if tuple(array.shape) != geometry.shape:
        raise GeometryError(f"array shape {array.shape} does not match the grid {geometry.shape} (Z, Y, X)")
    return geometry.apply(sitk.GetImageFromArray(np.ascontiguousarray(array)))


def check_same(geometries: Mapping[str, Geometry], reference: str) -> None:
    """Raise GeometryError naming every volume whose grid differs from `reference`'s."""
    ref = geometries[reference]
    problems = [f"{name}: {'; '.join(diff)}" for name, g in geometries.items()
                if name != reference and (diff := g.differences(ref))]
    if problems:
        raise GeometryError(
            f"volumes are not on the same voxel grid as {reference} (not co-registered): " + " | ".join(problems)
            + ". Register/resample them onto one grid, or ask for resampling onto the T1c grid.")
