"""Reading a study exported from the scanner: a folder of DICOM series.

Series are found with GDCM's series IDs (SimpleITK's ImageSeriesReader), in
the folder and every folder below it, and each is told apart by its
SeriesDescription with the names rules of volume_names.py (`T1 post gad`,
`ax t2 tse`, `t2_flair_tra`...).  Localizers (ImageType LOCALIZER, `scout`,
`survey`) and single-slice series are never inputs.  A sequence that no series
names, or that two series name, is an error naming the series and the fix
(`--flair SERIES_FOLDER_OR_FILE`): a wrong guess would give a segmentation
that looks fine and is not.  Everything is checked before any image is read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..modalities import MODALITIES
from .errors import CaseError
from .geometry import Geometry
from .volume_names import guess_modality

DESCRIPTION, IMAGE_TYPE, SERIES_NUMBER = "0008|103e", "0008|0008", "0020|0011"
STUDY_UID, PATIENT_ID, FRAMES = "0020|000d", "0010|0020", "0028|0008"
_LOCALIZER_WORDS = frozenset({"localizer", "localiser", "scout", "survey", "aahead", "3plane"})

PathLike = Union[str, Path]


class DicomError(CaseError):
    """A DICOM study or series that cannot be read as the four sequences; names the series and the fix."""


@dataclass(frozen=True)
class Series:
    """One DICOM series: its files (sorted by GDCM along the slice normal) and the header fields that matter."""

    uid: str
    files: Tuple[str, ...]
    description: str
    number: str
    image_type: str
    study: str
    patient: str
    frames: int  # slices: files, or frames of a single multi-frame file

    @property
    def folder(self) -> Path:
        return Path(self.files[0]).parent

    def __str__(self) -> str:
        return f"series {self.number or '?'} '{self.description}' ({self.folder}, {len(self.files)} files)"

    def unusable(self) -> Optional[str]:
        """Why this series cannot be a sequence (a localizer, one 2-D slice), else None."""
        words = set("".join(c if c.isalnum() else " " for c in self.description.lower()).split())
        if "LOCALIZER" in self.image_type.upper() or _LOCALIZER_WORDS & words:
            return "a localizer"
        if self.frames < 2:
            return "a single 2-D slice, not a volume"
        return None


def is_dicom_file(path: PathLike) -> bool:
    """A DICOM Part 10 file (the 'DICM' mark after the 128-byte preamble)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def holds_dicom(folder: PathLike) -> bool:
    """Whether any file in `folder` or below is a DICOM file (stops at the first)."""
    return any(is_dicom_file(Path(root) / f) for root, _, names in os.walk(folder) for f in names)


def find_series(folder: PathLike) -> List[Series]:
    """Every DICOM series in `folder` and below, in folder order."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        if not names:
            continue
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(root):
            found.append(_series(root, uid))
    return found


def _series(folder: str, uid: str) -> Series:
    files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DicomError(f"{files[0]}: cannot be read as a DICOM image (series {uid}); "
                         "the file may be truncated or corrupt") from None

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    frames = len(files) if len(files) > 1 else int(tag(FRAMES) or 1)
    return Series(uid, files, tag(DESCRIPTION), tag(SERIES_NUMBER), tag(IMAGE_TYPE), tag(STUDY_UID), tag(PATIENT_ID),
                  frames)


def series_at(path: PathLike) -> Series:
    """The series a user points at: a folder holding exactly one series, or one file of it."""
    path = Path(path)
    if path.is_file():
        if not is_dicom_file(path):
            raise DicomError(f"{path}: not a DICOM file")
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        uid = reader.GetMetaData("0020|000e").strip()
        return _series(str(path.parent), uid)
    if not path.is_dir():
        raise DicomError(f"{path}: no such DICOM series folder or file")
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    if len(uids) != 1:
        listed = "; ".join(str(_series(str(path), u)) for u in uids) or "none"
        raise DicomError(f"{path}: expected one DICOM series, found {len(uids)} ({listed}); "
                         "point at one file of the series you mean")
    return _series(str(path), uids[0])


def choose(series: List[Series], where: PathLike) -> Dict[str, Series]:
    """The series of each sequence, from their descriptions; DicomError when one
    is missing or ambiguous, naming the series found."""
    candidates: Dict[str, List[Series]] = {m: [] for m in MODALITIES}
    passed_over: Dict[str, List[str]] = {m: [] for m in MODALITIES}
    for s in series:
        modality = guess_modality(s.description)
        if modality is None:
            continue
        problem = s.unusable()
        if problem:
            passed_over[modality].append(f"{s} is {problem}")
        else:
            candidates[modality].append(s)
    problems = []
    for m in MODALITIES:
        if len(candidates[m]) > 1:
            problems.append(f"{len(candidates[m])} series for {m}: " + "; ".join(map(str, candidates[m])))
        elif not candidates[m]:
            problems.append(f"no series for {m}" + (f" ({'; '.join(passed_over[m])})" if passed_over[m] else ""))
    if problems:
        listed = "; ".join(f"{s}" for s in series) or "none"
        raise DicomError(f"{where}: {' | '.join(problems)}. Series found: {listed}. Choose the series with "
                         "--t1/--t1c/--t2/--flair, each pointing at a series folder or one file of the series")
    return {m: candidates[m][0] for m in MODALITIES}


def check_chosen(chosen: Dict[str, Series]) -> None:
    """The four series must be usable volumes of one patient and one study (a
    follow-up's tumor is not the same tumor)."""
    for m, s in chosen.items():
        problem = s.unusable()
        if problem:
            raise DicomError(f"{m}: {s} is {problem}; choose the {m} volume series")
    for what, key in (("patients", "patient"), ("studies", "study")):
        if len({getattr(s, key) for s in chosen.values()}) > 1:
            raise DicomError(f"the series are of different {what}: "
                             + "; ".join(f"{m}: {s} of {key} '{getattr(s, key)}'" for m, s in chosen.items()))


def read_series(series: Series, max_voxels: int) -> Tuple[np.ndarray, Geometry]:
    """A series as a (Z, Y, X) array and its geometry; refuses volumes over `max_voxels` before reading."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(series.files[0])
    reader.ReadImageInformation()
    voxels = reader.GetSize()[0] * reader.GetSize()[1] * series.frames
    if voxels > max_voxels:
        raise DicomError(f"{series}: {voxels / 1e6:.0f} million voxels, more than the limit of "
                         f"{max_voxels / 1e6:.0f} million; crop or resample it")
    series_reader = sitk.ImageSeriesReader()
    series_reader.SetFileNames(list(series.files))
    try:
        image = series_reader.Execute()
    except RuntimeError as exc:
        raise DicomError(f"{series}: cannot be read ({str(exc).strip().splitlines()[-1]})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1 or min(image.GetSize()) < 2:
        raise DicomError(f"{series}: expected a 3-D single-channel volume, got size {image.GetSize()} with "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s)")
    return sitk.GetArrayFromImage(image), Geometry.from_image(image)


def read_at(path: PathLike, modality: str, max_voxels: int) -> Tuple[np.ndarray, Geometry, Series]:
    """The series a user chose for `modality` (a series folder or one file of it), and the series."""
    series = series_at(path)
    check_chosen({modality: series})
    return (*read_series(series, max_voxels), series)


def read_study(folder: PathLike, max_voxels: int
               ) -> Tuple[Dict[str, Tuple[np.ndarray, Geometry]], Dict[str, Path], Dict[str, Series]]:
    """The four sequences of a study folder ({modality: (array, geometry)}),
    where each series is (what messages name: its folder when it is the only
    series there, else its first file), and the series chosen."""
    series = find_series(folder)
    chosen = choose(series, folder)
    check_chosen(chosen)
    shared = {s.folder for s in series if sum(other.folder == s.folder for other in series) > 1}
    return ({m: read_series(s, max_voxels) for m, s in chosen.items()},
            {m: Path(s.files[0]) if s.folder in shared else s.folder for m, s in chosen.items()}, chosen)
