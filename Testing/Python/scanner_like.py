"""Scans as a scanner gives them, made from a real BraTS case: each sequence
moved by a known rigid motion of the head and sampled on its own clinical grid
(thick axial slices, an oblique slab), for tests of registration and DICOM input."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from BrainTumorCNNLib.preparing import registration

CASE = "brats2021/BraTS2021_00000"
FILES = {"T1": "t1", "T1c": "t1ce", "T2": "t2", "FLAIR": "flair", "truth": "seg"}


def case_file(shared_data: Path, sequence: str) -> Path:
    folder = shared_data / CASE
    return folder / f"{folder.name}_{FILES[sequence]}.nii.gz"


def centre(image: sitk.Image) -> Tuple[float, float, float]:
    return image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])


def head_motion(rotation_deg: Sequence[float], shift_mm: Sequence[float], about) -> sitk.Euler3DTransform:
    """A rigid motion: rotations about x, y, z (degrees) around `about`, then a shift (mm)."""
    motion = sitk.Euler3DTransform()
    motion.SetCenter(tuple(about))
    motion.SetRotation(*[math.radians(a) for a in rotation_deg])
    motion.SetTranslation(tuple(shift_mm))
    return motion


def grid(like: sitk.Image, spacing: Sequence[float], rotation_deg: Sequence[float] = (0, 0, 0)) -> sitk.Image:
    """An empty grid of `spacing` centred on `like`, covering its extent, its axes
    turned by `rotation_deg` (about x, y, z): an oblique slab when not zero."""
    extent = np.multiply(like.GetSize(), like.GetSpacing())
    size = [int(math.ceil(e / s)) for e, s in zip(extent, spacing)]
    turn = head_motion(rotation_deg, (0, 0, 0), (0, 0, 0))
    direction = np.array(turn.GetMatrix()).reshape(3, 3) @ np.array(like.GetDirection()).reshape(3, 3)
    out = sitk.Image(size, sitk.sitkFloat32)
    out.SetSpacing(tuple(float(s) for s in spacing))
    out.SetDirection(tuple(direction.ravel()))
    half = direction @ (np.multiply(spacing, np.subtract(size, 1)) / 2)
    out.SetOrigin(tuple(np.subtract(centre(like), half)))
    return out


def as_scanned(image: sitk.Image, motion: sitk.Transform, on: sitk.Image,
               pixel: Optional[int] = sitk.sitkInt16) -> sitk.Image:
    """`image` (on the case's grid) seen after the head moved by `motion`, sampled on
    the grid `on`: scanned(y) = image(motion(y)).  Registering it back onto the
    case's grid should find motion's inverse.  Cubic interpolation (background
    kept 0), which blurs less than linear: a scanner samples without blurring."""
    moved = registration.resample(sitk.Cast(image, sitk.sitkFloat32), on, motion, "bspline")
    return sitk.Cast(sitk.Round(moved), pixel) if pixel is not None else moved


def mean_disagreement_mm(found: sitk.Transform, expected: sitk.Transform, reference: sitk.Image,
                         mask: np.ndarray, step: int = 7) -> Tuple[float, float]:
    """Mean and largest distance (mm) between where the two transforms send the
    brain voxels of `reference` (every `step`-th voxel, (Z, Y, X) mask)."""
    points = [reference.TransformIndexToPhysicalPoint([int(i) for i in zyx[::-1]])
              for zyx in np.argwhere(mask)[::step]]
    distances = [np.linalg.norm(np.subtract(found.TransformPoint(p), expected.TransformPoint(p))) for p in points]
    return float(np.mean(distances)), float(np.max(distances))


def rotation_between_deg(found: sitk.Transform, expected: sitk.Transform) -> float:
    """Angle (degrees) of the rotation that takes one transform's linear part to the other's."""
    difference = np.array(found.GetMatrix()).reshape(3, 3) @ np.array(expected.GetMatrix()).reshape(3, 3).T
    return math.degrees(math.acos(float(np.clip((np.trace(difference) - 1) / 2, -1.0, 1.0))))


UID_ROOT = "1.2.826.0.1.3680043.8.498.77"  # a test root; every UID below is made from it


def write_series(image: sitk.Image, folder: Path, description: str, number: int, study_uid: str,
                 patient: str = "BTC-TEST-1", image_type: str = "ORIGINAL\\PRIMARY\\M\\ND") -> Path:
    """Write `image` (int16) as a DICOM MR series, one file per slice, with the headers a
    scanner writes: patient, study, series and frame-of-reference UIDs, description and number, patient position,
    orientation, per-slice position, spacing.  Returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    series_uid = f"{study_uid}.{number}"
    tags = {"0008|0060": "MR", "0008|0008": image_type, "0008|103e": description, "0020|0011": str(number),
            "0020|000d": study_uid, "0020|000e": series_uid, "0010|0020": patient, "0010|0010": "Test^Patient",
            "0020|0052": f"{study_uid}.0", "0018|5100": "HFS", "0008|0021": "20260101", "0008|0031": "120000",
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0018|0050": f"{image.GetSpacing()[2]:.4f}", "0018|0088": f"{image.GetSpacing()[2]:.4f}"}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetSize()[2]):
        slice_ = image[:, :, k]
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
        slice_.SetMetaData("0020|0013", str(k + 1))
        slice_.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        writer.SetFileName(str(folder / f"IM{k + 1:04d}.dcm"))
        writer.Execute(slice_)
    return folder
