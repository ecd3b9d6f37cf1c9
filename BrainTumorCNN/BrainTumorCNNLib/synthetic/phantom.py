"""A synthetic four-modality brain-tumor case with its ground truth (written by
`braintumorcnn phantom`, frontends/phantom.py; segmented by `braintumorcnn demo`, the
tests and the benchmarks).

The phantom is built from numbers, not from patient data:
- anatomy: the MNI152 2009a template nilearn ships (template.py), grey / white
  matter / CSF fractions, placed on the BraTS 2021 grid (240 x 240 x 155, 1 mm,
  LPS, SRI24-like position) by the mean template -> BraTS affine measured on
  real cases, with a small per-seed rotation and scaling;
- tumor: a noise-perturbed ellipsoid core (enhancing rim of varying thickness
  closed around a necrotic / non-enhancing centre) centred in supratentorial
  white matter, and edema that spreads from it preferentially along white
  matter and never into ventricles; whole-tumor volume, core and enhancing
  fractions drawn from those of the real cases; the core pushes the
  surrounding tissue aside (mass effect);
- intensities: per modality and class (CSF, grey matter, white matter,
  NCR/NET, edema, enhancing) drawn from the distributions measured on real
  BraTS 2021 cases relative to their healthy white matter
  (data/phantom_intensities.json, measured by
  Testing/Tools/measure_phantom_statistics.py): smooth Gaussian fields
  (fine and coarse scale in the measured proportion), correlated between
  modalities as in the real data, mapped through the measured quantiles, and
  moved towards the contrasts of one real case chosen by the seed; edema
  brightest near the core; partial-volume blur, smooth multiplicative bias
  field and Rician noise of the measured sizes; background 0 like
  skull-stripped BraTS.

Output: `<out>/<name>/<name>_{t1,t1ce,t2,flair,seg}.nii.gz` (int16 images,
uint8 labels 0 / 1 NCR-NET / 2 edema / 4 enhancing), the BraTS 2021 layout.
`--size small` writes a 1 mm crop around the tumor (128 x 128 x 64) for tests.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage, special
from scipy.spatial.transform import Rotation

from ..atomic import atomic_path
from ..reading.geometry import Geometry, to_image
from .template import (BRATS_DIRECTION, BRATS_ORIGIN, BRATS_SIZE, BRATS_SPACING, Template,
                       load_template)

STATISTICS_PATH = Path(__file__).resolve().parents[1] / "data" / "phantom_intensities.json"
MODALITIES = ("T1", "T1c", "T2", "FLAIR")
FILE_SUFFIXES = {"T1": "t1", "T1c": "t1ce", "T2": "t2", "FLAIR": "flair"}
HEALTHY_CLASSES = ("csf", "grey_matter", "white_matter")
#: Tumor class -> BraTS 2021 label value (= internal label value).
TUMOR_LABELS = {"ncr_net": 1, "edema": 2, "enhancing": 4}
SIZES = {"full": BRATS_SIZE, "small": (128, 128, 64)}  # voxels (x, y, z), 1 mm
#: Largest whole-tumor / core volume of a small phantom (ml), so that most of it fits its crop.
SMALL_LIMITS_ML = {"whole_tumor": 45.0, "tumor_core": 18.0}
MIN_CORE_ML = 8.0  # smaller cores hold too thin a rim and centre for their intensities to show

# Choices of the generator (not measured; documented so they can be judged):
TEXTURE_SIGMAS_MM = (1.5, 8.0)  # fine and coarse scale of within-tissue variation, equal variance
PARTIAL_VOLUME_SIGMA_MM = 0.7  # blur of the composed image (tissue boundaries are not sharp)
BIAS_SIGMA_MM = 50.0  # smoothness of the multiplicative bias field
EDEMA_GRADIENT_WEIGHT = 0.5  # share of edema variation that follows the distance from the core
MASS_EFFECT_RANGE_MM = 25.0  # the push decays over this distance beyond the core
EDEMA_WHITE_MATTER_PREFERENCE = 0.75  # 0: edema ignores tissue type; 1: only in white matter


@dataclass
class Phantom:
    """A synthetic case: images, ground truth and what they were made from."""

    name: str
    images: np.ndarray  # float32 (4, Z, Y, X): T1, T1c, T2, FLAIR in scanner-like units, 0 outside the brain
    truth: np.ndarray  # uint8 (Z, Y, X): 0, 1 NCR/NET, 2 edema, 4 enhancing (BraTS 2021)
    geometry: Geometry
    tissue: np.ndarray  # float32 (3, Z, Y, X): CSF, grey, white matter fractions of the healthy anatomy
    white_matter_reference: Dict[str, float]  # the intensity healthy white matter was given, per modality
    parameters: dict = field(default_factory=dict)  # drawn volumes, centre, thickness, ... (JSON-able)

    @property
    def brain_mask(self) -> np.ndarray:
        return np.any(self.images != 0, axis=0)


@lru_cache(maxsize=1)
def load_statistics() -> dict:
    """The measured statistics (data/phantom_intensities.json)."""
    if not STATISTICS_PATH.is_file():
        raise FileNotFoundError(f"{STATISTICS_PATH} is missing; reinstall the package or rerun "
                                "Testing/Tools/measure_phantom_statistics.py on real BraTS cases")
    return json.loads(STATISTICS_PATH.read_text())


# --------------------------------------------------------------------------- random fields
def smooth_noise(shape: Tuple[int, ...], sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field of unit variance and zero mean, correlation length
    `sigma_vox` voxels; float32 `shape`.  Large sigmas are made on a coarser grid."""
    factor = max(1, int(sigma_vox // 3))
    coarse = tuple(int(math.ceil(s / factor)) + 2 for s in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sigma_vox / factor,
                                    mode="wrap")
    if factor > 1:  # nearest-neighbour upsampling, then a blur of the block size removes the blocks
        for axis in range(noise.ndim):
            noise = np.repeat(noise, factor, axis=axis)
        noise = ndimage.gaussian_filter(noise[tuple(slice(0, s + factor) for s in shape)], 0.5 * factor)
    noise = noise[tuple(slice(0, s) for s in shape)]
    return ((noise - noise.mean()) / max(float(noise.std()), 1e-6)).astype(np.float32)


def _texture(shape, rng, fine_share: float) -> np.ndarray:
    """Unit-variance field: `fine_share` of the variance at the fine scale, the rest coarse."""
    fine, coarse = (smooth_noise(shape, s, rng) for s in TEXTURE_SIGMAS_MM)
    return (np.float32(math.sqrt(fine_share)) * fine + np.float32(math.sqrt(1.0 - fine_share)) * coarse)


def _correlation_cholesky(spearman) -> np.ndarray:
    """Cholesky factor of the Pearson correlation of Gaussians with Spearman correlation `spearman`."""
    rho = 2.0 * np.sin(np.pi * np.asarray(spearman, float) / 6.0)
    w, v = np.linalg.eigh((rho + rho.T) / 2.0)
    rho = v @ np.diag(np.clip(w, 1e-3, None)) @ v.T
    d = np.sqrt(np.diag(rho))
    return np.linalg.cholesky(rho / np.outer(d, d))


# --------------------------------------------------------------------------- drawing parameters
def _lognormal(rng, stats, key, low, high) -> float:
    value = math.exp(rng.normal(stats["log_volume_ml_mean"][key], stats["log_volume_ml_std"][key]))
    return float(np.clip(value, low, high))


def draw_tumor_parameters(rng: np.random.Generator, size: str) -> dict:
    """Volumes (ml), core and enhancing fractions (from the measured real tumors; the
    enhancing fraction kept in [0.25, 0.75] so the core has both a rim and a centre),
    ellipsoid axes and mass effect."""
    tumor = load_statistics()["tumor"]
    volumes = tumor["volume_ml"]
    wt_range = (0.8 * min(volumes["whole_tumor"]), 1.2 * max(volumes["whole_tumor"]))
    whole = _lognormal(rng, tumor, "whole_tumor", *wt_range)
    core_fraction = np.array(volumes["tumor_core"]) / np.array(volumes["whole_tumor"])
    logit = np.log(core_fraction / (1 - core_fraction))
    fraction = float(special.expit(rng.normal(logit.mean(), logit.std(ddof=1))))
    core = whole * float(np.clip(fraction, core_fraction.min() * 0.8, min(core_fraction.max() * 1.2, 0.8)))
    if size == "small":
        scale = min(1.0, SMALL_LIMITS_ML["whole_tumor"] / whole, SMALL_LIMITS_ML["tumor_core"] / core)
        whole, core = whole * scale, core * scale
    core = max(core, MIN_CORE_ML)
    whole = max(whole, 1.6 * core)
    et = np.array(tumor["enhancing_fraction_of_core"])
    enhancing_fraction = float(np.clip(rng.normal(et.mean(), et.std(ddof=1)), 0.25, 0.75))
    return {
        "whole_tumor_ml": round(whole, 2), "tumor_core_ml": round(core, 2),
        "enhancing_fraction_of_core": round(enhancing_fraction, 3),
        "axes_ratios": [1.0, round(float(rng.uniform(0.7, 1.0)), 3), round(float(rng.uniform(0.6, 0.95)), 3)],
        "mass_effect": round(float(rng.uniform(0.3, 0.8)), 3),
    }


# --------------------------------------------------------------------------- anatomy
def _brats_to_mni(rng: np.random.Generator) -> np.ndarray:
    """4x4 map BraTS LPS mm -> MNI152 LPS mm: the measured mean, perturbed per seed
    (rotation <= 4 degrees, scaling +-4 %) about the centre of the BraTS grid."""
    mean = np.array(load_statistics()["brats_to_mni_affine"]["mean"], float)
    rotation = Rotation.from_rotvec(rng.normal(0.0, 1.5, 3).clip(-4, 4) * np.pi / 180).as_matrix()
    scale = np.diag(rng.uniform(0.96, 1.04, 3))
    centre = np.array(BRATS_ORIGIN) + np.array(BRATS_SPACING) * (np.array(BRATS_SIZE) - 1) / 2
    perturb = np.eye(4)
    perturb[:3, :3] = rotation @ scale
    perturb[:3, 3] = centre - rotation @ scale @ centre
    return mean @ perturb


def _sample(image: sitk.Image, points_lps: np.ndarray, order: int = 1) -> np.ndarray:
    """Values of `image` at LPS points (..., 3) in mm, by interpolation; 0 outside."""
    origin = np.array(image.GetOrigin())
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    index = ((points_lps - origin) @ direction) / spacing  # (..., 3) in x, y, z
    array = sitk.GetArrayViewFromImage(image)
    coords = [index[..., 2], index[..., 1], index[..., 0]]
    return ndimage.map_coordinates(array, coords, order=order, mode="constant", cval=0.0).astype(np.float32)


def choose_tumor_centre(rng: np.random.Generator, template: Template, core_radius_mm: float) -> np.ndarray:
    """An MNI152 point (LPS, mm) deep in supratentorial white matter, far enough from
    the brain surface for a core of `core_radius_mm`."""
    coarse = sitk.Shrink(template.white_matter, [2, 2, 2])
    wm = ndimage.gaussian_filter(sitk.GetArrayFromImage(coarse), 1.0)
    mask = sitk.GetArrayFromImage(sitk.Shrink(template.brain_mask, [2, 2, 2])) > 0.5
    depth = ndimage.distance_transform_edt(mask, sampling=coarse.GetSpacing()[::-1])
    index = np.argwhere(np.ones(wm.shape, bool))[:, ::-1]  # (N, 3) x, y, z; ravel order of wm
    origin = np.array(coarse.GetOrigin())
    direction = np.array(coarse.GetDirection()).reshape(3, 3)
    spacing = np.array(coarse.GetSpacing())
    points = origin + (index * spacing) @ direction.T
    z, x = points[:, 2], points[:, 0]
    for margin in (8.0, 5.0, 2.0, 0.0):
        ok = ((wm.ravel() > 0.6) & (depth.ravel() >= core_radius_mm * 1.2 + margin + 10)
              & (z > -5.0) & (np.abs(x) > 12.0))
        if ok.any():
            return points[rng.choice(np.flatnonzero(ok))]
    raise RuntimeError(f"no place in the template for a tumor core of radius {core_radius_mm:.0f} mm")


def _grid(size: str, centre_index: np.ndarray) -> Geometry:
    full = np.array(BRATS_SIZE)
    shape = np.array(SIZES[size])
    start = np.clip(np.round(centre_index - shape / 2).astype(int), 0, full - shape)
    origin = np.array(BRATS_ORIGIN) + np.array(BRATS_DIRECTION).reshape(3, 3) @ (start * np.array(BRATS_SPACING))
    return Geometry(tuple(int(s) for s in shape), BRATS_SPACING, tuple(float(o) for o in origin), BRATS_DIRECTION)


def _points(geometry: Geometry) -> np.ndarray:
    """LPS coordinates (Z, Y, X, 3) of the voxel centres, mm, float32."""
    axes = [np.arange(n, dtype=np.float32) * s for n, s in zip(geometry.size, geometry.spacing)]
    k, j, i = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    d = np.array(geometry.direction, np.float32).reshape(3, 3)
    local = np.stack([i, j, k], axis=-1)
    return (local @ d.T + np.array(geometry.origin, np.float32)).astype(np.float32)


# --------------------------------------------------------------------------- tumor shapes
def _core_shape(points: np.ndarray, centre: np.ndarray, params: dict, rng) -> np.ndarray:
    """bool (Z, Y, X): a noise-perturbed, randomly oriented ellipsoid of the drawn core volume."""
    volume_vox = params["tumor_core_ml"] * 1000.0  # 1 mm voxels
    radius = (3.0 * volume_vox / (4.0 * math.pi)) ** (1 / 3)
    axes = np.array(params["axes_ratios"]) / np.prod(params["axes_ratios"]) ** (1 / 3) * radius
    rotation = Rotation.random(random_state=rng).as_matrix()
    local = (points - centre) @ rotation / axes
    r = np.linalg.norm(local, axis=-1)
    bumps = smooth_noise(r.shape, max(2.0, 0.5 * radius), rng)
    level = r * (1.0 + 0.22 * bumps)
    n = int(round(volume_vox))
    threshold = np.partition(level.ravel(), n)[n]
    core = level < threshold
    labelled, count = ndimage.label(core)
    if count > 1:
        core = labelled == np.argmax(np.bincount(labelled.ravel())[1:]) + 1
    return core


def _mass_effect_points(points: np.ndarray, centre: np.ndarray, core_radius: float, strength: float) -> np.ndarray:
    """Source points of the anatomy: tissue at radius s from the centre moves to r with
    r^3 = s^3 + R^3 (a sphere of radius R inserted), scaled by `strength` and
    tapered to nothing beyond the core."""
    offset = points - centre
    r = np.linalg.norm(offset, axis=-1, keepdims=True)
    source_r = np.cbrt(np.maximum(r ** 3 - core_radius ** 3, 0.0))
    taper = np.exp(-np.square(np.maximum(r - core_radius, 0.0) / MASS_EFFECT_RANGE_MM))
    push = strength * (r - source_r) * taper
    return points - offset / np.maximum(r, 1e-3) * push


def _split_core(core: np.ndarray, params: dict, rng) -> Tuple[np.ndarray, np.ndarray]:
    """(enhancing, ncr_net) bool masks: a rim of smoothly varying thickness around the centre."""
    depth = ndimage.distance_transform_edt(np.pad(core, 1))[1:-1, 1:-1, 1:-1]
    variation = 1.0 + 0.45 * smooth_noise(core.shape, 4.0, rng)
    relative = depth / np.maximum(variation, 0.2)
    values = relative[core]
    n = int(round(params["enhancing_fraction_of_core"] * values.size))
    n = min(max(n, 1), values.size - 1)
    threshold = np.partition(values, n)[n]
    enhancing = core & (relative < threshold)
    ncr = core & ~enhancing
    # the rim closes around the centre: no NCR/NET voxel touches non-core tissue
    exposed = ncr & ndimage.binary_dilation(~core)
    enhancing |= exposed
    ncr &= ~exposed
    return enhancing, ncr


def _edema(core: np.ndarray, brain: np.ndarray, white: np.ndarray, csf: np.ndarray, volume_vox: int,
           rng) -> Tuple[np.ndarray, np.ndarray]:
    """(edema mask, distance from the core in mm): spreads from the core, farther in
    white matter, never into ventricles; a 1-voxel shell always surrounds the core."""
    distance = ndimage.distance_transform_edt(~core)
    irregular = 1.0 + 0.35 * smooth_noise(core.shape, 6.0, rng)
    preference = (1.0 - EDEMA_WHITE_MATTER_PREFERENCE) + EDEMA_WHITE_MATTER_PREFERENCE * white
    effective = distance * np.maximum(irregular, 0.3) / np.maximum(preference, 0.05)
    candidates = brain & ~core & (csf < 0.5)
    values = effective[candidates]
    n = int(min(max(volume_vox, 1), values.size - 1))
    threshold = np.partition(values, n)[n]
    edema = candidates & (effective < threshold)
    edema |= ndimage.binary_dilation(core) & brain & ~core
    labelled, _ = ndimage.label(edema | core)
    keep = np.unique(labelled[core])
    edema &= np.isin(labelled, keep[keep > 0])
    return edema, distance.astype(np.float32)


# --------------------------------------------------------------------------- intensities
def _quantile_function(stats: dict, cls: str, modality: str, spread: float):
    levels = np.array(stats["quantile_levels"])
    values = np.log(np.maximum(np.array(stats["classes"][cls][modality]["quantiles"]), 1e-3))
    median = np.interp(0.5, levels, values)
    values = median + spread * (values - median)
    return levels, values


def _texture_spread(stats: dict, cls: str, modality: str) -> Tuple[float, float]:
    """(spread, fine_share): the factor on the measured log-quantile spread so that,
    once noise (and for healthy tissue the bias field) are added back, the spread
    is the measured one; and the share of the remaining variance at the fine
    scale (the measured fine-scale std less the noise)."""
    measured = stats["classes"][cls][modality]
    levels = np.array(stats["quantile_levels"])
    q = np.log(np.maximum(np.array(measured["quantiles"]), 1e-3))
    sd = (np.interp(0.85, levels, q) - np.interp(0.15, levels, q)) / (2 * 1.0364)
    median = math.exp(np.interp(0.5, levels, q))
    nb = stats["noise_and_bias"][modality]
    noise = (nb["noise_std"] / median) ** 2
    texture = max(sd * sd - noise - (nb["bias_log_std"] ** 2 if cls in HEALTHY_CLASSES else 0.0), 0.15 * sd * sd)
    fine = max((measured.get("fine_std", 0.0) / median) ** 2 - noise, 0.0)
    return math.sqrt(texture) / max(sd, 1e-6), float(np.clip(fine / texture, 0.0, 1.0))


def _class_values(cls: str, shape, rng, shift: np.ndarray, gradient: Optional[np.ndarray] = None,
                  where: Optional[np.ndarray] = None, exact: bool = False) -> np.ndarray:
    """float32 (4, ...) ratios to white matter of class `cls`: correlated smooth
    Gaussian fields through the measured quantile functions, times exp(shift).

    exact=True maps the field's ranks inside `where`, so a region small next to
    the texture (a necrotic centre of a few ml) still has the measured
    distribution rather than whatever one blob of texture gives it."""
    stats = load_statistics()
    spreads = [_texture_spread(stats, cls, modality) for modality in MODALITIES]
    fine_share = float(np.mean([f for _, f in spreads]))
    fields = np.stack([_texture(shape, rng, fine_share) for _ in MODALITIES])  # (4, ...)
    chol = _correlation_cholesky(stats["classes"][cls]["spearman"]).astype(np.float32)
    fields = np.tensordot(chol, fields, axes=1)
    out = np.zeros((4,) + tuple(shape), np.float32)
    for m, modality in enumerate(MODALITIES):
        z = fields[m]
        levels, logq = _quantile_function(stats, cls, modality, spreads[m][0])
        if gradient is not None:
            direction = 1.0 if np.interp(0.5, levels, logq) > 0 else -1.0
            z = (math.sqrt(1 - EDEMA_GRADIENT_WEIGHT ** 2) * z + EDEMA_GRADIENT_WEIGHT * direction * gradient)
        z = z if where is None else z[where]
        u = special.ndtr(_rank_gaussian(z.ravel()).reshape(z.shape) if exact else z)
        values = np.exp(np.interp(u, levels, logq) + shift[m]).astype(np.float32)
        if where is None:
            out[m] = values
        else:
            out[m][where] = values
    return out


def _contrast_profile(rng) -> Dict[str, np.ndarray]:
    """Per-class log offsets (4 modalities) of this phantom's intensities from the
    mean: a fraction, uniform in [0, 1], of one real case's offsets (its class
    medians against the mean over cases), so the phantoms vary as real cases do
    while keeping the contrasts between classes of a real case."""
    stats = load_statistics()
    per_case = stats["per_case_medians"]
    case = per_case[sorted(per_case)[rng.integers(len(per_case))]]
    weight = rng.uniform(0.0, 1.0)
    levels = stats["quantile_levels"]
    profile = {}
    for cls in HEALTHY_CLASSES + tuple(TUMOR_LABELS):
        mean = [stats["classes"][cls][m]["quantiles"][levels.index(0.5)] for m in MODALITIES]
        own = case.get(cls)
        profile[cls] = (np.zeros(4, np.float32) if own is None else
                        (weight * np.log(np.array([own[m] for m in MODALITIES]) / np.array(mean))).astype(np.float32))
    return profile


def _rank_gaussian(values: np.ndarray) -> np.ndarray:
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return special.ndtri((ranks + 0.5) / values.size).astype(np.float32)


def _synthesise(truth: np.ndarray, tissue: np.ndarray, brain: np.ndarray, distance: np.ndarray,
                rng) -> Tuple[np.ndarray, Dict[str, float]]:
    """Images (4, Z, Y, X) in scanner-like units from labels, tissue fractions
    (3, Z, Y, X) and the distance from the core (mm): class intensities (ratios
    to white matter), partial-volume blur, bias field, scale, Rician noise."""
    stats = load_statistics()
    shape = brain.shape
    ratios = np.zeros((4,) + shape, np.float32)
    profile = _contrast_profile(rng)
    for c, cls in enumerate(HEALTHY_CLASSES):
        where = brain & (tissue[c] > 0)
        ratios += tissue[c] * _class_values(cls, shape, rng, profile[cls], where=where)
    box = ndimage.find_objects((truth > 0).astype(np.uint8))[0]
    for cls, value in TUMOR_LABELS.items():
        where = truth[box] == value
        gradient = None
        if cls == "edema":
            gradient = np.zeros(where.shape, np.float32)
            gradient[where] = _rank_gaussian(-distance[box][where])
        values = _class_values(cls, where.shape, rng, profile[cls], gradient=gradient, where=where, exact=True)
        ratios[(slice(None),) + box][:, where] = values[:, where]
    weight = ndimage.gaussian_filter(brain.astype(np.float32), PARTIAL_VOLUME_SIGMA_MM)
    images = np.zeros_like(ratios)
    white_reference = {}
    for m, modality in enumerate(MODALITIES):
        blurred = ndimage.gaussian_filter(ratios[m] * brain, PARTIAL_VOLUME_SIGMA_MM) / np.maximum(weight, 1e-3)
        nb = stats["noise_and_bias"][modality]
        bias = np.exp(nb["bias_log_std"] * smooth_noise(shape, BIAS_SIGMA_MM, rng))
        measured = np.log(np.array(stats["white_matter_reference"][modality], float))
        scale = float(np.exp(rng.normal(measured.mean(), 0.5 * measured.std())))
        signal = blurred * bias * scale
        sigma = nb["noise_std"] * scale
        noisy = np.sqrt((signal + sigma * rng.standard_normal(shape, np.float32)) ** 2
                        + (sigma * rng.standard_normal(shape, np.float32)) ** 2)
        images[m] = np.where(brain, np.maximum(np.round(noisy), 1.0), 0.0)
        white_reference[modality] = round(scale, 3)
    return images, white_reference


# --------------------------------------------------------------------------- the phantom
def make_phantom(seed: int = 0, size: str = "full", name: Optional[str] = None, growth: float = 1.0) -> Phantom:
    """Make a phantom; the same seed and size give the same phantom, bit for bit.  `growth` scales the
    drawn whole-tumor and core volumes and nothing else (every random draw stays the same), so seed
    and size with growth 1.3 give the same patient later, its tumor grown (a prior and current pair)."""
    if size not in SIZES:
        raise ValueError(f"unknown phantom size {size!r}; choose one of {', '.join(SIZES)}")
    if growth <= 0:
        raise ValueError(f"growth must be positive, not {growth}")
    rng = np.random.default_rng(seed)
    template = load_template()
    params = draw_tumor_parameters(rng, size)
    placed_radius = (3.0 * params["tumor_core_ml"] * 1000.0 / (4.0 * math.pi)) ** (1 / 3)  # where it started
    if growth != 1.0:
        params.update(whole_tumor_ml=round(params["whole_tumor_ml"] * growth, 2),
                      tumor_core_ml=round(params["tumor_core_ml"] * growth, 2), growth=growth)
    core_radius = (3.0 * params["tumor_core_ml"] * 1000.0 / (4.0 * math.pi)) ** (1 / 3)
    to_mni = _brats_to_mni(rng)
    centre_mni = choose_tumor_centre(rng, template, placed_radius)
    centre = (np.linalg.inv(to_mni) @ np.append(centre_mni, 1.0))[:3]
    centre_index = np.linalg.solve(np.array(BRATS_DIRECTION).reshape(3, 3),
                                   centre - np.array(BRATS_ORIGIN)) / np.array(BRATS_SPACING)
    geometry = _grid(size, centre_index)
    points = _points(geometry)

    # healthy anatomy, pushed aside by the core
    core = _core_shape(points, centre.astype(np.float32), params, rng)
    source = _mass_effect_points(points, centre.astype(np.float32), core_radius, params["mass_effect"])
    mni = source @ to_mni[:3, :3].T.astype(np.float32) + to_mni[:3, 3].astype(np.float32)
    del source
    brain = _sample(template.brain_mask, mni) > 0.5
    grey = np.clip(_sample(template.grey_matter, mni), 0, 1) * brain
    white = np.clip(_sample(template.white_matter, mni), 0, 1) * brain
    del mni, points
    total = np.maximum(grey + white, 1.0)
    grey, white = grey / total, white / total
    csf = (1.0 - grey - white) * brain
    tissue = np.stack([csf, grey, white]).astype(np.float32)

    # tumor labels
    core &= ndimage.binary_erosion(brain, iterations=3)
    enhancing, ncr = _split_core(core, params, rng)
    edema_vox = int(round((params["whole_tumor_ml"] - params["tumor_core_ml"]) * 1000.0))
    edema, distance = _edema(core, brain, white, csf, edema_vox, rng)
    truth = np.zeros(brain.shape, np.uint8)
    truth[edema] = TUMOR_LABELS["edema"]
    truth[ncr] = TUMOR_LABELS["ncr_net"]
    truth[enhancing] = TUMOR_LABELS["enhancing"]

    # intensities, on the brain's bounding box
    images = np.zeros((4,) + brain.shape, np.float32)
    box = tuple(slice(max(b.start - 3, 0), b.stop + 3) for b in ndimage.find_objects(brain.astype(np.uint8))[0])
    images[(slice(None),) + box], white_reference = _synthesise(truth[box], tissue[(slice(None),) + box],
                                                                brain[box], distance[box], rng)

    depth = ndimage.distance_transform_edt(np.pad(core, 1))[1:-1, 1:-1, 1:-1]
    params.update(seed=int(seed), size=size,
                  rim_thickness_mm=round(2.0 * float(depth[enhancing].mean()), 2),
                  centre_lps_mm=[round(float(x), 2) for x in centre],
                  centre_mni_lps_mm=[round(float(x), 2) for x in centre_mni],
                  volumes_ml={cls: round(float((truth == v).sum()) * geometry.voxel_volume_ml, 2)
                              for cls, v in TUMOR_LABELS.items()})
    return Phantom(name or default_name(seed), images, truth, geometry, tissue, white_reference, params)


def default_name(seed: int) -> str:
    return f"Phantom_{seed:05d}"


def write_phantom(phantom: Phantom, out_dir) -> Dict[str, Path]:
    """Write `<out_dir>/<name>/<name>_{t1,t1ce,t2,flair,seg}.nii.gz` atomically; returns the files by
    modality ("T1", "T1c", "T2", "FLAIR", "truth")."""
    folder = Path(out_dir) / phantom.name
    files: Dict[str, Path] = {}
    for m, modality in enumerate(MODALITIES):
        files[modality] = folder / f"{phantom.name}_{FILE_SUFFIXES[modality]}.nii.gz"
        _write(phantom.images[m].astype(np.int16), phantom.geometry, files[modality])
    files["truth"] = folder / f"{phantom.name}_seg.nii.gz"
    _write(phantom.truth.astype(np.uint8), phantom.geometry, files["truth"])
    return files


def _write(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    with atomic_path(path) as tmp:
        sitk.WriteImage(to_image(array, geometry), str(tmp), useCompression=True)
