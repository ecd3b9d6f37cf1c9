"""`braintumorcnn bench`: seconds per brain of preprocessing and of dense and patch-by-patch inference.

On one 240 x 240 x 155 four-channel volume (a real case from ../shared/data
when present, else the phantom of seed 0, full size):

- preprocessing, once: clipping, N4 and z-scoring (preprocessing.preprocess)
  timed as the differences of runs with the steps switched on one after the
  other (clip; clip + N4; all), so each figure is its step's own cost; the
  preprocessed volume is the one every model then runs on.
- preparation of scanner input, once (`--skip-preparation` leaves it out):
  the skull check (on the T1c), brain extraction (deepbet on the T1; not
  timed, with the reason, when deepbet is missing) and the registration of one
  sequence onto the T1c (the FLAIR moved by `MOTION`, about 12 degrees and 12 mm, then
  registered back and resampled onto the T1c grid), each a median over --repeats.

For each model:

- dense-direct: `inference.segment_volume(fast=False)`, the plain model run on
  whole slices cropped to the brain (direct convolutions);
- dense-fast: `segment_volume(fast=True)`, with the exact speed-ups of
  `fastconv` (FFT for large kernels where timed faster, fused Maxout and
  pooling, channels-last on CPU), model preparation included;
- dense-bf16: dense-fast with `precision="bfloat16"` (direct convolutions in
  bfloat16);
- screened: the whole volume as `segment` runs it, dense-fast with screening
  (every third slice first, then only the slices next to tumor; the cleaned
  labels are those of a full run), a cascade in two stages (running/cascade.py),
  with the slices it ran; needs the shipped weights (the other columns use them
  too when shipped, else untrained ones);
- patch-by-patch: the model on one rf x rf patch per brain pixel (batches of
  patches), timed on a random sample of brain pixels and extrapolated to all;
- dense/patch: patch-by-patch time over dense-fast time;
- per case: preprocessing plus screened (dense-fast without shipped weights), with the CPU time the
  process spent in user space and in the kernel and its minor page faults over the same work
  (resource.getrusage: the median run of each), and its ratio to dense-direct (the plain model on
  every slice, the reference), in wall time and in CPU time (user + system; on a machine other work
  shares, the CPU share each run gets varies, its CPU time much less);
- peak resident memory of the process that ran the model (each model runs in
  its own process, so peaks are per model).

The allocator is set up as `segment` sets it (running/allocator.py) before anything is timed.

With --device cuda on a machine without CUDA nothing is timed: the report says
it was skipped and why (exit status 0), so the same command serves both.

Times are medians over --repeats runs.  With --slices N the dense methods run
on N brain slices spread over the volume (each cropped as in a whole run) and
are extrapolated to all brain slices; the output says so.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..modalities import MODALITIES
from ..network import registry, slice_stack, weights
from ..preparing import brain_extraction, registration
from ..preparing.preprocessing import BACKGROUND_VALUE, Preprocessed, PreprocessingConfig, preprocess
from ..reading.geometry import Geometry, to_image
from ..running import allocator, cascade, inference, pipeline
from ..running.cases import read_case
from ..synthetic import phantom
from . import bench_training

SHARED_DATA = Path(os.environ.get("BRAINTUMORCNN_SHARED_DATA", Path(__file__).resolve().parents[4] / "shared" / "data"))
SHAPE = (155, 240, 240)  # Z, Y, X
PATCH_BATCH = 128


def find_real_case() -> Optional[Path]:
    """The first BraTS 2021 case folder under ../shared/data, if any."""
    folder = SHARED_DATA / "brats2021"
    cases = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return cases[0] if cases else None


def load_volume(case: Optional[str], phantom_size: str = "full") -> Tuple[np.ndarray, Geometry, str]:
    """A raw (4, Z, Y, X) volume, its grid and a description: `case`, else the first real
    case, else the phantom of seed 0 (a realistic image for N4 to work on)."""
    path = Path(case) if case else find_real_case()
    if path is None:
        made = phantom.make_phantom(seed=0, size=phantom_size)
        return made.images, made.geometry, f"phantom seed 0 ({phantom_size}; no real case in ../shared/data)"
    data = read_case(path)
    return data.images, data.geometry, f"{data.name} ({path})"


#: The head motion the registration is timed on: a rotation (degrees, about x y z) and a shift (mm).
MOTION = ((4.0, -6.0, 10.0), (8.0, -6.0, 7.0))


def _median_seconds(work, repeats: int) -> float:
    return _median_run(work, repeats)["seconds"]


def _median_run(work, repeats: int) -> Dict[str, float]:
    """The run of median wall time among `repeats`: its seconds, user and system CPU seconds and minor page
    faults (this process's, resource.getrusage)."""
    runs = []
    for _ in range(repeats):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        work()
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        runs.append({"seconds": seconds, **_cpu(before, after)})
    return sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]


def _cpu(before, after) -> Dict[str, float]:
    """User and system CPU seconds and minor page faults between two getrusage readings."""
    return {"user_s": after.ru_utime - before.ru_utime, "system_s": after.ru_stime - before.ru_stime,
            "minor_faults": after.ru_minflt - before.ru_minflt}


def time_preparation(images: np.ndarray, geometry: Geometry, repeats: int) -> Dict[str, object]:
    """Median seconds of the skull check, brain extraction and one sequence's registration (module docstring)."""
    t1c = images[MODALITIES.index("T1c")]
    figures: Dict[str, object] = {"skull_check_s": _median_seconds(
        lambda: brain_extraction.detect_skull(t1c, geometry), repeats)}
    try:
        brain_extraction.require("bench")
        figures["brain_extraction_s"] = _median_seconds(lambda: brain_extraction.brain_mask(
            images[MODALITIES.index(brain_extraction.EXTRACTION_SEQUENCE)], geometry, device="cpu"), repeats)
    except brain_extraction.ExtractorMissing as exc:
        figures["brain_extraction_s"], figures["brain_extraction_skipped"] = None, str(exc)
    import SimpleITK as sitk  # noqa: PLC0415 - only this timing builds images
    fixed = to_image(t1c.astype(np.float32), geometry)
    flair = to_image(images[MODALITIES.index("FLAIR")].astype(np.float32), geometry)
    motion = sitk.Euler3DTransform(fixed.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in fixed.GetSize()]), *np.radians(MOTION[0]), MOTION[1])
    moved = sitk.Resample(flair, flair, motion, sitk.sitkLinear, 0.0)
    found = []
    figures["registration_s"] = _median_seconds(
        lambda: found.append(registration.onto_reference(fixed, moved, "FLAIR")[1]), repeats)
    angle, shift, _ = registration.motion_of(motion, fixed)  # as applied, in the registration's own terms
    figures["motion"] = {"rotation_deg": list(MOTION[0]), "shift_mm": list(MOTION[1]), "angle_deg": angle,
                         "shift_norm_mm": shift, "found_angle_deg": found[-1].rotation_deg,
                         "found_shift_mm": found[-1].shift_mm}
    return figures


#: The preprocessing steps switched on one after the other: each step's time is the difference.
STEPS = (("none", PreprocessingConfig(clip=False, n4=False, zscore=False)),
         ("clip", PreprocessingConfig(clip=True, n4=False, zscore=False)),
         ("n4", PreprocessingConfig(clip=True, n4=True, zscore=False)),
         ("zscore", PreprocessingConfig()))


def time_preprocessing(images: np.ndarray, spacing, repeats: int) -> Tuple[Dict[str, float], Preprocessed]:
    """Median seconds of clipping, N4 and z-scoring (the default config), their total, and the result."""
    medians, last, runs = {}, {}, {}  # only the last result is kept: each is four full volumes
    for step, config in STEPS:
        runs[step] = _median_run(lambda: last.update(result=preprocess(images, config, spacing=spacing)), repeats)
        medians[step] = runs[step]["seconds"]
    result = last["result"]
    names = [step for step, _ in STEPS]
    figures = {f"{step}_s": max(0.0, medians[step] - medians[before]) for before, step in zip(names, names[1:])}
    figures["total_s"] = medians["zscore"]
    figures["cpu"] = {k: v for k, v in runs["zscore"].items() if k != "seconds"}  # the whole default preprocessing
    default = PreprocessingConfig()
    figures.update(n4_shrink=default.n4_shrink, n4_iterations=list(default.n4_iterations),
                   n4_convergence=default.n4_convergence)
    return figures, result


def time_dense(model, volume, mask, fast, device, only_slices, repeats, precision: str = "float32",
               screen_step: int = 1) -> Tuple[float, float, inference.InferenceResult, Dict[str, float]]:
    """Median seconds of segment_volume, of its model preparation, the last run's result and the median
    run's CPU times and page faults (_cpu)."""
    return _median_of(lambda: inference.segment_volume(model, volume, mask, device=device, fast=fast,
                                                       only_slices=only_slices, precision=precision,
                                                       screen_step=screen_step), repeats)


def time_screened(model, volume, mask, device, repeats, precision: str,
                  screen_step: int) -> Tuple[float, float, inference.InferenceResult, Dict[str, float]]:
    """As time_dense, for the whole volume run by the engine `segment` runs (cascade.runner_for: a cascade in
    two stages, as SegmentationOptions has it by default), a fresh one each time."""
    def run() -> inference.InferenceResult:
        engine = cascade.runner_for(model, inference.resolve_device(device), True, inference.DEFAULT_MEMORY_BUDGET,
                                    None, precision, pipeline.SegmentationOptions().two_stage)
        return engine.segment(volume, mask, screen_step=screen_step)

    return _median_of(run, repeats)


def _median_of(segment, repeats: int) -> Tuple[float, float, inference.InferenceResult, Dict[str, float]]:
    runs = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF)
        result = segment()
        runs.append((result.seconds, result.prepare_seconds, _cpu(before, resource.getrusage(resource.RUSAGE_SELF))))
    runs.sort(key=lambda run: run[0])
    seconds, prepare, cpu = runs[len(runs) // 2]
    return seconds, prepare, result, cpu


def time_patches(model, volume, mask, pixels: int, device, repeats: int, seed: int = 0) -> float:
    """Median seconds to classify `pixels` random brain pixels one patch each
    (batches of PATCH_BATCH patches, direct convolutions)."""
    rf = model.receptive_field
    left, right = inference.margins(rf)
    rng = np.random.default_rng(seed)
    brain = np.argwhere(mask)
    chosen = brain[rng.choice(len(brain), size=min(pixels, len(brain)), replace=False)]
    around = slice_stack.stacked(volume, np.arange(volume.shape[1]), slice_stack.offsets_of(model), BACKGROUND_VALUE)
    padded = np.pad(around, ((0, 0), (0, 0), (left, right), (left, right)), constant_values=BACKGROUND_VALUE)
    device = inference.resolve_device(device)
    net = model.to(device).eval()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(chosen), PATCH_BATCH):
                batch = np.stack([padded[:, z, y:y + rf, x:x + rf] for z, y, x in chosen[i:i + PATCH_BATCH]])
                net(torch.from_numpy(batch).to(device)).exp().cpu()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def spread_slices(mask: np.ndarray, n: int) -> np.ndarray:
    """`n` brain slices evenly spread from the lowest to the highest."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    if n >= len(slices):
        return slices
    return slices[np.round(np.linspace(0, len(slices) - 1, n)).astype(int)]


def bench_model(name: str, volume, mask, args) -> Dict[str, object]:
    """Every figure of one model (run in this process)."""
    spec = registry.get(name)
    shipped = name in registry.shipped() and spec.card().get("num_classes") == args.num_classes
    model, card = weights.load(name) if shipped else (spec.build(args.num_classes).eval(), {})
    brain_slices = int(mask.any(axis=(1, 2)).sum())
    row: Dict[str, object] = {"receptive_field": model.receptive_field, "weights": "shipped" if shipped else "untrained"}
    for key, fast, sample, precision in (("dense_direct_s", False, args.direct_slices or args.slices, "float32"),
                                         ("dense_fast_s", True, args.slices, "float32"),
                                         ("dense_bf16_s", True, args.slices, "bfloat16")):
        if key == "dense_direct_s" and args.skip_direct:
            row[key] = None
            continue
        only = spread_slices(mask, sample) if sample else None
        timed = len(only) if only is not None else brain_slices
        row[key.replace("_s", "_slices_timed")] = timed
        seconds, prepare, result, cpu = time_dense(model, volume, mask, fast, args.device, only, args.repeats,
                                                   precision)
        # per brain: preparation once, slices extrapolated to all brain slices
        row[key] = prepare + (seconds - prepare) * brain_slices / timed
        # CPU seconds (user + system) per brain, all extrapolated: what a loaded machine's share does not change
        row[key.replace("_s", "_cpu_s")] = (cpu["user_s"] + cpu["system_s"]) * brain_slices / timed
        row[key.replace("_s", "_prepare_s")] = prepare
        row["device"] = result.device
    # the whole volume as `segment` runs it (screening decides which slices run; it needs a trained model)
    row["dense_screened_s"] = row["screened_slices_run"] = row["screened_cpu"] = None
    if shipped:
        step = pipeline.screen_step(pipeline.SegmentationOptions(), card)
        row["dense_screened_s"], _, result, row["screened_cpu"] = time_screened(
            model, volume, mask, args.device, args.repeats, args.precision, step)
        row["screened_slices_run"] = len(result.slices)
    seconds = time_patches(model, volume, mask, args.patch_pixels, args.device, args.repeats)
    row["patch_s"] = seconds * int(mask.sum()) / min(args.patch_pixels, int(mask.sum()))
    row["patch_pixels_timed"] = min(args.patch_pixels, int(mask.sum()))
    row["dense_over_patch"] = row["patch_s"] / row["dense_fast_s"]
    row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
    return row


def run_child(name: str, argv: List[str]) -> Dict[str, object]:
    """bench_model in a fresh process, so its peak memory is its own."""
    command = [sys.executable, "-m", "BrainTumorCNNLib.frontends.bench", "--in-process", "--json", "--models", name] + argv
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark of {name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)["models"][name]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=list(registry.MODELS), metavar="MODEL",
                        help=f"models to time (default: all of {', '.join(registry.MODELS)})")
    parser.add_argument("--case", help="case folder to use (default: the first BraTS 2021 case in ../shared/data, "
                                       "else the phantom of seed 0, full size)")
    parser.add_argument("--slices", type=int, default=0,
                        help="time N brain slices spread over the volume and extrapolate to the whole brain")
    parser.add_argument("--direct-slices", type=int, default=0,
                        help="like --slices, for dense-direct alone (the slowest; default: as --slices)")
    parser.add_argument("--patch-pixels", type=int, default=1024,
                        help="brain pixels timed patch by patch (extrapolated to all brain pixels)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per figure; the median is reported")
    parser.add_argument("--num-classes", type=int, default=4, choices=(4, 5))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--skip-direct", action="store_true", help="do not time dense-direct (the slowest)")
    parser.add_argument("--precision", choices=inference.PRECISIONS, default="auto",
                        help="arithmetic of the screened whole-volume run, as `segment --precision` (default auto, "
                             "as segment)")
    parser.add_argument("--training", action="store_true",
                        help="instead, time a training step route by route and the sampler (bench_training)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every model in this process (peak memory is then the maximum so far)")
    parser.add_argument("--skip-preparation", action="store_true",
                        help="do not time the preparation of scanner input (skull check, brain extraction, registration)")
    bench_training.configure(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    # a model's own process gets the volume preprocessed once by the parent, not the case
    parser.add_argument("--preprocessed", help=argparse.SUPPRESS)


def _child_argv(args: argparse.Namespace, preprocessed: Path) -> List[str]:
    argv = ["--slices", str(args.slices), "--direct-slices", str(args.direct_slices), "--patch-pixels", str(args.patch_pixels), "--repeats", str(args.repeats),
            "--num-classes", str(args.num_classes), "--device", args.device, "--precision", args.precision]
    argv += ["--skip-direct"] if args.skip_direct else []
    return argv + ["--preprocessed", str(preprocessed)]


def cuda_missing(device: str) -> Optional[str]:
    """Why `device` cannot be timed here (CUDA asked for but absent), else None."""
    try:
        inference.resolve_device(device)
    except RuntimeError as exc:
        return str(exc)
    return None


def main(args: argparse.Namespace) -> int:
    if args.training:
        return bench_training.main(args)
    allocator.keep_freed_memory()  # as `segment` runs (its Segmenter sets it up before preprocessing)
    for name in args.models:
        registry.get(name)  # unknown names fail before any work
    skipped = cuda_missing(args.device)
    if skipped:  # a GPU row on a machine without one: said so, not an error (the CPU rows are another run)
        report = {"device": args.device, "skipped": skipped, "torch": torch.__version__}
        print(json.dumps(report, indent=2) if args.json else f"bench --device {args.device} skipped: {skipped}")
        return 0
    preparation = None
    if args.preprocessed:
        with np.load(args.preprocessed) as saved:
            volume, mask, source, preprocessing = saved["volume"], saved["mask"], str(saved["source"]), None
    else:
        images, geometry, source = load_volume(args.case)
        preparation = None if args.skip_preparation else time_preparation(images, geometry, args.repeats)
        preprocessing, pre = time_preprocessing(images, geometry.spacing, args.repeats)
        volume, mask = pre.images, pre.brain_mask
        del images
    brain_slices = int(mask.any(axis=(1, 2)).sum())
    report = {
        "volume": {"source": source, "shape": list(volume.shape), "brain_slices": brain_slices,
                   "brain_voxels": int(mask.sum())},
        "device": str(inference.resolve_device(args.device)),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "extrapolated_from_slices": {
            "dense_direct": (args.direct_slices or args.slices)
            if 0 < (args.direct_slices or args.slices) < brain_slices and not args.skip_direct else None,
            "dense_fast": args.slices if 0 < args.slices < brain_slices else None,
            "dense_bf16": args.slices if 0 < args.slices < brain_slices else None},
        "repeats": args.repeats,
        "screened_precision": inference.resolve_precision(args.precision, inference.resolve_device(args.device)),
        "precision_asked": args.precision,
        "cpu_native_bfloat16": inference.native_bfloat16(),
        "preparation": preparation,
        "preprocessing": preprocessing,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as folder:
        saved = Path(folder) / "preprocessed.npz"
        if not args.in_process:
            np.savez(saved, volume=volume, mask=mask, source=source)
        for name in args.models:
            if args.in_process:
                report["models"][name] = bench_model(name, volume, mask, args)
            else:
                if not args.json:
                    print(f"timing {name} ...", file=sys.stderr, flush=True)
                report["models"][name] = run_child(name, _child_argv(args, saved))
            if preprocessing:
                row = report["models"][name]
                row["case_s"] = preprocessing["total_s"] + (row["dense_screened_s"] or row["dense_fast_s"])
                row["case_cpu"] = case_cpu(preprocessing["cpu"], row["screened_cpu"])
                row["case_over_direct"] = row["case_s"] / row["dense_direct_s"] if row["dense_direct_s"] else None
                cpu = row["case_cpu"]
                row["case_over_direct_cpu"] = ((cpu["user_s"] + cpu["system_s"]) / row["dense_direct_cpu_s"]
                                               if cpu and row.get("dense_direct_cpu_s") else None)
    report["load_average"] = os.getloadavg()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0


def case_cpu(preprocessing: Dict[str, float], screened: Optional[Dict[str, float]]) -> Optional[Dict[str, float]]:
    """CPU times and page faults of a whole case (preprocessing + the screened run), with system time as a
    share of user time; None without a screened run (no shipped weights)."""
    if screened is None:
        return None
    total = {key: preprocessing[key] + screened[key] for key in screened}
    total["system_over_user"] = total["system_s"] / total["user_s"] if total["user_s"] else None
    return total


def format_table(report: dict) -> str:
    v = report["volume"]
    lines = [f"volume: {v['source']}, {v['brain_slices']} brain slices, {v['brain_voxels']} brain voxels; "
             f"device {report['device']}, {report['cpu_threads']} threads, torch {report['torch']}"]
    for method, n in report["extrapolated_from_slices"].items():
        if n:
            lines.append(f"{method.replace('_', '-')} extrapolated from {n} slices spread over the brain "
                         "(model preparation counted once); otherwise whole-brain runs")
    lines.append(f"screened: the whole volume as `segment` runs it, in {report['screened_precision']} (--precision "
                 f"{report['precision_asked']}; native bfloat16 on this CPU: "
                 f"{'yes' if report['cpu_native_bfloat16'] else 'no'})")
    lines.append("patch-by-patch extrapolated from a timed sample of brain pixels; "
                 f"medians of {report['repeats']} run(s); load average at the end "
                 + " ".join(f"{x:.1f}" for x in report["load_average"]))
    p = report["preprocessing"]
    if p:
        lines.append(f"preprocessing: clip {p['clip_s']:.1f} s, N4 {p['n4_s']:.1f} s (T1, T1c; shrink {p['n4_shrink']}, "
                     f"iterations {p['n4_iterations']}, convergence {p['n4_convergence']}), z-score "
                     f"{p['zscore_s']:.1f} s; total {p['total_s']:.1f} s; per case = preprocessing + screened (dense-fast "
                     "where no shipped weights: screening needs a trained model)")
    q = report.get("preparation")
    if q:
        extraction = (f"{q['brain_extraction_s']:.1f} s" if q["brain_extraction_s"] is not None
                      else "not timed (deepbet missing)")
        lines.append(f"preparation of scanner input: skull check {q['skull_check_s']:.2f} s, brain extraction "
                     f"(deepbet, T1) {extraction}, registration of one sequence onto the T1c (FLAIR moved "
                     f"{q['motion']['rotation_deg']} deg, {q['motion']['shift_mm']} mm) {q['registration_s']:.1f} s")
    header = (f"| {'model':<18} | dense-direct s | dense-fast s | dense-bf16 s | screened s (slices) | per case s "
              "| case/direct | case user s | case sys s (/user) | case minor faults "
              "| patch-by-patch s | dense/patch | peak RSS GiB |")
    lines += ["", header, "|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|"]

    def fmt(value, spec):
        width = spec.split(".")[0].rstrip(",d")
        return format(value, spec) if value is not None else format("-", ">" + width)

    for name, r in report["models"].items():
        cpu = r.get("case_cpu") or {}
        lines.append(f"| {name:<18} | {fmt(r['dense_direct_s'], '14.1f')} | {fmt(r['dense_fast_s'], '12.1f')} | "
                     f"{fmt(r['dense_bf16_s'], '12.1f')} | "
                     f"{fmt(r['dense_screened_s'], '9.1f')} ({fmt(r['screened_slices_run'], '3d')}/{v['brain_slices']:>3}) | "
                     f"{fmt(r.get('case_s'), '10.1f')} | {fmt(r.get('case_over_direct'), '10.3f')}x | "
                     f"{fmt(cpu.get('user_s'), '11.1f')} | {fmt(cpu.get('system_s'), '9.1f')} "
                     f"({fmt(cpu.get('system_over_user'), '6.1%')}) | {fmt(cpu.get('minor_faults'), '17,d')} | "
                     f"{fmt(r['patch_s'], '16.0f')} | {fmt(r['dense_over_patch'], '10.0f')}x | "
                     f"{fmt(r['peak_rss_gib'], '12.2f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m BrainTumorCNNLib.frontends.bench", description=__doc__.splitlines()[0])
    configure_parser(parser)
    sys.exit(main(parser.parse_args()))
