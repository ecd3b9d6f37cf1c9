"""Which case a browser opens and which file is which sequence: the cases io.find_cases recognises
under the `--data` folders, a set of uploaded files, or the `--case` given at start; files assigned to
sequences by the readers' name rules (io.modality_of) and changeable; read by running/cases.read_case, as
`braintumorcnn segment` reads them (running/cases.py), so a bad file gets the command line's message."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import SimpleITK as sitk

from ....modalities import MODALITIES
from ....preparing import preparation
from ....reading import io
from ....reading.geometry import Geometry
from ....running.cases import read_case
from .security import MAX_UPLOAD_BYTES, AccessError, ReadableRoots, safe_file_name


@dataclass
class CaseFiles:
    """A case to open: a folder of image files (`kind` "files", sequences assignable), or a source
    the reader takes whole (an MSD 4-D image, a DICOM study: `kind` "image4d" / "dicom")."""

    name: str
    source: Path
    kind: str = "files"
    candidates: List[Path] = field(default_factory=list)  # the folder's image files
    assignment: Dict[str, Optional[Path]] = field(default_factory=dict)  # sequence -> one of candidates

    def missing(self) -> List[str]:
        return [m for m in MODALITIES if not self.assignment.get(m)] if self.kind == "files" else []


def list_cases(roots: ReadableRoots) -> List[Path]:
    """The cases under every readable folder, those whose real path leaves the folders (a symlink) left out."""
    found = []
    for root in roots.folders:
        try:
            cases = io.find_cases(root)
        except io.CaseError:
            continue
        for case in cases:
            try:
                real = roots.check(case)
            except AccessError:
                continue
            if real not in found:  # reached twice through a link between the folders
                found.append(real)
    return found


def case_files(path: Path, roots: ReadableRoots) -> CaseFiles:
    """The case at `path` (checked against `roots`) with its files assigned to sequences by name."""
    path = roots.check(path)
    if io.is_image(path):
        return CaseFiles(io.image_stem(path), path, kind="image4d")
    if not path.is_dir():
        raise io.CaseError(f"{path}: not a case folder or an image file")
    candidates = _image_files(path, roots)
    if not candidates and _holds_dicom(path):
        return CaseFiles(path.name, path, kind="dicom")
    assignment: Dict[str, Optional[Path]] = {}
    for modality in MODALITIES:
        matches = [p for p in candidates if io.modality_of(p) == modality]
        assignment[modality] = matches[0] if len(matches) == 1 else None  # two candidates: the user picks
    return CaseFiles(path.name, path, candidates=candidates, assignment=assignment)


def _image_files(folder: Path, roots: ReadableRoots) -> List[Path]:
    """Image files of a case folder and of its sub-folders (BRATS 2013's VSD layout) inside `roots`."""
    files = []
    for path in sorted(folder.iterdir()) + sorted(p for sub in folder.iterdir() if sub.is_dir()
                                                  for p in sub.iterdir()):
        if io.is_image(path):
            try:
                files.append(roots.check(path))
            except AccessError:
                continue
    return files


def _holds_dicom(folder: Path) -> bool:
    from ....reading import dicom
    return dicom.holds_dicom(folder)


def assign(case: CaseFiles, modality: str, path: Optional[Path]) -> None:
    """Assign one of the case's own files (or none) to a sequence; any other path is refused."""
    if modality not in MODALITIES:
        raise AccessError(f"{modality!r}: not a sequence; one of {', '.join(MODALITIES)}")
    if path is not None and Path(path) not in case.candidates:
        raise AccessError(f"{path}: not one of the files of case {case.name}; refused")
    case.assignment[modality] = Path(path) if path is not None else None


def plan(case: CaseFiles, options: preparation.PreparationOptions) -> str:
    """What will put the sequences on the T1c grid, in words (preparation.describe), read from the
    files' headers before anything is read whole; or why it cannot start."""
    if case.kind != "files":
        return ("registration of every sequence onto the T1c, as for any DICOM study" if case.kind == "dicom"
                else "none: the four channels of one image share its grid")
    if case.missing():
        return f"Choose a file for {', '.join(case.missing())}."
    try:
        geometries = {m: _header_geometry(case.assignment[m]) for m in MODALITIES}
        names = {m: f"{m} ({case.assignment[m].name})" for m in MODALITIES}
        return preparation.describe(preparation.plan(geometries, options, names))
    except (ValueError, RuntimeError) as exc:
        return f"Cannot segment: {exc}"


def _header_geometry(path: Path) -> Geometry:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size, direction = reader.GetSize(), reader.GetDirection()
    if len(size) != 3:
        raise io.CaseError(f"{path}: expected a 3-D single-channel volume, got a {len(size)}-D image of size {size}")
    return Geometry(tuple(size), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(direction))


def read(case: CaseFiles, roots: ReadableRoots, options: preparation.PreparationOptions) -> io.Case:
    """The case read and prepared by read_case (as `segment` reads it), every file checked against `roots` first."""
    if case.kind != "files":
        return read_case(roots.check(case.source), name=case.name, resample=options.resample)
    if case.missing():
        raise io.CaseError(f"{case.source}: missing {', '.join(case.missing())} (found: "
                           f"{', '.join(p.name for p in case.candidates) or 'no image files'}); "
                           "choose a file for each sequence")
    files = {m: roots.check(case.assignment[m]) for m in MODALITIES}
    return read_case(files, resample=options.resample, register=options.register, name=case.name)


def store_upload(files: Sequence[Tuple[str, bytes]], folder: Path, limit: int = MAX_UPLOAD_BYTES) -> Path:
    """Write uploaded files ((name, content) pairs; a .zip is unpacked, for DICOM series) into the new
    private folder `folder` under safe names; refuses uploads over `limit` bytes in all."""
    check_upload_size(sum(len(content) for _, content in files), limit)
    if not files:
        raise AccessError("nothing was uploaded")
    folder.mkdir(mode=0o700)
    for name, content in files:
        target = folder / safe_file_name(name)
        if target.suffix.lower() == ".zip":
            _unzip(target.name, content, folder, limit)
        else:
            target.write_bytes(content)
    return folder


def check_upload_size(total: int, limit: int = MAX_UPLOAD_BYTES) -> None:
    if total > limit:
        raise AccessError(f"upload of {total / 2 ** 20:.1f} MB refused: the limit is {limit / 2 ** 20:.0f} MB a case")


def _unzip(name: str, content: bytes, folder: Path, limit: int) -> None:
    """Unpack a zip flat into `folder` under safe names, refusing more than `limit` bytes unpacked."""
    import io as bytes_io
    try:
        archive = zipfile.ZipFile(bytes_io.BytesIO(content))
    except zipfile.BadZipFile:
        raise AccessError(f"{name}: not a readable zip file (truncated?)") from None
    members = [m for m in archive.infolist() if not m.is_dir()]
    unpacked = sum(m.file_size for m in members)
    if unpacked > limit:
        raise AccessError(f"{name}: unpacks to {unpacked / 2 ** 20:.0f} MB; the limit is {limit / 2 ** 20:.0f} MB")
    for index, member in enumerate(members):
        (folder / f"{index:05d}_{safe_file_name(member.filename)}").write_bytes(archive.read(member))
