"""A case moved as a head moves in the scanner, written as a new case of the same layout: to check
that `braintumorcnn compare` sees no growth where there is none, and to measure how much
segmentation alone varies.

    python Testing/Tools/move_case.py CASE OUT_DIR --shift DZ DY DX     # whole voxels, no interpolation
    python Testing/Tools/move_case.py CASE OUT_DIR --rotate DEGREES     # in-plane, linear resampling

--shift moves every array's voxels by whole voxels along (Z, Y, X) on the same grid (origin and
direction kept), so the head moves by exactly that many voxels in space and no value is
interpolated; voxels pushed off the grid are lost (the tool says how many were not background)
and those uncovered are 0.  --rotate turns the head about the grid's centre around the patient's
head-foot axis, every sequence resampled linearly and the truth by
nearest neighbour, onto the same grid.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.reading.geometry import Geometry, to_image


def shift(array: np.ndarray, voxels: Sequence[int]) -> np.ndarray:
    """`array` moved by whole `voxels` along its axes, 0 where nothing moved in."""
    out = np.zeros_like(array)
    source = tuple(slice(max(-v, 0), n - max(v, 0)) for v, n in zip(voxels, array.shape))
    target = tuple(slice(max(v, 0), n - max(-v, 0)) for v, n in zip(voxels, array.shape))
    out[target] = array[source]
    return out


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
            moved = shift(array, voxels)
            lost = int(np.count_nonzero(array)) - int(np.count_nonzero(moved))
            if lost > 0:
                print(f"{key}: {lost} non-zero voxels moved off the grid", file=sys.stderr)
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
