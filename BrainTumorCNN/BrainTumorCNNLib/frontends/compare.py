"""`braintumorcnn compare PRIOR CURRENT --output DIR`: has the tumor grown since the prior scan?

Each scan is a case folder or a DICOM study, as `segment` takes them.  Its segmentation comes, in
this order, from `--prior-labels` / `--current-labels` (a label map on that scan's T1c grid, in the
values `segment` writes), else from `DIR/<case>_labels.nii.gz` when `segment` (or an earlier
`compare`) finished the case into DIR, else from segmenting it into DIR exactly as `segment` would
(its files stay there, so a rerun reuses them; `--overwrite` segments again).  The prior's T1c is
then registered onto the current T1c and the comparison written and printed
(scoring/longitudinal.py, writing/comparison.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ..reading import io
from ..reading.geometry import Geometry, GeometryError
from ..scoring import longitudinal, tables
from ..writing.comparison import write_comparison
from ..writing.outputs import finished, output_paths
from . import batch
from .segment_case import run_case

#: `segment`'s options that say how a case is segmented; compare takes them as segment defines them.
SEGMENT_OPTIONS = ("--model", "--weights", "--device", "--no-cleanup", "--keep-distant", "--no-edema-growth",
                   "--flips", "--precision", "--through-plane", "--whole-cascade", "--no-screening", "--no-n4",
                   "--resample", "--register", "--brain-extraction", "--overwrite")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prior", help="the earlier scan: a case folder or a DICOM study")
    parser.add_argument("current", help="the later scan: a case folder or a DICOM study")
    parser.add_argument("--output", "-o", required=True,
                        help="output folder: the comparison's files, and each scan's segmentation (reused when there)")
    parser.add_argument("--prior-labels", metavar="FILE",
                        help="the prior's label map (on its T1c grid) instead of segmenting it")
    parser.add_argument("--current-labels", metavar="FILE",
                        help="the current scan's label map (on its T1c grid) instead of segmenting it")
    parser.add_argument("--no-registration", action="store_true",
                        help="the scans share one physical frame already: carry the prior's labels over unmoved")
    segment = argparse.ArgumentParser(add_help=False)
    batch.configure_parser(segment)
    for action in segment._actions:
        if set(action.option_strings) & set(SEGMENT_OPTIONS):
            parser._add_action(action)


def case_of(path: str, role: str) -> Tuple[str, Path]:
    """(case name as `segment` names it, its folder / image) of a PRIOR or CURRENT argument."""
    found = io.find_cases(path)
    if len(found) != 1:
        raise io.CaseError(f"{path} ({role}): {'no case' if not found else f'{len(found)} cases'} found; "
                           "give one case folder or one DICOM study")
    source = found[0]
    return (io.image_stem(source) if source.is_file() else source.name), source


def segmentation_of(name: str, source: Path, labels_file: Optional[str], output: Path,
                    args: argparse.Namespace) -> Tuple[np.ndarray, Geometry, np.ndarray]:
    """(labels, grid, T1c voxels) of one scan; segments it into `output` when no labels are given or there."""
    read = io.read_volumes(source, name=name)
    t1c, grid = read.volumes["T1c"]
    if labels_file:
        path = Path(labels_file)
    else:
        paths = output_paths(output, name)
        if finished(paths) and not args.overwrite:
            print(f"  {name}: reusing {paths['labels']} (segmented before; --overwrite segments again)", flush=True)
        else:
            print(f"  {name}: segmenting", flush=True)
            run_case(name, source, output, batch.segmentation_options(args), None, args.resample, args.register)
        path = paths["labels"]
    labels, geometry = tables.read_prediction(path)
    differences = geometry.differences(grid)
    if differences:
        raise GeometryError(f"{path}: not on the T1c grid of {name} ({'; '.join(differences)})")
    return labels, grid, np.asarray(t1c, np.float32)


def main(args: argparse.Namespace) -> int:
    (prior_name, prior_source), (current_name, current_source) = case_of(args.prior, "prior"), \
        case_of(args.current, "current")
    segmented_here = not args.prior_labels and not args.current_labels
    if prior_name == current_name and segmented_here:
        raise ValueError(f"both scans are named {prior_name}; their segmentations in the output folder would "
                         "collide: rename one folder, or give --prior-labels / --current-labels")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    print(f"prior: {prior_name}", flush=True)
    prior_labels, prior_grid, prior_t1c = segmentation_of(prior_name, prior_source, args.prior_labels, output, args)
    print(f"current: {current_name}", flush=True)
    current_labels, current_grid, current_t1c = segmentation_of(current_name, current_source, args.current_labels,
                                                                output, args)
    print("registration: none (--no-registration)" if args.no_registration else
          "registering the prior's T1c onto the current T1c ...", flush=True)
    comparison, prior_image = longitudinal.compare_scans(prior_name, prior_labels, prior_grid, prior_t1c,
                                                         current_name, current_labels, current_grid, current_t1c,
                                                         register=not args.no_registration)
    aligned = comparison.registration
    if aligned is not None:
        print(f"  {aligned.summary()}")
        for warning in aligned.warnings:
            print(f"  WARNING: {warning}")
    paths = write_comparison(output, comparison, current_grid, prior_image, current_t1c, current_labels)
    print()
    print(longitudinal.format_report(comparison))
    print()
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0
