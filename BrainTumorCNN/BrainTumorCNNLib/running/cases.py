"""A case from files, ready to segment: read (reading/io.py) and its sequences
put on the T1c grid (preparing/preparation.py).  Reading knows nothing of the
preparation; this is where the two meet, for the command line, batch and
cluster runs and training alike (the Slicer module prepares its volume nodes
in task.py, through the same preparation)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Union

from ..preparing import preparation
from ..reading import io

PathLike = Union[str, Path]


def read_case(source: Union[PathLike, Mapping[str, PathLike]], *, truth: Optional[PathLike] = None,
              label_scheme: Optional[str] = None, resample: bool = False, register: Optional[bool] = None,
              name: Optional[str] = None, max_voxels: Optional[int] = None) -> io.Case:
    """Read a case folder, an MSD 4-D image, a DICOM study, or a mapping
    {"T1": f, "T1c": f, "T2": f, "FLAIR": f} (io.read_volumes) onto the T1c grid.

    `resample=True` resamples volumes not on the T1c grid onto it (linear for
    images, nearest for labels) instead of raising GeometryError.
    `register=True` registers T1, T2 and FLAIR rigidly onto the T1c first
    (registration.py; for scans straight from the scanner) and resamples them
    onto its grid; the registrations' reports are in Case.registrations.
    None (the default) registers DICOM input (a study folder, or series folders
    or files in the mapping: dicom.py) and not image files.
    `label_scheme` overrides the scheme guessed from the layout (labels.SCHEMES).
    `max_voxels` overrides io.MAX_VOXELS, the largest volume read.
    """
    read = io.read_volumes(source, truth=truth, name=name, max_voxels=max_voxels)
    register = bool(read.series) if register is None else register
    prepared = preparation.prepare(read.volumes, preparation.PreparationOptions(
        register=register, register_all=register, resample=resample), names=read.names)
    case = io.to_case(read, prepared.volumes, prepared.geometry, warnings=prepared.warnings,
                      label_scheme=label_scheme, resample=resample, max_voxels=max_voxels)
    case.preparation, case.registrations = prepared.steps, prepared.registrations
    return case
