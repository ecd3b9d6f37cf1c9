"""Rigid registration of T1, T2 and FLAIR onto the T1c, for scans straight from
the scanner: each series on its own grid, the head moved a little between them.

SimpleITK's registration framework: Mattes mutual information (it compares
different contrasts), a pyramid (shrink 4/2/1 with smoothing) so large
motions are found on coarse images and refined on fine ones, a centred
initialisation (centres of mass or of the images), and regular-step gradient
descent with scales from physical shifts, so a step of a rotation (radians)
and of a translation (mm) move voxels alike.  An affine stage may follow.

Every result is checked, because a registration that went wrong still returns
a transform: a mutual information after registration near what unrelated
images give, or a motion no head makes in a scanner (rotation beyond 30°,
shift beyond 50 mm, scaling beyond 15 %), gives a warning naming the sequence.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np
import SimpleITK as sitk

log = logging.getLogger(__name__)

REFERENCE = "T1c"  # the sequence the others are registered onto: the tumor's best-defined contrast


class RegistrationError(ValueError):
    """A sequence that cannot be registered at all (no contrast, no overlap); names it."""


@dataclass(frozen=True)
class RegistrationConfig:
    affine: bool = False  # an affine stage after the rigid one (scaling and shear of other scanners)
    initialisation: str = "moments"  # "moments" (centres of mass) or "geometry" (centres of the grids)
    histogram_bins: int = 32
    samples: int = 150_000  # T1c voxels drawn at random per pyramid level (all of a small level)
    shrink_factors: Tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: Tuple[float, ...] = (4.0, 2.0, 0.0)
    learning_rate: float = 2.0
    min_step: float = 1e-3
    iterations: int = 200  # per level
    seed: int = 1  # the random sampling's; fixed so a case registers the same way twice
    #: Onto the T1c grid with "bspline" (cubic: keeps the texture the networks use;
    #: linear blurs it) or "linear".
    interpolation: str = "bspline"
    # Quality checks (warnings): a head in a scanner does not move more than this between series.
    max_rotation_deg: float = 30.0
    max_shift_mm: float = 50.0
    max_scale_change: float = 0.15
    #: Mutual information (nats, 32 bins, on the T1c grid) below which a registration
    #: is taken as failed.  T1, T2 and FLAIR of the 13 BraTS 2021 cases, aligned with
    #: their T1c: 0.33-0.53; the same shifted 30 mm: 0.10-0.16; an image of noise: 0.00.
    min_mutual_information: float = 0.25


@dataclass
class Registration:
    """One sequence registered onto the T1c: the transform (T1c physical point ->
    the sequence's physical point, ITK's convention) and how it went."""

    sequence: str
    transform: sitk.Transform
    rotation_deg: float  # rotation angle of the transform's linear part
    shift_mm: float  # displacement of the T1c grid's centre
    scale_change: float  # largest |singular value - 1| of the linear part (0 for rigid)
    mutual_information: float  # after registration (higher = better aligned)
    initial_mutual_information: float  # after the centred initialisation
    iterations: int
    stop: str  # the optimiser's reason for stopping
    warnings: List[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.sequence}: rotation {self.rotation_deg:.1f}°, shift {self.shift_mm:.1f} mm, "
                f"mutual information {self.initial_mutual_information:.2f} -> {self.mutual_information:.2f}")


def register(fixed: sitk.Image, moving: sitk.Image, sequence: str,
             config: RegistrationConfig = RegistrationConfig()) -> Registration:
    """Register `moving` (the sequence named `sequence`) onto `fixed` (the T1c)."""
    fixed = _as_float(fixed, REFERENCE)
    moving = _as_float(moving, sequence)
    init = (sitk.CenteredTransformInitializerFilter.MOMENTS if config.initialisation == "moments"
            else sitk.CenteredTransformInitializerFilter.GEOMETRY)
    transform: sitk.Transform = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(), init)
    initial_mi = mutual_information(fixed, moving, transform, config)
    try:
        transform, iterations, stop = _run(fixed, moving, transform, config)
        if config.affine:
            affine = sitk.AffineTransform(3)
            affine.SetCenter(transform.GetCenter())
            affine.SetMatrix(transform.GetMatrix())
            affine.SetTranslation(transform.GetTranslation())
            transform, more, stop = _run(fixed, moving, affine, config)
            iterations += more
    except RuntimeError as exc:  # e.g. "All samples map outside moving image buffer"
        raise RegistrationError(f"{sequence}: registration onto {REFERENCE} failed ({_reason(exc)}); "
                                f"check that the {sequence} series shows the same head as the {REFERENCE}") from None
    result = Registration(sequence, transform, *motion_of(transform, fixed),
                          mutual_information(fixed, moving, transform, config), initial_mi, iterations, stop)
    result.warnings = check(result, config)
    return result


def _run(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, config: RegistrationConfig
         ) -> Tuple[sitk.Transform, int, str]:
    method = _method(config)
    voxels = int(np.prod(fixed.GetSize()))
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentagePerLevel(
        [min(1.0, config.samples * f ** 3 / voxels) for f in config.shrink_factors], config.seed)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=config.learning_rate, minStep=config.min_step, numberOfIterations=config.iterations,
        gradientMagnitudeTolerance=1e-6, relaxationFactor=0.5)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(config.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(config.smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    out = method.Execute(fixed, moving)
    return _flatten(out), method.GetOptimizerIteration(), method.GetOptimizerStopConditionDescription()


def _method(config: RegistrationConfig) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=config.histogram_bins)
    method.SetInterpolator(sitk.sitkLinear)
    return method


def mutual_information(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform,
                       config: RegistrationConfig = RegistrationConfig()) -> float:
    """Mattes mutual information (nats) of the images under `transform`, on a
    regular sample of the T1c voxels: the same number every time for one pair."""
    method = _method(config)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(min(1.0, config.samples / int(np.prod(fixed.GetSize()))), config.seed)
    method.SetInitialTransform(transform, inPlace=False)
    try:
        return -float(method.MetricEvaluate(fixed, moving))
    except RuntimeError:  # no sample falls inside the moving image: nothing in common
        return 0.0


def _flatten(transform: sitk.Transform) -> sitk.Transform:
    """The single Euler / affine transform inside the composite one Execute returns."""
    if isinstance(transform, sitk.CompositeTransform) or transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        inner = composite.GetNthTransform(composite.GetNumberOfTransforms() - 1)
        transform = inner.Downcast()
    else:
        transform = transform.Downcast()
    return transform


def motion_of(transform: sitk.Transform, fixed: sitk.Image) -> Tuple[float, float, float]:
    """(rotation in degrees, shift of the fixed grid's centre in mm, scale change) of `transform`."""
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    u, singular, vt = np.linalg.svd(matrix)
    rotation = u @ vt  # the nearest rotation (the matrix itself for a rigid transform)
    angle = math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0))))
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in fixed.GetSize()])
    shift = float(np.linalg.norm(np.subtract(transform.TransformPoint(centre), centre)))
    return angle, shift, float(np.max(np.abs(singular - 1)))


def check(result: Registration, config: RegistrationConfig = RegistrationConfig()) -> List[str]:
    """Warnings (naming the sequence) for a registration that looks wrong."""
    problems = []
    if result.mutual_information < config.min_mutual_information:
        problems.append(f"mutual information with {REFERENCE} only {result.mutual_information:.2f} after "
                        f"registration (aligned brain MRI scores above {config.min_mutual_information:.2f})")
    if result.rotation_deg > config.max_rotation_deg:
        problems.append(f"rotation {result.rotation_deg:.0f}° (more than {config.max_rotation_deg:.0f}°)")
    if result.shift_mm > config.max_shift_mm:
        problems.append(f"shift {result.shift_mm:.0f} mm (more than {config.max_shift_mm:.0f} mm)")
    if result.scale_change > config.max_scale_change:
        problems.append(f"scaling by {result.scale_change:.0%} (more than {config.max_scale_change:.0%})")
    if not problems:
        return []
    return [f"{result.sequence}: registration onto {REFERENCE} looks wrong: {'; '.join(problems)}. "
            f"Check that the {result.sequence} series is of the same patient and session, and look at the "
            "result before trusting the segmentation"]


def onto_reference(fixed: sitk.Image, moving: sitk.Image, sequence: str,
                   config: RegistrationConfig = RegistrationConfig()) -> Tuple[sitk.Image, Registration]:
    """Register `moving` (the sequence named `sequence`) onto the T1c `fixed`
    and resample it onto the T1c grid (float32; 0 outside the sequence's field
    of view); logs the result and its warnings."""
    result = register(fixed, moving, sequence, config)
    log.info("registered %s", result.summary())
    for warning in result.warnings:
        log.warning("%s", warning)
    return resample(_as_float(moving, sequence), fixed, result.transform, config.interpolation), result


def resample(moving: sitk.Image, fixed: sitk.Image, transform: sitk.Transform, interpolation: str) -> sitk.Image:
    """`moving` on `fixed`'s grid through `transform`, float32.  Cubic B-spline
    values are kept inside the image only (where linear interpolation is not 0)
    and never below the image's minimum, so background stays 0 (preprocessing
    takes non-zero voxels as brain) and no ringing enters it."""
    linear = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    if interpolation == "linear":
        return linear
    cubic = sitk.Resample(moving, fixed, transform, sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
    values = np.maximum(sitk.GetArrayViewFromImage(cubic), float(sitk.GetArrayViewFromImage(moving).min()))
    values[sitk.GetArrayViewFromImage(linear) == 0] = 0.0
    out = sitk.GetImageFromArray(values.astype(np.float32))
    out.CopyInformation(fixed)
    return out


def _as_float(image: sitk.Image, sequence: str) -> sitk.Image:
    """A float32 copy with NaN/Inf as 0; RegistrationError for an image without contrast."""
    array = sitk.GetArrayViewFromImage(image)
    finite = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if finite.size == 0 or float(finite.min()) == float(finite.max()):
        raise RegistrationError(f"{sequence}: the image is constant (every voxel {float(finite.flat[0]):g}), "
                                f"so it cannot be registered onto {REFERENCE}; check the series chosen")
    out = sitk.GetImageFromArray(finite)
    out.CopyInformation(image)
    return out


def _reason(exc: RuntimeError) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
