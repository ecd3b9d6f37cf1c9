"""The paper's preprocessing, shared by training and inference so both see the same numbers.

1. clip each modality at its 1st / 99th percentile inside the brain;
2. N4 bias-field correction (SimpleITK) of T1 and T1c (the paper; `n4_sequences`), on a shrunken image so
   it takes seconds;
3. z-score each modality inside the brain; background set to BACKGROUND_VALUE.

The z-score's statistics are a choice of the model (`statistics`, recorded in its
card and applied identically at training and inference): the paper's mean and sd,
or the median and the interquartile range, which a large bright tumor or a scanner's
other contrast move less (the site-shift benchmark measures both).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from ..modalities import MODALITIES

#: Bumped whenever preprocessing gives other numbers for the same config, so
#: training caches made by older code are not reused.
PREPROCESSING_VERSION = 2

#: Value of every voxel outside the brain after preprocessing, and of the
#: padding around a slice in dense inference: below any normalised brain
#: intensity, so the networks can tell "outside" from tissue.
BACKGROUND_VALUE = -4.0
#: How the z-score centres and scales each modality: "mean-sd" (the paper) or "median-iqr" (the IQR
#: divided by IQR_PER_SD, so a Gaussian's spread maps to 1 as with the sd).
STATISTICS = ("mean-sd", "median-iqr")
IQR_PER_SD = 1.349
#: Widths of `through_plane_average` at inference: FLAIR over 5 mm, T2 over 3 mm along the slice axis, as
#: the thick slices of other sites show them (docs/training.md: on the raw images it raised the complete Dice).
THROUGH_PLANE_MM = {"T2": 3.0, "FLAIR": 5.0}


@dataclass(frozen=True)
class PreprocessingConfig:
    clip: bool = True
    clip_percentiles: Tuple[float, float] = (1.0, 99.0)
    n4: bool = True
    # the paper corrects T1 and T1c; a bias field in FLAIR and T2 is the benchmark's worst site shift
    n4_sequences: Tuple[str, ...] = ("T1", "T1c")
    n4_shrink: int = 4  # N4 runs on the image shrunk by this factor per axis
    n4_iterations: Tuple[int, ...] = (50, 50, 30)  # most iterations per fitting level
    n4_convergence: float = 0.001  # a level stops when the field changes less than this (N4's threshold)
    zscore: bool = True
    statistics: str = "mean-sd"  # one of STATISTICS

    def __post_init__(self):
        if self.statistics not in STATISTICS:
            raise ValueError(f"unknown normalisation statistics {self.statistics!r}; known: {', '.join(STATISTICS)}")
        unknown = [s for s in self.n4_sequences if s not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown sequence(s) {unknown} for N4; known: {', '.join(MODALITIES)}")

    @classmethod
    def of_model(cls, card: dict, base: Optional["PreprocessingConfig"] = None) -> "PreprocessingConfig":
        """`base` (default: the defaults) with the normalisation and the N4-corrected sequences the model
        was trained with (its card's training config: under "training" in a shipped card, at the top in a
        training run's; older cards: the paper's mean and sd, T1 and T1c)."""
        config = card.get("training", {}).get("config") or card.get("config") or {}
        trained = config.get("preprocessing", {})
        return replace(base or cls(), statistics=trained.get("statistics", "mean-sd"),
                       n4_sequences=tuple(trained.get("n4_sequences", ("T1", "T1c"))))


@dataclass
class Preprocessed:
    images: np.ndarray  # float32 (4, Z, Y, X), normalised, background = BACKGROUND_VALUE
    brain_mask: np.ndarray  # bool (Z, Y, X)
    # per modality, the value a raw 0 (no signal; N4's field multiplies it) takes after the normalisation:
    # what a thick slab that mixes the brain's edge with the outside brings in (learning.sampling)
    zero: Tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)


def brain_mask(images: np.ndarray, background: float = 0.0) -> np.ndarray:
    """Voxels that differ from `background` in any modality, bool (Z, Y, X): 0 in raw images (BraTS data
    is skull-stripped), BACKGROUND_VALUE in preprocessed ones."""
    return np.any(images != background, axis=0)


def preprocess(images: np.ndarray, config: PreprocessingConfig = PreprocessingConfig(),
               spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0),
               mask: Optional[np.ndarray] = None) -> Preprocessed:
    """Normalise a (4, Z, Y, X) volume (T1, T1c, T2, FLAIR; spacing in mm, x y z).

    Raises ValueError for NaN/Inf voxels, an empty brain or a constant modality, naming it."""
    for name, channel in zip(MODALITIES, images):
        bad = int(np.count_nonzero(~np.isfinite(channel)))
        if bad:
            raise ValueError(f"{name}: {bad} voxels are NaN or infinite; replace them (with 0 outside the brain)")
    mask = brain_mask(images) if mask is None else mask.astype(bool)
    if not mask.any():
        raise ValueError("the volume is empty: no non-zero voxel in any modality")
    out = np.empty(images.shape, dtype=np.float32)
    zero = [0.0] * len(MODALITIES)
    channels = []
    for c in range(len(MODALITIES)):
        channel = images[c].astype(np.float32)
        if config.clip:
            low, high = np.percentile(channel[mask], config.clip_percentiles)
            channel = np.clip(channel, low, high)
        channels.append(channel)
    corrected = [c for c, name in enumerate(MODALITIES) if config.n4 and name in config.n4_sequences]
    # the sequences' fits side by side: ITK leaves a core idle in much of each fit, and releases the GIL
    # (T1 and T1c of BraTS2021_00000: the same CPU seconds, 29 % less wall time; docs/speed.md)
    if corrected:
        with ThreadPoolExecutor(min(len(corrected), os.cpu_count() or 1)) as pool:
            for c, channel in zip(corrected, pool.map(lambda c: n4_correct(channels[c], mask, config, spacing),
                                                      corrected)):
                channels[c] = channel
    for c, name in enumerate(MODALITIES):
        channel = channels[c]
        if config.zscore:
            # in float64: float32 sums of squares overflow near 1e19 and a tiny std underflows
            centre, spread = _centre_spread(channel[mask].astype(np.float64), config.statistics)
            if spread == 0.0 or not np.isfinite(spread):
                raise ValueError(f"{name} is constant inside the brain; it carries no image information")
            channel = ((channel - centre) / spread).astype(np.float32)
            zero[c] = -centre / spread
        channel[~mask] = BACKGROUND_VALUE
        out[c] = channel
    return Preprocessed(out, mask, tuple(zero))


def through_plane_average(images: np.ndarray, brain: np.ndarray, slice_spacing_mm: float,
                          widths_mm=THROUGH_PLANE_MM) -> np.ndarray:
    """A float32 copy of (4, Z, Y, X) images whose named sequences are averaged along the slice axis inside
    the brain: a box of width / spacing slices applied three times, what a thick slice of that width
    resampled back linearly gives on average over where its slab starts.  Voxels outside the brain neither
    enter the averages nor change; a width of at most one slice (thick slices already) changes nothing.

    Meant for the raw images, before `preprocess`: the z-score then divides by the smoothed brain's smaller
    spread, so the lesion stands further above the brain than in the thin slices (averaging the z-scores
    instead smooths without that, and measured no gain: docs/training.md)."""
    out = images.astype(np.float32, copy=True)
    inside = brain.astype(np.float32)
    for name, width in widths_mm.items():
        n = int(round(width / slice_spacing_mm))
        if n <= 1:
            continue
        c = MODALITIES.index(name)
        values, weights = np.where(brain, images[c], 0.0).astype(np.float32), inside
        for _ in range(3):
            values = ndimage.uniform_filter1d(values, n, axis=0, mode="constant")
            weights = ndimage.uniform_filter1d(weights, n, axis=0, mode="constant")
        out[c] = np.where(brain, values / np.maximum(weights, 1e-6), out[c])
    return out


def _centre_spread(values: np.ndarray, statistics: str) -> Tuple[float, float]:
    """The centre and the spread the z-score uses, of float64 brain intensities."""
    if statistics == "median-iqr":
        q1, median, q3 = np.percentile(values, (25, 50, 75))
        return float(median), float(q3 - q1) / IQR_PER_SD
    return float(values.mean()), float(values.std())


N4_MIN_SHRUNK_SIZE = 4  # voxels per axis left after shrinking for N4


def n4_correct(channel: np.ndarray, mask: np.ndarray, config: PreprocessingConfig,
               spacing: Tuple[float, float, float]) -> np.ndarray:
    """N4ITK bias-field correction of one (Z, Y, X) modality, fitted on a shrunken copy.

    The bias field is estimated at low resolution and applied at full resolution."""
    import SimpleITK as sitk  # here only: training from a cache runs without SimpleITK
    # N4 needs intensities >= 1; shift only when they are not, since a shift
    # turns the multiplicative bias N4 models into a different one.
    shift = min(float(channel[mask].min()) - 1.0, 0.0)
    positive = np.where(mask, channel - shift, 0.0).astype(np.float32)
    # A B-spline field has no extent along an axis of one voxel: fit a single slice in 2-D.
    flat = tuple(axis for axis, n in enumerate(channel.shape) if n == 1)
    if len(flat) > 1:
        return channel  # a line of voxels: no field to fit
    image = sitk.GetImageFromArray(positive.squeeze(flat))
    image.SetSpacing([s for axis, s in zip((2, 1, 0), spacing) if axis not in flat])
    mask_image = sitk.GetImageFromArray(mask.squeeze(flat).astype(np.uint8))
    mask_image.CopyInformation(image)
    # shrink less along short axes: the B-spline fit needs a few voxels on each
    shrink = [max(1, min(config.n4_shrink, size // N4_MIN_SHRUNK_SIZE)) for size in image.GetSize()]
    small = sitk.Shrink(image, shrink)
    small_mask = sitk.Shrink(mask_image, shrink)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(config.n4_iterations))
    n4.SetConvergenceThreshold(config.n4_convergence)
    n4.Execute(small, small_mask)
    log_bias = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image)).astype(np.float32).reshape(channel.shape)
    corrected = positive / np.exp(log_bias)
    return np.where(mask, corrected + shift, channel).astype(np.float32)
