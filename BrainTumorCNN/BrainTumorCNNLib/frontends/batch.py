"""Headless segmentation of many cases: `braintumorcnn segment`.

Per case it writes `<case>.seg.nrrd` (a Slicer segmentation), `<case>_labels.nii.gz`
on the input grid (BraTS 2017-2021 values for 4-class models, the paper's 0-4 for
5-class models) and `<case>_preview.png`; for DICOM input also `<case>.seg.dcm`
(a DICOM SEG against the T1c series, dicom_seg.py; skipped with a warning when
highdicom is missing); `metrics.csv` when ground truth is found.  Every input is looked at before any work: a missing path, or a folder
holding no image of any sequence, stops the run with an error.  A case that
cannot be segmented (a folder lacking a sequence, an unreadable file) is
reported with its error and skipped, and the exit status is 1; a rerun skips
finished cases; every file is written atomically, so a killed run leaves no
partial output.  Progress is one updated line on a terminal, else a line per
10 % (logs).
The same code runs under `Slicer --no-main-window --python-script
BrainTumorCNN/BrainTumorCNNBatch.py -- ARGS`.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional, TextIO, Tuple, Union

from ..network import registry
from ..preparing import brain_extraction
from ..preparing.preprocessing import PreprocessingConfig
from ..reading import io
from ..running import inference, pipeline
from ..running.postprocessing import CleanupConfig
from ..scoring import metrics, tables
from . import dicom_seg, mrml, preview

Source = Union[Path, Dict[str, Path]]


def output_paths(output: Path, case: str) -> Dict[str, Path]:
    """The files every case gets (a DICOM case also gets dicom_seg_path's)."""
    return {"segmentation": output / f"{case}.seg.nrrd", "labels": output / f"{case}_labels.nii.gz",
            "preview": output / f"{case}_preview.png"}


def dicom_seg_path(output: Path, case: str) -> Path:
    return output / f"{case}.seg.dcm"


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


class ProgressLine:
    """A pipeline.Progress callback showing one case on `stream`: one line updated in place on a
    terminal; elsewhere (a log, a pipe) a line per `step` of the work, so a log holds a few lines, not
    hundreds of updates."""

    def __init__(self, stream: Optional[TextIO] = None, step: float = 0.1):
        self.stream = stream if stream is not None else sys.stdout
        self.terminal = self.stream.isatty()
        self.step = step
        self.next = 0.0  # the fraction that earns the next line

    def __call__(self, fraction: float, message: str) -> None:
        if self.terminal:
            self.stream.write(f"\r  [{fraction:4.0%}] {message:<60}")
        elif fraction >= self.next - 1e-9:
            self.stream.write(f"  [{fraction:4.0%}] {message}\n")
            self.next = (math.floor(fraction / self.step + 1e-9) + 1) * self.step
        else:
            return
        self.stream.flush()

    def finish(self, message: str) -> None:
        """The case's closing line (ends the updated line on a terminal)."""
        self.stream.write(f"\r  {message:<70}\n" if self.terminal else f"  {message}\n")
        self.stream.flush()


def run_case(name: str, source: Source, output: Path, options: pipeline.SegmentationOptions,
             truth: Optional[Path], resample: bool, register: Optional[bool] = None) -> Optional[dict]:
    """Segment one case and write its outputs; returns its metrics row when truth is known."""
    case = io.read_case(source, truth=truth, resample=resample, register=register, name=name)
    for step in case.preparation:  # what was done to put the sequences on the T1c grid
        print(f"  {step.describe()}")
        if step.sequence in case.registrations:
            print(f"    {case.registrations[step.sequence].summary()}")
    dicom_reference = case.series.get("T1c")
    if dicom_reference is not None:
        try:
            dicom_seg.require()
        except ImportError as exc:
            print(f"  no DICOM SEG will be written: {exc}", file=sys.stderr)
            dicom_reference = None
    started = time.time()
    progress = ProgressLine()
    result = pipeline.segment(case.images, case.geometry, options, progress=progress)
    progress.finish(f"segmented in {time.time() - started:.1f} s with {result.model_name}")
    if result.extraction.mode != "off":
        print(f"  {result.extraction.summary()}", flush=True)
    paths = output_paths(output, name)
    row = _metrics_row(name, result.labels, case) if case.truth is not None else None
    title = f"{name}: {result.model_name}"
    if row:
        title += " - Dice " + ", ".join(f"{region} {row[f'dice_{region}']:.2f}" for region in case.scheme.regions)
    # The label map is written last: its presence marks the case as finished.
    mrml.write_segmentation_file(result.labels, case.geometry, result.num_classes, paths["segmentation"])
    preview.write_preview(case.images, result.labels, paths["preview"], result.num_classes, title=title,
                          geometry=case.geometry, truth=case.truth)
    if dicom_reference is not None:
        dicom_seg.write_dicom_seg(result.labels, result.num_classes, result.model_name, dicom_reference.files,
                                  dicom_seg_path(output, name))
    io.write_labels(result.labels, case.geometry, paths["labels"])
    return row


def _metrics_row(name: str, predicted, case: io.Case) -> dict:
    scores = metrics.evaluate_case(predicted, case.truth, case.geometry.spacing, case.scheme.regions)
    return {"case": name, **scores.as_row()}


def _finished(paths: Dict[str, Path]) -> bool:
    return all(p.is_file() for p in paths.values())


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
    parser.add_argument("--flips", action="store_true",
                        help="test-time augmentation: average the probabilities of the image and its left-right "
                             "flip (twice the network time)")
    parser.add_argument("--precision", choices=inference.PRECISIONS, default="float32",
                        help="arithmetic of the direct convolutions: bfloat16 is faster on CPUs with AVX512-BF16 "
                             "or AMX and agrees with float32 on >= 99.9 %% of brain voxels (README, Speed)")
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
    parser.add_argument("--overwrite", action="store_true", help="segment again cases whose outputs exist")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run every case as a task on the Dask cluster at ADDRESS (tcp://host:8786), or on "
                             "local:N worker processes of this machine; needs the [cluster] extra (cluster.py)")


def main(args: argparse.Namespace) -> int:
    jobs = collect_jobs(args)
    if args.brain_extraction == "on":
        brain_extraction.require()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob(".*.part*"):  # temporary files of a killed run (one batch per folder at a time)
        stale.unlink()
    options = pipeline.SegmentationOptions(
        model=args.model, weights_path=args.weights, device=args.device, flips=args.flips, precision=args.precision,
        screen=not args.no_screening,
        brain_extraction=args.brain_extraction,
        preprocessing=PreprocessingConfig(n4=not args.no_n4), cleanup=None if args.no_cleanup else CleanupConfig())
    truth = Path(args.truth) if args.truth else None
    rows, failed, skipped = [], [], 0
    local_jobs = jobs
    if args.scheduler:  # the cluster runs every case instead of the loop below
        from . import cluster  # noqa: PLC0415 - imports batch; Dask only when asked for

        rows, failed, skipped = cluster.segment_cases(args.scheduler, jobs, output, options, truth, args.resample,
                                                      args.overwrite)
        local_jobs = []
    for i, (name, source) in enumerate(local_jobs, 1):
        paths = output_paths(output, name)
        print(f"[{i}/{len(jobs)}] {name}", flush=True)
        try:
            if _finished(paths) and not args.overwrite:
                skipped += 1
                print("  already done (use --overwrite to redo)")
                case = io.read_case(source, truth=truth, resample=args.resample, register=args.register, name=name)
                if case.truth is not None:
                    predicted, _ = io.read_image(paths["labels"])
                    rows.append(_metrics_row(name, predicted, case))
                continue
            row = run_case(name, source, output, options, truth, args.resample, args.register)
            if row:
                rows.append(row)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a bad case must not stop the batch
            failed.append(name)
            ends_progress_line = "\n" if sys.stdout.isatty() else ""
            print(f"{ends_progress_line}  FAILED: {exc}", file=sys.stderr)
            if not isinstance(exc, (ValueError, OSError, brain_extraction.ExtractorMissing)):
                traceback.print_exc()
    if rows:
        tables.write_csv(output / "metrics.csv", rows)
        print(tables.format_table(rows))
    print(f"{len(jobs) - len(failed) - skipped} segmented, {skipped} already done, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0

