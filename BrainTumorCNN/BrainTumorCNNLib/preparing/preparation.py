"""Putting the four sequences on the T1c grid before segmentation: registration
and plain resampling, each switchable, planned before anything runs (so the
Slicer module can show what it will do, and a wrong choice stops before minutes
of work) and reported.  Cases read from files (running/cases.py) and the Slicer
module's volumes (running/task.py) are both prepared through here.

A sequence on the T1c grid is left alone unless `register_all` asks to
register it too (series of one DICOM study often share a grid although the
head moved between them).  One off the T1c grid is registered onto the T1c when
`register` is on, else resampled onto its grid as it lies in space when
`resample` is on, else it is an error naming the grids (GeometryError).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..modalities import MODALITIES
from ..reading.geometry import Geometry, check_same, to_image
from . import registration

REFERENCE = registration.REFERENCE


@dataclass(frozen=True)
class PreparationOptions:
    register: bool = True  # register sequences not on the T1c grid onto the T1c (rigid; registration.py)
    register_all: bool = False  # register also the sequences already on the T1c grid
    resample: bool = True  # resample unregistered sequences not on the T1c grid onto it (linear, no motion)
    registration: registration.RegistrationConfig = registration.RegistrationConfig()


@dataclass(frozen=True)
class Step:
    """One preparation step of one sequence."""

    sequence: str
    action: str  # "register" or "resample"

    def describe(self) -> str:
        if self.action == "register":
            return f"register {self.sequence} onto {REFERENCE} (rigid) and resample it onto the {REFERENCE} grid"
        return f"resample {self.sequence} onto the {REFERENCE} grid (as it lies: no registration)"


def plan(geometries: Mapping[str, Geometry], options: PreparationOptions = PreparationOptions(),
         names: Optional[Mapping[str, str]] = None) -> List[Step]:
    """The steps `prepare` will run on volumes of these grids ({sequence: geometry});
    GeometryError (naming the volumes by `names`) when a sequence off the T1c
    grid may be neither registered nor resampled."""
    reference = geometries[REFERENCE]
    steps = []
    for sequence in (m for m in MODALITIES if m != REFERENCE):
        off_grid = bool(geometries[sequence].differences(reference))
        if options.register and (off_grid or options.register_all):
            steps.append(Step(sequence, "register"))
        elif off_grid and options.resample:
            steps.append(Step(sequence, "resample"))
        elif off_grid:
            names = names or {m: m for m in geometries}
            check_same({names[m]: g for m, g in geometries.items()}, reference=names[REFERENCE])
    return steps


def describe(steps: List[Step]) -> str:
    """The plan in words, one step a line."""
    return "\n".join(s.describe() for s in steps) or f"none: the four volumes are on the {REFERENCE} grid"


@dataclass
class Prepared:
    """The four sequences on the T1c grid, and what was done to get them there."""

    volumes: Dict[str, np.ndarray]  # sequence -> (Z, Y, X) on `geometry`
    geometry: Geometry  # the T1c's
    steps: List[Step] = field(default_factory=list)
    registrations: Dict[str, registration.Registration] = field(default_factory=dict)

    def images(self) -> np.ndarray:
        """(4, Z, Y, X) float32 in MODALITIES order, as the pipeline takes them."""
        return np.stack([self.volumes[m].astype(np.float32, copy=False) for m in MODALITIES])

    @property
    def warnings(self) -> List[str]:
        return [w for r in self.registrations.values() for w in r.warnings]


Progress = Callable[[float, str], None]


def prepare(volumes: Mapping[str, Tuple[np.ndarray, Geometry]], options: PreparationOptions = PreparationOptions(),
            names: Optional[Mapping[str, str]] = None, progress: Optional[Progress] = None,
            check_cancel: Optional[Callable[[], None]] = None) -> Prepared:
    """Run `plan`'s steps on {sequence: (array, geometry)}.  `progress(fraction,
    message)` is told before each step; `check_cancel()`, called between steps,
    stops the work by raising."""
    geometries = {m: g for m, (_, g) in volumes.items()}
    steps = plan(geometries, options, names)
    reference = geometries[REFERENCE]
    fixed = to_image(volumes[REFERENCE][0], reference)
    # a moved sequence's interpolation spills a voxel or two past the brain's edge; where the T1c is 0
    # (skull-stripped: no brain there) that spill would widen the brain mask (non-zero in any sequence)
    # and shift every sequence's normalisation, so it is cut there
    outside = volumes[REFERENCE][0] == 0
    out = {m: a for m, (a, _) in volumes.items()}
    registrations = {}
    for index, step in enumerate(steps):
        if progress:
            progress(index / len(steps), step.describe())
        if check_cancel:
            check_cancel()
        array, geometry = volumes[step.sequence]
        moving = to_image(array, geometry)
        if step.action == "register":
            moved, registrations[step.sequence] = registration.onto_reference(fixed, moving, step.sequence,
                                                                                options.registration)
        else:
            moved = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        out[step.sequence] = sitk.GetArrayFromImage(moved)
        out[step.sequence][outside] = 0.0
    return Prepared(out, reference, steps, registrations)
