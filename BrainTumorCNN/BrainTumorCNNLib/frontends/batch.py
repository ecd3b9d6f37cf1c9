"""Headless segmentation of many cases: `braintumorcnn segment`.

Each case gets the outputs of segment_case.py (with --uncertainty, also its
uncertainty map); the run writes `metrics.csv`: every case's confidence figure
(expected_dice_<region>) and, when ground truth is found, its scores.  Every input is looked at before any
work: a missing path, or a folder holding no image of any sequence, stops the
run with an error.  A case that cannot be segmented (a folder lacking a
sequence, an unreadable file) is reported with its error and skipped, and the
exit status is 1; a case delivered without its DICOM SEG is reported and
counts as segmented.  A rerun skips finished cases; a failed or killed case
leaves no output.  Progress is one updated line on a terminal, else a line per
10 % (logs).  With --scheduler every case runs on a Dask cluster (cluster.py).
The same code runs under `Slicer --no-main-window --python-script
BrainTumorCNN/BrainTumorCNNBatch.py -- ARGS`.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import List, Tuple

from ..network import registry
from ..preparing import brain_extraction
from ..preparing.preprocessing import PreprocessingConfig
from ..reading import io
from ..running import cases, inference, pipeline
from ..running.segmenter import Segmenter
from ..running.postprocessing import CleanupConfig
from ..scoring import tables
from . import cluster
from ..writing.outputs import finished, output_paths, uncertainty_path
from .segment_case import Source, finished_row, run_case


def collect_jobs(args: argparse.Namespace) -> List[Tuple[str, Source]]:
    """(case name, folder / image / four files) of every case given; raises when an input is missing
    or holds no case, before any work."""
    explicit = {m: getattr(args, m.lower()) for m in io.MODALITIES}
    if any(explicit.values()):
        if args.inputs:
            raise ValueError("give either case folders or --t1/--t1c/--t2/--flair, not both")
        missing = [m for m, f in explicit.items() if not f]
        if missing:
            raise ValueError(f"missing {', '.join('--' + m.lower() for m in missing)}")
        for flag, given in [(f"--{m.lower()}", f) for m, f in explicit.items()] + [("--truth", args.truth)]:
            if given and not Path(given).is_file():
                raise io.CaseError(f"{given} (given as {flag}): no such file")
        files = {m: Path(f) for m, f in explicit.items()}
        name = args.name or io.common_stem(files.values())
        return [(name or "case", files)]
    if not args.inputs:
        raise ValueError("nothing to segment: give case folders or --t1/--t1c/--t2/--flair files")
    jobs = []
    for item in args.inputs:
        found = io.find_cases(item)
        if not found:
            raise io.CaseError(
                f"{item}: no case found: a case is a folder of T1, T1c, T2 and FLAIR images named like "
                "<id>_t1/_t1ce/_t2/_flair.nii.gz (or another layout of the README), a folder of such folders, "
                "or an MSD 4-D image")
        jobs += [(io.image_stem(path) if path.is_file() else path.name, path) for path in found]
    names = [n for n, _ in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several cases are named {', '.join(duplicates)}; their outputs would collide")
    return jobs


def folder_rows(output: Path, rows: List[dict]) -> List[dict]:
    """The rows metrics.csv gets: this run's, and those already in the table of results still in the
    folder (segmented by an earlier run of other inputs): the table describes the folder. By case name."""
    ours = {row["case"] for row in rows}
    kept = [row for row in tables.read_csv_rows(output / "metrics.csv")
            if row["case"] not in ours and finished(output_paths(output, row["case"]))]
    return sorted(kept + list(rows), key=lambda row: row["case"])


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*",
                        help="case folders, folders of cases, MSD 4-D images, or folders of DICOM series (a study)")
    for modality in io.MODALITIES:
        parser.add_argument(f"--{modality.lower()}", metavar="FILE",
                            help=f"{modality} volume, DICOM series folder or one file of it (instead of INPUT)")
    parser.add_argument("--truth", metavar="FILE", help="ground truth for --t1/--t1c/--t2/--flair input")
    parser.add_argument("--name", help="case name for --t1/--t1c/--t2/--flair input")
    parser.add_argument("--output", "-o", required=True, help="output folder")
    parser.add_argument("--model", choices=list(registry.MODELS), help="model (default: best shipped model)")
    parser.add_argument("--weights", help="weights file for --model (its model card beside it)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--no-cleanup", action="store_true", help="keep all connected components")
    parser.add_argument("--keep-distant", action="store_true",
                        help="keep components far from the main tumor that the model's card removes (the rule its "
                             "cross-validation chose; only small and flat components are then removed)")
    parser.add_argument("--no-edema-growth", action="store_true",
                        help="leave out the edema growth the model's card carries (the faint edema next to the "
                             "tumor, FLAIR above the brain's, that its cross-validation chose to add)")
    parser.add_argument("--flips", action="store_true",
                        help="test-time augmentation: average the probabilities of the image and its left-right "
                             "flip (twice the network time)")
    parser.add_argument("--precision", choices=inference.PRECISIONS, default="auto",
                        help="arithmetic of the direct convolutions: bfloat16 is faster on CPUs with AVX512-BF16 "
                             "or AMX and agrees with float32 on >= 99.9 %% of brain voxels (docs/speed.md); auto "
                             "(default): bfloat16 on such a CPU, float32 elsewhere (GPUs included)")
    parser.add_argument("--through-plane", action="store_true",
                        help="average FLAIR over 5 mm and T2 over 3 mm along the slice axis before preprocessing "
                             "(raised the cross-validated complete Dice; docs/training.md)")
    parser.add_argument("--whole-cascade", action="store_true",
                        help="a cascade (InputCascadeCNN, LocalCascadeCNN, MFCascadeCNN, CascadeEnsembleCNN): its "
                             "second network over the whole brain (default: only near the tumor its first network "
                             "finds, a quarter to a third less CPU, the cleaned labels within 0.4 %% of the tumor "
                             "on the cases measured; docs/speed.md)")
    parser.add_argument("--no-screening", action="store_true",
                        help="run the network on every brain slice (default: every third first, then only the "
                             "slices near tumor; the cleaned labels are the same, README Speed)")
    parser.add_argument("--no-n4", action="store_true", help="skip N4 bias-field correction")
    parser.add_argument("--resample", action="store_true",
                        help="resample volumes that are not on the T1c grid instead of stopping")
    parser.add_argument("--register", action=argparse.BooleanOptionalAction, default=None,
                        help="register T1, T2, FLAIR rigidly onto the T1c (default: for DICOM input only)")
    parser.add_argument("--brain-extraction", choices=brain_extraction.MODES,
                        default=pipeline.SegmentationOptions.brain_extraction,
                        help="extract the brain before segmenting: auto (when the T1c shows a skull), on, off; "
                             f"needs {brain_extraction.EXTRACTOR} ({brain_extraction.INSTALL})")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write <case>_uncertainty.nii.gz: each voxel's normalised entropy of the class "
                             "probabilities (0 sure, 1 every class equally likely), float32 on the input grid")
    parser.add_argument("--overwrite", action="store_true", help="segment again cases whose outputs exist")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run every case as a task on the Dask cluster at ADDRESS (tcp://host:8786), or on "
                             "local:N worker processes of this machine; needs the [cluster] extra (cluster.py)")


def segmentation_options(args: argparse.Namespace) -> pipeline.SegmentationOptions:
    return pipeline.SegmentationOptions(
        model=args.model, weights_path=args.weights, device=args.device, flips=args.flips, precision=args.precision,
        screen=not args.no_screening, brain_extraction=args.brain_extraction,
        preprocessing=PreprocessingConfig(n4=not args.no_n4), cleanup=None if args.no_cleanup else CleanupConfig(),
        model_cleanup=not args.keep_distant, edema_growth=not args.no_edema_growth, through_plane=args.through_plane, two_stage=not args.whole_cascade)


def main(args: argparse.Namespace) -> int:
    jobs = collect_jobs(args)
    if args.uncertainty and args.scheduler:
        raise ValueError("--uncertainty is not available with --scheduler yet: run those cases without --scheduler")
    if args.brain_extraction == "on":
        brain_extraction.require()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob(".*.part*"):  # temporary files of a killed run (one batch per folder at a time)
        stale.unlink()
    options = segmentation_options(args)
    # the model loaded and checked once for every case here (the cluster's workers build their own)
    segmenter = Segmenter(options) if not args.scheduler else None
    truth = Path(args.truth) if args.truth else None
    rows, failed, skipped, without_dicom_seg = [], [], 0, []
    local_jobs = jobs
    if args.scheduler:  # the cluster runs every case instead of the loop below
        rows, failed, skipped, without_dicom_seg = cluster.segment_cases(
            args.scheduler, jobs, output, options, truth, args.resample, args.overwrite)
        local_jobs = []
    for i, (name, source) in enumerate(local_jobs, 1):
        paths = output_paths(output, name)
        print(f"[{i}/{len(jobs)}] {name}", flush=True)
        try:
            map_missing = args.uncertainty and not uncertainty_path(output, name).is_file()
            if finished(paths) and not args.overwrite and not map_missing:
                skipped += 1
                print("  already done (use --overwrite to redo)")
                case = cases.read_case(source, truth=truth, resample=args.resample, register=args.register,
                                       name=name)
                rows.append(finished_row(name, paths["provenance"], io.read_image(paths["labels"])[0], case))
                continue
            delivered = run_case(name, source, output, segmenter, truth, args.resample, args.register,
                                 args.uncertainty)
            rows += [delivered.row] if delivered.row else []
            without_dicom_seg += [name] if delivered.missing else []
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a bad case must not stop the batch
            failed.append(name)
            ends_progress_line = "\n" if sys.stdout.isatty() else ""
            print(f"{ends_progress_line}  FAILED: {exc}", file=sys.stderr)
            if not isinstance(exc, (ValueError, OSError, brain_extraction.ExtractorMissing)):
                traceback.print_exc()
    scored = [row for row in rows if any(key.startswith("dice_") for key in row)]
    if scored:
        print(tables.format_table(scored))
    rows = folder_rows(output, rows)
    if rows:
        tables.write_csv(output / "metrics.csv", rows)
    print(f"{len(jobs) - len(failed) - skipped} segmented, {skipped} already done, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else "")
          + (f"; without DICOM SEG (see above): {', '.join(without_dicom_seg)}" if without_dicom_seg else ""))
    return 1 if failed else 0

