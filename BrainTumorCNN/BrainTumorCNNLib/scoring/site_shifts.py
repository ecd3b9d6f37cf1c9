"""Realistic site shifts: what another scanner or protocol does to the raw images.

Each shift takes a raw (4, Z, Y, X) case (T1, T1c, T2, FLAIR; skull-stripped, 0 outside
the brain) and returns the images another site might have produced, *before* the
project's preprocessing, so the benchmark (frontends/robustness.py) measures what the
whole pipeline -- clipping, N4, normalisation, network, cleanup -- makes of them.

Cross-validation inside one pool of sites cannot see these: on unseen sites the misses
were edema whose FLAIR contrast was weaker than in training, and thick-slice FLAIR.
The background (0) is kept outside the brain, as skull-stripped data from any site has
it; the brain mask the pipeline derives is therefore unchanged by every shift.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from scipy import ndimage

from ..modalities import MODALITIES
from ..reading.geometry import Geometry, to_image

T2, FLAIR = MODALITIES.index("T2"), MODALITIES.index("FLAIR")

#: Rician noise: the magnitude of complex Gaussian noise whose sigma is the brain's mean
#: intensity over this signal-to-noise ratio (clinical brain MRI: roughly 15-40).
CLINICAL_SNR = 15.0
LESION_CONTRAST = 0.6  # tumor-to-healthy-brain contrast kept on FLAIR and T2
BIAS_AMPLITUDE = 0.4  # the bias field spans about exp(+-0.4) = x0.67 .. x1.49 over the brain
THICK_SLICES_MM = {FLAIR: 5.0, T2: 3.0}
RESAMPLING_ROTATION_DEG = 5.0  # in-plane resampling: rotated by this and back, linear interpolation each way


@dataclass(frozen=True)
class Shift:
    """One site shift: `apply(images, brain, truth, geometry, rng)` -> shifted float32 images."""

    name: str
    description: str
    apply: Callable[..., np.ndarray]
    uses_truth: bool = False  # placed by the expert truth (where the lesion is), not by a scanner model


def _per_brain(images: np.ndarray, brain: np.ndarray, change: Callable[[np.ndarray, int], np.ndarray],
               channels=range(4)) -> np.ndarray:
    """`change(values, channel)` applied to the brain voxels of each channel; 0 stays outside."""
    out = images.astype(np.float32, copy=True)
    for c in channels:
        values = out[c][brain]
        out[c][brain] = change(values, c)
    return out


def clean(images, brain, truth, geometry, rng) -> np.ndarray:
    return images.astype(np.float32, copy=True)


def lesion_weight(tumor: np.ndarray) -> np.ndarray:
    """How far each voxel takes part in a lesion-contrast change: the tumor mask, its edge blurred by one
    voxel, as a float32 weight in [0, 1]."""
    return ndimage.gaussian_filter(tumor.astype(np.float32), sigma=1.0)


def fainter_lesion(channel: np.ndarray, weight: np.ndarray, reference: float, factor: float) -> np.ndarray:
    """`channel` with the lesion's contrast to `reference` (the healthy brain's level) times `factor`
    where `weight` (lesion_weight) is 1, less where it is less."""
    return channel + (factor - 1.0) * weight * (channel - reference)


def lesion_contrast(images, brain, truth, geometry, rng) -> np.ndarray:
    """FLAIR and T2 tumor-to-brain contrast x LESION_CONTRAST: inside the (slightly blurred) tumor
    outline, each voxel moves towards the healthy brain's median by 40 % of its distance."""
    tumor = truth > 0 if truth is not None else np.zeros(brain.shape, bool)
    weight = lesion_weight(tumor)
    healthy = brain & ~tumor
    out = images.astype(np.float32, copy=True)
    for c in (T2, FLAIR):
        reference = float(np.median(out[c][healthy if healthy.any() else brain]))
        shifted = fainter_lesion(out[c], weight, reference, LESION_CONTRAST)
        out[c] = np.where(brain, np.maximum(shifted, 1e-3), 0.0)
    return out


def gamma(value: float) -> Callable[..., np.ndarray]:
    """Every sequence's intensities raised to `value` between 0 and the brain maximum (a nonlinear
    scanner / reconstruction response: 0.7 lifts dark tissue, 1.4 darkens it)."""
    def apply(images, brain, truth, geometry, rng) -> np.ndarray:
        def change(values, c):
            top = float(values.max())
            return (top * np.power(np.clip(values, 0, None) / top, value)).astype(np.float32) + 1e-3
        return _per_brain(images, brain, change)
    return apply


def bias_field(images, brain, truth, geometry, rng) -> np.ndarray:
    """A strong smooth multiplicative field on every sequence (its own per sequence): a random
    low-order polynomial in the brain's coordinates, scaled so log-field spans +-BIAS_AMPLITUDE."""
    coords = np.stack(np.indices(brain.shape, dtype=np.float32))
    z, y, x = coords
    spacing = np.array(geometry.spacing[::-1], np.float32)[:, None, None, None]
    centre = np.array([c[brain].mean() for c in (z, y, x)], np.float32)[:, None, None, None]
    u = (coords - centre) * spacing / 80.0  # about -1 .. 1 over a brain
    terms = [u[0], u[1], u[2], u[0] * u[1], u[0] * u[2], u[1] * u[2], u[0] ** 2, u[1] ** 2, u[2] ** 2]
    out = images.astype(np.float32, copy=True)
    for c in range(4):
        log_field = sum(rng.normal() * t for t in terms)
        spread = float(np.abs(log_field[brain]).max()) or 1.0
        out[c] = np.where(brain, out[c] * np.exp(BIAS_AMPLITUDE * log_field / spread), 0.0)
    return out


def rician_noise(images, brain, truth, geometry, rng) -> np.ndarray:
    """Magnitude of complex Gaussian noise at CLINICAL_SNR (sigma = brain mean / SNR), per sequence."""
    def change(values, c):
        sigma = float(values.mean()) / CLINICAL_SNR
        real = values + rng.normal(0.0, sigma, values.shape)
        imaginary = rng.normal(0.0, sigma, values.shape)
        return np.hypot(real, imaginary).astype(np.float32) + 1e-3
    return _per_brain(images, brain, change)


def thick_slices(images, brain, truth, geometry, rng) -> np.ndarray:
    """FLAIR acquired with 5 mm and T2 with 3 mm axial slices, resampled back onto the grid.

    Each thick slice is the mean of the thin slices it covers (a box slice profile); the
    stack is then resampled linearly onto the original grid, as `segment --resample` puts
    a sequence onto the T1c grid."""
    out = images.astype(np.float32, copy=True)
    for c, thickness in THICK_SLICES_MM.items():
        out[c] = np.where(brain, resample_thick(out[c], geometry, thickness), 0.0)
    return out


def thick_flair(images, brain, truth, geometry, rng) -> np.ndarray:
    """FLAIR alone acquired with 5 mm axial slices beside 1 mm 3-D T1c, T1 and T2 (many clinical
    protocols), on the whole raw scan: its top and bottom slices mix with the outside."""
    out = images.astype(np.float32, copy=True)
    out[FLAIR] = np.where(brain, resample_thick(out[FLAIR], geometry, THICK_SLICES_MM[FLAIR]), 0.0)
    return out


def inplane_resampling(images, brain, truth, geometry, rng) -> np.ndarray:
    """Every sequence resampled in plane twice with linear interpolation (rotated by
    RESAMPLING_ROTATION_DEG about the slice centre and back), as registrations onto another grid do:
    the blur of interpolation without moving the anatomy away from its truth."""
    out = images.astype(np.float32, copy=True)
    for c in range(len(out)):
        there = ndimage.rotate(out[c], RESAMPLING_ROTATION_DEG, axes=(1, 2), reshape=False, order=1)
        back = ndimage.rotate(there, -RESAMPLING_ROTATION_DEG, axes=(1, 2), reshape=False, order=1)
        out[c] = np.where(brain, np.maximum(back, 1e-3), 0.0)  # the brain's edge keeps some signal: same mask
    return out


def resample_thick(volume: np.ndarray, geometry: Geometry, thickness_mm: float) -> np.ndarray:
    """A (Z, Y, X) volume as slices of `thickness_mm` along Z would show it, back on `geometry`'s grid."""
    import SimpleITK as sitk
    factor = max(1, int(round(thickness_mm / geometry.spacing[2])))
    if factor == 1:
        return volume.astype(np.float32, copy=True)
    slabs = -(-volume.shape[0] // factor)
    padded = np.concatenate([volume, np.repeat(volume[-1:], slabs * factor - volume.shape[0], axis=0)])
    thick = padded.reshape(slabs, factor, *volume.shape[1:]).mean(axis=1, dtype=np.float64).astype(np.float32)
    # the first thick slice's centre lies (factor - 1) / 2 thin slices along the slice axis
    thick_geometry = Geometry((geometry.size[0], geometry.size[1], slabs),
                              (geometry.spacing[0], geometry.spacing[1], geometry.spacing[2] * factor),
                              _origin_after(geometry, (factor - 1) / 2.0), geometry.direction)
    reference = to_image(np.zeros(geometry.shape, np.float32), geometry)
    back = sitk.Resample(to_image(thick, thick_geometry), reference, sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32, True)  # extrapolate: the last half slab keeps its value
    return sitk.GetArrayFromImage(back)


def _origin_after(geometry: Geometry, slices: float) -> Tuple[float, float, float]:
    """The physical point `slices` slices (a fraction allowed) along the grid's slice axis from its origin."""
    direction = np.array(geometry.direction).reshape(3, 3)
    origin = np.array(geometry.origin) + direction[:, 2] * geometry.spacing[2] * slices
    return tuple(float(o) for o in origin)


def scale_offset(images, brain, truth, geometry, rng) -> np.ndarray:
    """Another intensity scale and offset per sequence (x2.5 + 300 inside the brain): the
    preprocessing should make this change nothing."""
    return _per_brain(images, brain, lambda values, c: values * 2.5 + 300.0)


SHIFTS: Dict[str, Shift] = {shift.name: shift for shift in (
    Shift("clean", "the images as read", clean),
    Shift("lesion contrast x0.6", "FLAIR and T2 tumor-to-brain contrast x0.6 (placed by the truth)",
          lesion_contrast, uses_truth=True),
    Shift("gamma 0.7", "every sequence's intensities ^0.7 between 0 and the brain maximum", gamma(0.7)),
    Shift("gamma 1.4", "every sequence's intensities ^1.4 between 0 and the brain maximum", gamma(1.4)),
    Shift("bias field", f"smooth multiplicative field per sequence, x{np.exp(-BIAS_AMPLITUDE):.2f}"
          f" .. x{np.exp(BIAS_AMPLITUDE):.2f}", bias_field),
    Shift("rician noise", f"Rician noise at SNR {CLINICAL_SNR:g} (sigma = brain mean / SNR)", rician_noise),
    Shift("thick slices", "FLAIR 5 mm and T2 3 mm axial slices, resampled back linearly", thick_slices),
    Shift("thick FLAIR", "FLAIR alone in 5 mm axial slices, resampled back linearly (T1, T1c, T2 thin)",
          thick_flair),
    Shift("in-plane resampling", f"every sequence rotated {RESAMPLING_ROTATION_DEG:g} degrees in plane and "
          "back, linear interpolation each way", inplane_resampling),
    Shift("scale+offset", "every sequence x2.5 + 300 inside the brain (should change nothing)", scale_offset),
)}

#: Shifts a site really makes, of which the benchmark reports the worst (scale+offset is a check).
REALISTIC = tuple(name for name in SHIFTS if name not in ("clean", "scale+offset"))


def apply(name: str, images: np.ndarray, brain: np.ndarray, truth: Optional[np.ndarray], geometry: Geometry,
          seed: int = 0) -> np.ndarray:
    """The raw images under the shift `name` (SHIFTS), reproducibly for a seed; float32 (4, Z, Y, X)."""
    if name not in SHIFTS:
        raise ValueError(f"unknown site shift {name!r}; known: {', '.join(SHIFTS)}")
    if SHIFTS[name].uses_truth and truth is None:
        raise ValueError(f"the shift {name!r} needs the case's ground truth (where the lesion is)")
    return SHIFTS[name].apply(images, brain, truth, geometry, np.random.default_rng(seed))


def tumor_share(truth: np.ndarray, brain: np.ndarray) -> float:
    """Tumor voxels (complete region) as a share of the brain's voxels."""
    return float(np.count_nonzero(truth > 0)) / max(1, int(np.count_nonzero(brain | (truth > 0))))


def slab(images: np.ndarray, truth: np.ndarray, geometry: Geometry, slices: int
         ) -> Tuple[np.ndarray, np.ndarray, Geometry]:
    """The `slices` axial slices centred on the tumor's largest cross-section, with their grid:
    a quick benchmark (a CI test) that still runs the whole pipeline."""
    area = np.count_nonzero(truth > 0, axis=(1, 2))
    centre = int(np.argmax(area)) if area.any() else truth.shape[0] // 2
    start = int(np.clip(centre - slices // 2, 0, max(0, truth.shape[0] - slices)))
    stop = min(truth.shape[0], start + slices)
    sub = Geometry((geometry.size[0], geometry.size[1], stop - start), geometry.spacing,
                   _origin_after(geometry, start), geometry.direction)
    return images[:, start:stop].copy(), truth[start:stop].copy(), sub
