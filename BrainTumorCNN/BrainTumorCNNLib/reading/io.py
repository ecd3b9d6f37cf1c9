"""Reading cases in every BraTS layout, and writing label maps on the input grid.

Layouts, recognised by file names:
- BRATS 2012/2013 MetaImage: `<id>_T1.mha`, `<id>_T1C.mha`, `<id>_T2.mha`,
  `<id>_FLAIR.mha`, `<id>_truth.mha` (2012 labels), or `VSD.Brain.XX.O.MR_T1c.NNN.mha`
  files in sub-folders with an `...OT...mha` label map (2013 labels 0-4);
- BraTS 2015-2021: `<id>_{t1,t1ce,t2,flair,seg}.nii(.gz)` (labels 0/1/2/4);
- BraTS 2023+: `<id>-{t1n,t1c,t2w,t2f,seg}.nii(.gz)` (labels 0/1/2/3);
- Medical Segmentation Decathlon Task01: one 4-D image (FLAIR, T1w, T1gd, T2w)
  in `imagesTr/`, its label map in `labelsTr/` (labels 1 edema, 2 non-enhancing,
  3 enhancing).

Bad input gets a CaseError / GeometryError naming the file and the fix, before
any large allocation: unreadable, truncated or non-3-D files, volumes over
MAX_VOXELS (checked from the header), empty or constant volumes, one image in
two slots, grids that differ, unknown label values.  NaN/Inf voxels are read
as 0 (as SimpleITK's NIfTI reader does anyway: they mostly mark background
outside a registration's field of view) with a warning giving their count;
contrasts that contradict the slots (a FLAIR file in the T1 slot) also give
warnings.  Warnings are logged and kept in Case.warnings.

Reading does not put the sequences on one grid: read_volumes returns each on
its own, running/cases.py has the preparation (registration, resampling) put
them on the T1c grid, and to_case checks and assembles them there.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .. import labels as label_table
from ..atomic import atomic_path
from ..modalities import MODALITIES
from . import dicom, sanity
from .errors import CaseError
from .geometry import Geometry, GeometryError, check_same, to_image  # noqa: F401 (io.GeometryError)
from .volume_names import modality_of_word

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")

#: File-name tokens of a ground-truth file; sequence tokens are volume_names.modality_of_word's.
_TRUTH_TOKENS = frozenset({"seg", "truth", "ot", "label", "labels"})
MSD_CHANNELS = ("FLAIR", "T1", "T1c", "T2")  # channel order of Task01 images

#: Largest volume read, in voxels per modality (BraTS: 240 x 240 x 155 = 8.9 M);
#: larger ones are refused from their header.  Override with the environment
#: variable BRAINTUMORCNN_MAX_VOXELS or read_case(max_voxels=...).
MAX_VOXELS = int(os.environ.get("BRAINTUMORCNN_MAX_VOXELS", 50_000_000))
#: Bytes per voxel of the whole-volume arrays one segmentation holds: four
#: float32 modalities raw and preprocessed (32), class probabilities (up to
#: 20), labels and masks; network activations come on top.
BYTES_PER_VOXEL = 56

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


@dataclass
class Volumes:
    """A case's four sequences as read, each on its own grid, before they are put on the T1c grid."""

    name: str
    volumes: Dict[str, Tuple[np.ndarray, Geometry]]  # sequence -> (Z, Y, X) voxels as stored, and their grid
    files: Dict[str, Path]  # sequence -> what messages name: a file, a series folder or a series' file
    truth: Optional[Path] = None
    series: Dict[str, dicom.Series] = field(default_factory=dict)  # sequences read from DICOM

    @property
    def names(self) -> Dict[str, str]:
        """Each sequence as messages name it: "T1 (file name)"."""
        return {m: f"{m} ({self.files[m].name})" for m in MODALITIES}


@dataclass
class Case:
    """One brain: the four modalities on one grid, and the ground truth when present."""

    name: str
    images: np.ndarray  # float32 (4, Z, Y, X): T1, T1c, T2, FLAIR
    geometry: Geometry
    truth: Optional[np.ndarray] = None  # uint8 (Z, Y, X), internal label values
    scheme: Optional[label_table.LabelScheme] = None  # scheme the truth file used
    files: Dict[str, Path] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)  # input that looks wrong but can be read
    #: What put the sequences on the T1c grid (preparation.Step, in order) and the registrations'
    #: reports by sequence (registration.Registration); filled by running/cases.py, which prepares.
    preparation: List[object] = field(default_factory=list)
    registrations: Dict[str, object] = field(default_factory=dict)
    #: The DICOM series each sequence read from DICOM came from: what a DICOM SEG references.
    series: Dict[str, dicom.Series] = field(default_factory=dict)


def image_stem(path: PathLike) -> str:
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def common_stem(paths) -> str:
    """The shared start of the files' names (a case name for explicit files)."""
    return os.path.commonprefix([image_stem(p) for p in paths]).rstrip("_-. ")


def is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def modality_of(path: PathLike) -> Optional[str]:
    """Modality ("T1", "T1c", "T2", "FLAIR") or "truth" a file name denotes, else None."""
    tokens = [t for t in re.split(r"[_.\-\s]+", image_stem(path).lower()) if t]
    if "mr" in tokens[:-1]:  # VSD.Brain.XX.O.MR_T1c.NNN: the token after "MR"
        return _token_kind(tokens[tokens.index("mr") + 1])
    for token in reversed(tokens):
        if _token_kind(token):
            return _token_kind(token)
        if not token.isdigit():
            return None
    return None


def _token_kind(token: str) -> Optional[str]:
    return "truth" if token in _TRUTH_TOKENS else modality_of_word(token)


def find_cases(folder: PathLike) -> List[Path]:
    """Case folders (or MSD 4-D image files) under `folder`; `[folder]` if it is one case.

    A folder holding an image of any of the four sequences is a case even when
    others are missing, so read_case names what is missing instead of the case
    vanishing from the list; an empty list means no image of any sequence."""
    folder = Path(folder)
    if is_image(folder):
        return [folder]
    if not folder.is_dir():
        raise CaseError(f"{folder}: no such folder or image file")
    if (folder / "imagesTr").is_dir() or (folder / "imagesTs").is_dir():
        return sorted(p for sub in ("imagesTr", "imagesTs") for p in (folder / sub).glob("*")
                      if is_image(p))
    if _holds_sequence(folder):
        return [folder]
    cases = sorted(p for p in folder.iterdir() if p.is_dir() and _holds_sequence(p))
    return cases or ([folder] if dicom.holds_dicom(folder) else [])


def _holds_sequence(folder: Path) -> bool:
    return any(modality_of(p) in MODALITIES for p in _candidate_files(folder))


def _candidate_files(folder: Path) -> List[Path]:
    """The image files of a case folder; those of its VSD sub-folders when it has none of a sequence."""
    candidates = [p for p in folder.iterdir() if is_image(p)]
    if not any(modality_of(p) in MODALITIES for p in candidates):
        candidates = [p for sub in folder.iterdir() if sub.is_dir() for p in sub.iterdir()
                      if is_image(p) and (".mr_" in p.name.lower() or ".ot." in p.name.lower())]
    return candidates


def _modality_files(folder: Path) -> Dict[str, Path]:
    """Files of one case folder by modality; looks one level down for VSD sub-folders."""
    candidates = _candidate_files(folder)
    found: Dict[str, Path] = {}
    for path in sorted(candidates):
        modality = modality_of(path)
        if modality is None:
            continue
        if modality in found:
            raise CaseError(f"{folder}: two files for {modality}: {found[modality].name} and {path.name}; "
                            "keep one or pass the four files explicitly")
        found[modality] = path
    missing = [m for m in MODALITIES if m not in found]
    if missing:
        names = ", ".join(sorted(p.name for p in candidates)) or "no image files"
        raise CaseError(f"{folder}: missing {', '.join(missing)} (found: {names}); name files like "
                        "<id>_t1/_t1ce/_t2/_flair.nii.gz or pass --t1/--t1c/--t2/--flair")
    return found


def read_image(path: PathLike, max_voxels: Optional[int] = None) -> Tuple[np.ndarray, Geometry]:
    """A 3-D image as a (Z, Y, X) array and its geometry; clear errors for other inputs."""
    array, image = _read(Path(path), 3, max_voxels)
    return array, Geometry.from_image(image)


def _read(path: Path, dimension: int, max_voxels: Optional[int], channels: int = 1) -> Tuple[np.ndarray, sitk.Image]:
    """Read a single-component image of `dimension` (3, or 4 with `channels`
    along the 4th axis) after checking its header: readable, the expected
    shape, at most `max_voxels` voxels per channel, not truncated.  Returns
    its voxels as stored, NaN/Inf included, and the image (for its geometry)."""
    if not path.is_file():
        raise CaseError(f"{path}: no such file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise CaseError(f"{path}: cannot be read as an image ({_reason(exc)}); "
                        "the file may be truncated, corrupt or not an image") from None
    size = reader.GetSize()
    if len(size) != dimension or reader.GetNumberOfComponents() != 1 or (dimension == 4 and size[3] != channels):
        expected = ("a 3-D single-channel volume" if dimension == 3
                    else f"a 4-D image with {channels} channels (MSD Task01: {', '.join(MSD_CHANNELS)})")
        raise CaseError(f"{path}: expected {expected}, got a {len(size)}-D image of size {size} with "
                        f"{reader.GetNumberOfComponents()} component(s) per voxel")
    voxels = int(np.prod(size[:3], dtype=np.int64))
    limit = _limit(max_voxels)
    if voxels > limit:
        raise CaseError(
            f"{path}: {' x '.join(map(str, size[:3]))} = {voxels / 1e6:.0f} million voxels, far larger than a "
            f"BraTS volume (240 x 240 x 155 = 8.9 million); segmenting it would need about "
            f"{voxels * BYTES_PER_VOXEL / 2 ** 30:.1f} GiB of memory (limit {limit / 1e6:.0f} million voxels). "
            "Crop it to the head or resample it to about 1 mm, or raise the limit with "
            "BRAINTUMORCNN_MAX_VOXELS / read_case(max_voxels=...)")
    shortfall = sanity.nifti_shortfall(path)
    if shortfall:
        raise CaseError(f"{path}: truncated: {shortfall[0]} of the {shortfall[1]} bytes its header announces "
                        "(an interrupted download or copy?); copy or export the file again")
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise CaseError(f"{path}: cannot be read ({_reason(exc)}); the file may be truncated or corrupt") from None
    array = sitk.GetArrayFromImage(image)
    hidden = sanity.nifti_non_finite(path)
    if hidden is not None:  # the NIfTI reader turned them into 0: give them back
        array.reshape(-1)[hidden[0]] = hidden[1]
    return array, image


def _reason(exc: RuntimeError) -> str:
    """SimpleITK's error in the reader's words: its last line without the library's prefix ("sitk::ERROR:",
    "itk::ERROR: NiftiImageIO(0x...):"), and its "Unable to determine ImageIO reader" said plainly."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(exc).__name__
    if "Unable to determine ImageIO reader" in last:
        return "no image format recognised in its contents"
    return _LIBRARY_PREFIX.sub("", last) or type(exc).__name__


#: The prefix SimpleITK and ITK put before their messages.
_LIBRARY_PREFIX = re.compile(r"^(?:s?itk::)?ERROR:\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?")


def _read_msd(image_path: Path, max_voxels: Optional[int]
              ) -> Tuple[Dict[str, Tuple[np.ndarray, Geometry]], Optional[Path]]:
    array, image = _read(image_path, 4, max_voxels, channels=len(MSD_CHANNELS))  # (4, Z, Y, X)
    d = image.GetDirection()
    geometry = Geometry(tuple(image.GetSize()[:3]), tuple(image.GetSpacing()[:3]), tuple(image.GetOrigin()[:3]),
                        (d[0], d[1], d[2], d[4], d[5], d[6], d[8], d[9], d[10]))
    volumes = {m: (array[i], geometry) for i, m in enumerate(MSD_CHANNELS)}
    label = image_path.parent.parent / "labelsTr" / image_path.name
    return volumes, (label if label.is_file() else None)


def _truth_scheme(path: Path, values: np.ndarray) -> Tuple[label_table.LabelScheme, Optional[str]]:
    """The label scheme a truth file's name and values imply, and a warning when that is a guess."""
    stem = image_stem(path).lower()
    if path.parent.name == "labelsTr":
        return label_table.scheme("msd"), None
    if re.search(r"-seg$", stem):
        return label_table.scheme("brats2023"), None
    if stem.endswith("_truth") and path.suffix.lower() in (".mha", ".mhd"):
        return label_table.scheme("brats2012"), None
    if ".ot." in path.name.lower() or 3 in values:  # 0-4 labels (BRATS 2013/2015, VSD OT files)
        warning = None if (4 in values or ".ot." in path.name.lower()) else (
            f"{path.name}: labels {values.tolist()} read as BRATS 2013 (3 = non-enhancing tumor); if the file "
            "uses BraTS 2023 labels (3 = enhancing tumor), read it with label_scheme='brats2023'")
        return label_table.scheme("brats2013"), warning
    return label_table.scheme("brats2021"), None


def read_volumes(source: Union[PathLike, Mapping[str, PathLike]], *, truth: Optional[PathLike] = None,
                 name: Optional[str] = None, max_voxels: Optional[int] = None) -> Volumes:
    """The four sequences of a case folder, an MSD 4-D image, a DICOM study
    folder (dicom.py), or a mapping {"T1": f, "T1c": f, "T2": f, "FLAIR": f}
    of image files, DICOM series folders or one file of a series; each on its
    own grid.  The truth file is found in the case folder unless `truth` is
    given; it is read by to_case, on the common grid.  `max_voxels` overrides
    MAX_VOXELS, the largest volume read."""
    truth_path: Optional[Path] = Path(truth) if truth else None
    series = {}
    if isinstance(source, Mapping):
        unknown = set(source) - set(MODALITIES)
        missing = [m for m in MODALITIES if not source.get(m)]
        if unknown or missing:
            raise CaseError(f"explicit files need exactly {', '.join(MODALITIES)}; "
                            f"missing {missing or 'none'}, unknown {sorted(unknown) or 'none'}")
        files = {m: Path(source[m]) for m in MODALITIES}
        resolved = [p.resolve() for p in files.values()]
        repeated = [m for m, p in zip(MODALITIES, resolved) if resolved.count(p) > 1]
        if repeated:
            raise CaseError(f"the same file is given for {' and '.join(repeated)} "
                            f"({files[repeated[0]]}): each modality needs its own file")
        from_dicom = {m: dicom.read_at(p, m, _limit(max_voxels)) for m, p in files.items()
                      if p.is_dir() or dicom.is_dicom_file(p)}
        volumes = {m: from_dicom[m][:2] if m in from_dicom else read_image(p, max_voxels) for m, p in files.items()}
        series = {m: read[2] for m, read in from_dicom.items()}
        case_name = name or common_stem(files.values()) or "case"
    else:
        path = Path(source)
        if is_image(path):
            volumes, found_truth = _read_msd(path, max_voxels)
            files = {m: path for m in MODALITIES}
            truth_path = truth_path or found_truth
            case_name = name or image_stem(path)
        elif path.is_dir() and not _holds_sequence(path) and dicom.holds_dicom(path):
            volumes, files, series = dicom.read_study(path, _limit(max_voxels))
            case_name = name or path.name
        elif path.is_dir():
            found = _modality_files(path)
            files = {m: found[m] for m in MODALITIES}
            truth_path = truth_path or found.get("truth")
            volumes = {m: read_image(p, max_voxels) for m, p in files.items()}
            case_name = name or path.name
        else:
            raise CaseError(f"{path}: no such case folder or image file")
    return Volumes(case_name, volumes, files, truth_path, series)


def to_case(read: Volumes, on_grid: Mapping[str, np.ndarray], reference: Geometry, *, warnings: Sequence[str] = (),
            label_scheme: Optional[str] = None, resample: bool = False, max_voxels: Optional[int] = None) -> Case:
    """The case of `read` once its sequences lie on the `reference` grid
    (`on_grid`: sequence -> (Z, Y, X)): checked (float32, no empty or constant
    volume, the slots' contrasts) and with its truth read onto that grid, which
    `resample=True` resamples (nearest) instead of raising GeometryError.
    `warnings` (the preparation's) come first in Case.warnings; all are logged.
    `label_scheme` overrides the scheme guessed from the layout (labels.SCHEMES)."""
    files, labelled = read.files, read.names
    converted = {m: _as_float(on_grid[m], files[m], m) for m in MODALITIES}
    images = np.stack([converted[m][0] for m in MODALITIES])
    slot_warnings = sanity.check_slots(images, [labelled[m] for m in MODALITIES], error=CaseError)

    case = Case(read.name, images, reference, files=dict(files), series=read.series)
    case.warnings = list(warnings)
    case.warnings += [w for _, w in converted.values() if w]
    case.warnings += slot_warnings
    truth_path = read.truth
    if truth_path is not None:
        raw, truth_geometry = read_image(truth_path, max_voxels)
        if truth_geometry.differences(reference):
            if not resample:
                check_same({labelled["T1c"]: reference, f"truth ({truth_path.name})": truth_geometry},
                           reference=labelled["T1c"])
            raw = _resample(raw, truth_geometry, reference, sitk.sitkNearestNeighbor)
        if label_scheme:
            case.scheme = label_table.scheme(label_scheme)
        else:
            case.scheme, warning = _truth_scheme(truth_path, np.unique(raw))
            case.warnings += [warning] if warning else []
        try:
            case.truth = case.scheme.convert(raw, source=str(truth_path))
        except ValueError as exc:
            raise CaseError(f"{exc}, or name it with label_scheme= (one of {', '.join(label_table.SCHEMES)})"
                            ) from None
        case.files["truth"] = truth_path
    for warning in case.warnings:
        log.warning("%s: %s", read.name, warning)
    return case


def _limit(max_voxels: Optional[int]) -> int:
    return MAX_VOXELS if max_voxels is None else max_voxels


def _as_float(array: np.ndarray, path: Path, modality: str) -> Tuple[np.ndarray, Optional[str]]:
    """A modality as float32, and a warning when NaN/Inf voxels were set to 0.
    Refuses values beyond float32 and volumes without contrast."""
    where = f"{modality} ({path})"
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
        out = array.astype(np.float32)
    warning = None
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = ~np.isfinite(array)
        count = int(np.count_nonzero(bad))
        out[bad] = 0.0
        warning = (f"{where}: {count} voxels ({count / bad.size:.2%}) are NaN or infinite and were read as 0; "
                   "inside the brain that makes the segmentation there unreliable: fix the file if they are")
    if not np.all(np.isfinite(out)):
        raise CaseError(f"{where}: values up to {float(np.abs(array[np.isinf(out)]).max()):.3g} do not fit in float32; "
                        "rescale the intensities")
    low, high = float(out.min()), float(out.max())
    if low == high:
        what = "empty (every voxel is 0)" if low == 0 else f"constant (every voxel is {low:g})"
        raise CaseError(f"{where}: the volume is {what}, so it holds no image; check the export or the file chosen")
    return out, warning


def _resample(array: np.ndarray, source: Geometry, target: Geometry, interpolator: int) -> np.ndarray:
    moving = to_image(array, source)
    reference = to_image(np.zeros(target.shape, dtype=array.dtype), target)
    return sitk.GetArrayFromImage(sitk.Resample(moving, reference, sitk.Transform(), interpolator, 0.0))


def write_labels(labels: np.ndarray, geometry: Geometry, path: PathLike) -> Path:
    """Write a uint8 (Z, Y, X) label map on `geometry`'s grid, atomically."""
    return write_map(labels.astype(np.uint8), geometry, path)


def write_map(array: np.ndarray, geometry: Geometry, path: PathLike) -> Path:
    """Write a (Z, Y, X) array (a label map, an uncertainty map) on `geometry`'s grid as it is typed,
    compressed and atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(to_image(array, geometry), str(tmp), useCompression=True)
        # ITK's compressed writers do not report every failed write (a full disk): read it back
        try:
            written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp)))
        except RuntimeError:
            written = None
        if written is None or not np.array_equal(written, array):
            raise OSError(f"could not write {path} completely (disk full or not writable?); "
                          "the previous file, if any, is unchanged")
    return path
