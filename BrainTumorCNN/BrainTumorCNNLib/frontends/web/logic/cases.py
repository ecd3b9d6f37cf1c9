"""Which case a browser opens and which file is which sequence: the cases io.find_cases recognises
under the `--data` folders, a set of uploaded files, or the `--case` given at start; files assigned to
sequences by the readers' name rules (io.modality_of) and changeable; read by running/cases.read_case, as
`braintumorcnn segment` reads them (running/cases.py), so a bad file gets the command line's message."""
from __future__ import annotations

import os
import re
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
    truth: Optional[Path] = None  # the folder's one ground-truth file (`*_seg.nii.gz`...), scored against
    given_names: Dict[Path, str] = field(default_factory=dict)  # an upload's stored file -> the name it was sent as

    def missing(self) -> List[str]:
        return [m for m in MODALITIES if not self.assignment.get(m)] if self.kind == "files" else []

    def shown_name(self, path: Path) -> str:
        """A file as the user knows it: an upload by the name it was sent as, any other by its name."""
        return self.given_names.get(Path(path), Path(path).name)

    def plain(self, message: str) -> str:
        """`message` with the server's paths of this case's files replaced by the files' own names and its
        folder's path left out, so a message names what the user gave, never where the server keeps it."""
        for path in sorted(set(self.candidates) | set(self.given_names) | {self.source}, key=lambda p: -len(str(p))):
            shown = self.name if path == self.source else self.shown_name(path)
            message = message.replace(str(path), shown)
        return message


def list_cases(roots: ReadableRoots) -> List[Path]:
    """The cases under every readable folder, those whose real path leaves the folders (a symlink) left out."""
    return [path for path, _ in named_cases(roots)]


def named_cases(roots: ReadableRoots) -> List[Tuple[Path, str]]:
    """(real path, name to show) of the cases under every readable folder: the name is the case's path
    inside its folder (`brats2021/BraTS2021_00000`), never the server's absolute path."""
    found: List[Tuple[Path, str]] = []
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
            if real not in [path for path, _ in found]:  # reached twice through a link between the folders
                found.append((real, _shown_path(case, root)))
    return found


def _shown_path(case: Path, root: Path) -> str:
    try:
        return case.relative_to(root).as_posix() or case.name
    except ValueError:
        return case.name


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
    truths = [p for p in candidates if io.modality_of(p) == "truth"]
    return CaseFiles(path.name, path, candidates=candidates, assignment=assignment,
                     truth=truths[0] if len(truths) == 1 else None)


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
        geometries = {m: _header_geometry(case.assignment[m], case.shown_name(case.assignment[m]))
                      for m in MODALITIES}
        names = {m: f"{m} ({case.shown_name(case.assignment[m])})" for m in MODALITIES}
        return preparation.describe(preparation.plan(geometries, options, names))
    except (ValueError, RuntimeError) as exc:
        return f"{CANNOT} {case.plain(str(exc))}"


#: How a plan that says why the case cannot start begins.
CANNOT = "Cannot segment:"


def plan_explains_failure(case: CaseFiles, planned: str) -> bool:
    """Whether the plan already says why the case cannot be read (a sequence missing, a header unread)."""
    return bool(case.missing()) or planned.startswith(CANNOT)


def _header_geometry(path: Path, shown: str) -> Geometry:
    """The grid a file's header announces; a file SimpleITK cannot read is named as the user knows it
    (`shown`), never with SimpleITK's own message (a C++ exception naming the server's paths)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise io.CaseError(f"{shown}: not a readable {_kind_of(path)} image (its header cannot be read); "
                           "upload the sequence's image file") from None
    size, direction = reader.GetSize(), reader.GetDirection()
    if len(size) != 3:
        raise io.CaseError(f"{shown}: expected a 3-D single-channel volume, got a {len(size)}-D image of size {size}")
    return Geometry(tuple(size), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(direction))


def read(case: CaseFiles, roots: ReadableRoots, options: preparation.PreparationOptions) -> io.Case:
    """The case read and prepared by read_case (as `segment` reads it), every file checked against `roots` first."""
    if case.kind != "files":
        return read_case(roots.check(case.source), name=case.name, resample=options.resample)
    if case.missing():
        raise io.CaseError(case.plain(f"{case.source}: missing {', '.join(case.missing())} (found: "
                                      f"{', '.join(case.shown_name(p) for p in case.candidates) or 'no image files'}); "
                                      "choose a file for each sequence"))  # an upload's folder is the server's own
    files = {m: roots.check(case.assignment[m]) for m in MODALITIES}
    truth = roots.check(case.truth) if case.truth is not None else None
    try:
        opened = read_case(files, truth=truth, resample=options.resample, register=options.register, name=case.name)
    except (ValueError, OSError) as exc:  # the reader's words, with the user's file names
        raise io.CaseError(case.plain(_without_library_detail(str(exc)))) from None
    opened.warnings = [case.plain(warning) for warning in opened.warnings]  # the page shows them
    return opened


def _kind_of(path: Path) -> str:
    name = path.name.lower()
    return next((kind for suffix, kind in ((".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".mha", "MetaImage"),
                                            (".mhd", "MetaImage"), (".nrrd", "NRRD")) if name.endswith(suffix)), "")


#: What SimpleITK says in the reader's messages, in brackets: its own words and C++ classes ("(sitk::ERROR:
#: Unable to determine ImageIO reader for ...)"), not the user's.
_LIBRARY_DETAIL = re.compile(r"\s*\([^()]*(?:sitk::|itk::|SimpleITK|ImageIO|\.cxx|\.hxx)[^()]*\)")


def _without_library_detail(message: str) -> str:
    return _LIBRARY_DETAIL.sub("", message).strip()


def upload_name(names: Sequence[str]) -> str:
    """The name of an uploaded case, from its files' names: what they share once each file's sequence
    word is left off (`BraTS2021_00000` for `BraTS2021_00000_t1.nii.gz`...; a zip's own name), in plain
    characters; "upload" when they share nothing."""
    stems = []
    for name in names:
        safe = safe_file_name(name)
        if safe.lower().endswith(".zip"):
            stems.append(Path(safe).stem)
            continue
        stem = io.image_stem(safe)
        if io.modality_of(safe) is not None:  # a sequence's or the truth's word ends the name
            stem = re.sub(r"[_.\-\s]*[^_.\-\s]+$", "", stem)
        stems.append(stem)
    shared = os.path.commonprefix(stems) if stems else ""
    return shared.strip("_-. ") or "upload"


def store_upload(files: Sequence[Tuple[str, bytes]], folder: Path, limit: int = MAX_UPLOAD_BYTES) -> Path:
    """Write uploaded files ((name, content) pairs; a .zip is unpacked, for DICOM series) into the new
    private folder `folder` under safe names; refuses uploads over `limit` bytes in all."""
    return store_upload_named(files, folder, limit)[0]


def store_upload_named(files: Sequence[Tuple[str, bytes]], folder: Path,
                       limit: int = MAX_UPLOAD_BYTES) -> Tuple[Path, Dict[Path, str]]:
    """store_upload, also returning each stored file's name as it was sent (for messages)."""
    check_upload_size(sum(len(content) for _, content in files), limit)
    if not files:
        raise AccessError("nothing was uploaded")
    folder.mkdir(mode=0o700)
    given: Dict[Path, str] = {}
    for name, content in files:
        target = folder / safe_file_name(name)
        if target.suffix.lower() == ".zip":
            _unzip(target.name, content, folder, limit)
        else:
            target.write_bytes(content)
            given[target] = re.split(r"[\\/]", name)[-1]
    return folder, given


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
