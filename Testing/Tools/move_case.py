"""A case moved as a head moves in the scanner, written as a new case of the same layout: to check
that `braintumorcnn compare` sees no growth where there is none, and to measure how much
segmentation alone varies.

    python Testing/Tools/move_case.py CASE OUT_DIR --shift DZ DY DX     # whole voxels, no interpolation
    python Testing/Tools/move_case.py CASE OUT_DIR --rotate DEGREES     # in-plane, linear resampling

--shift moves the head by whole voxels along (Z, Y, X) in space, no value interpolated: the grid
grows by the move on the side the head moves towards (the new voxels 0), so nothing is pushed off
it and the moved case holds the same brain, voxel for voxel (on a grid cropped to the head, as the
small phantom's, a move on the same grid would lose brain voxels and change the preprocessing's
statistics: not the same scan).  --rotate turns the head about the grid's centre around the patient's
head-foot axis, every sequence resampled linearly and the truth by
nearest neighbour, onto the same grid.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.reading.geometry import Geometry, to_image


def shift(array: np.ndarray, geometry: Geometry, voxels: Sequence[int]) -> Tuple[np.ndarray, Geometry]:
    """`array` moved by whole `voxels` (Z, Y, X) in space, on `geometry`'s grid grown by the move: old
    index i lies at grid index i + max(v, 0) of a grid whose first voxel is the old grid's index
    min(v, 0), so it sits where the old grid's index i + v was; the voxels added are 0."""
    out = np.zeros(tuple(n + abs(v) for n, v in zip(array.shape, voxels)), array.dtype)
    out[tuple(slice(max(v, 0), max(v, 0) + n) for v, n in zip(voxels, array.shape))] = array
    start = np.asarray(geometry.direction).reshape(3, 3) @ (
        np.array([min(v, 0) for v in voxels[::-1]]) * np.asarray(geometry.spacing))
    moved = Geometry(out.shape[::-1], geometry.spacing,
                     tuple(float(o) for o in np.asarray(geometry.origin) + start), geometry.direction)
    return out, moved


def rotate(array: np.ndarray, geometry: Geometry, degrees: float, labels: bool) -> np.ndarray:
    """`array` turned by `degrees` about the grid's centre around the patient's head-foot axis."""
    image = to_image(array, geometry)
    centre = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])
    transform = sitk.VersorRigid3DTransform()
    transform.SetCenter(centre)
    transform.SetRotation((0.0, 0.0, 1.0), math.radians(degrees))  # about the patient's head-foot axis (LPS z)
    moved = sitk.Resample(image, image, transform, sitk.sitkNearestNeighbor if labels else sitk.sitkLinear, 0.0,
                          image.GetPixelID())
    return sitk.GetArrayFromImage(moved)


def move_case(case: Path, out_dir: Path, name: str, voxels: Optional[Sequence[int]] = None,
              degrees: Optional[float] = None) -> Path:
    """Write the moved case as `out_dir/name/`, each file (the truth too) named and stored as the
    case's own with `name` for the case's name, so its layout (and label scheme) reads the same;
    returns the folder."""
    read = io.read_volumes(case)
    files = {m: (read.files[m], *read.volumes[m]) for m in io.MODALITIES}
    if read.truth is not None:
        files["truth"] = (read.truth, *io.read_image(read.truth))
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    for key, (path, array, geometry) in files.items():
        if read.name not in path.name:
            raise ValueError(f"{path}: the file name does not hold the case name {read.name}")
        if voxels is not None:
            moved, geometry = shift(array, geometry, voxels)
        else:
            moved = rotate(array, geometry, degrees, labels=key == "truth")
        sitk.WriteImage(to_image(moved, geometry), str(folder / path.name.replace(read.name, name)),
                        useCompression=True)
    return folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", type=Path)
    parser.add_argument("out_dir", type=Path)
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--shift", type=int, nargs=3, metavar=("DZ", "DY", "DX"))
    how.add_argument("--rotate", type=float, metavar="DEGREES")
    parser.add_argument("--name", help="the moved case's name (default: <case>_moved)")
    args = parser.parse_args(argv)
    folder = move_case(args.case, args.out_dir, args.name or f"{args.case.name}_moved", args.shift, args.rotate)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
