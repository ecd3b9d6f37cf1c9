"""`braintumorcnn robustness`: the site-shift benchmark.

Every case is segmented clean and under each site shift of scoring/site_shifts.py
(applied to the raw images, before preprocessing), by each model, through the pipeline
`segment` runs; the scores go to DIR/robustness.csv, one row per case, shift and model,
written after every segmentation, so a rerun resumes where a run stopped. The tables
(Dice per shift and region, the drop from clean, the worst shift; per case the clean
Dice against the tumor's share of the brain) are printed at the end.

Cases the models were trained on measure nothing about unseen sites: pass held-out
cases (cases outside every model card's training list), or `--run` a cross-validation run,
whose every case is then segmented by the fold model that held it out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..labels import REGIONS
from ..learning import crossval
from ..network import weights
from ..preparing.preprocessing import PreprocessingConfig, brain_mask, preprocess, through_plane_average
from ..reading import io
from ..running import inference
from ..running.cases import read_case
from ..running.pipeline import SegmentationOptions, segment_preprocessed
from ..scoring import site_shifts
from ..scoring.metrics import as_float, evaluate_case
from ..scoring.shift_scores import CSV_NAME, by_case, case_changes, drops, read_rows, value, worst_shift
from ..scoring.tables import write_csv

KEY = ("case", "model", "shift")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cases", nargs="+", type=Path, metavar="CASE",
                        help="case folders with ground truth, or folders of them (cases no model trained on)")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="DIR",
                        help=f"folder of {CSV_NAME} (a rerun resumes from it)")
    parser.add_argument("--models", nargs="+", metavar="NAME", help="registry models (default: the default model)")
    parser.add_argument("--weights", type=Path, help="other weights for the one model of --models (card beside them)")
    parser.add_argument("--run", type=Path, metavar="RUN_DIR",
                        help="a cross-validation run (braintumorcnn crossval): each case, one of the run's, is "
                             "segmented by the fold model that held it out (the weights that fold kept) and cleaned "
                             "with the rule the run chose (as its EnsembleCNN); the rows name the run's folder, and "
                             "that rule when not the default, as their model")
    parser.add_argument("--shifts", nargs="+", metavar="SHIFT", choices=tuple(site_shifts.SHIFTS),
                        default=list(site_shifts.SHIFTS), help="site shifts to run (default: all): "
                        + "; ".join(f"'{s.name}': {s.description}" for s in site_shifts.SHIFTS.values()))
    parser.add_argument("--slab", type=int, metavar="N", help="only N axial slices through the tumor's largest "
                        "cross-section (a quick check; the whole case by default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random shifts (bias field, noise)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", choices=inference.PRECISIONS, default=inference.SCORING_PRECISION,
                        help=f"arithmetic of the convolutions (default {inference.SCORING_PRECISION}, the reference: "
                             "figures that do not depend on the CPU; auto as `segment` runs)")
    parser.add_argument("--through-plane", action="store_true",
                        help="segment as `segment --through-plane` does (FLAIR and T2 averaged along the slice axis)")
    parser.add_argument("--n4-shrink", type=int, metavar="N",
                        help=f"fit N4's bias field on the image shrunk N times per axis (default "
                             f"{PreprocessingConfig().n4_shrink}); the rows' model label names it when not the default")


def main(args: argparse.Namespace) -> int:
    sources = [c for path in args.cases for c in _cases(path)]
    if args.run and (args.models or args.weights):
        raise ValueError("--run takes each case's model from the run: leave out --models and --weights")
    options = SegmentationOptions(device=args.device, precision=args.precision, through_plane=args.through_plane)
    if args.n4_shrink is not None:
        if args.n4_shrink < 1:
            raise ValueError(f"--n4-shrink {args.n4_shrink}: give a factor of at least 1")
        options.preprocessing = replace(options.preprocessing, n4_shrink=args.n4_shrink)
    if args.run:
        models, models_for, options.cleanup = _held_out_models(args.run, sources)
    else:
        models, models_for = _named_models(args)
    # labelled apart, so a table holding plain runs never resumes with their rows
    suffix = (", through-plane" if args.through_plane else "") + (
        f", N4 shrink {args.n4_shrink}" if args.n4_shrink not in (None, PreprocessingConfig().n4_shrink) else "")
    if suffix:
        models, plain_for = [m + suffix for m in models], models_for
        models_for = lambda source: {m + suffix: v for m, v in plain_for(source).items()}  # noqa: E731
    args.output.mkdir(parents=True, exist_ok=True)
    csv_path = args.output / CSV_NAME
    rows = read_rows(csv_path)
    done = {tuple(row[k] for k in KEY) for row in rows}
    failed = []
    for index, source in enumerate(sources, 1):
        todo = [(s, m) for s in args.shifts for m in models if (source.name, m, s) not in done]
        if not todo:
            continue
        try:
            rows += run_case(source, todo, models_for(source), options, args, csv_path, rows,
                             f"[{index}/{len(sources)}]")
        except (ValueError, OSError) as exc:
            failed.append(source.name)
            print(f"{source.name}: FAILED: {exc}", file=sys.stderr)
    for name in models:
        print(report([r for r in rows if r["model"] == name and r["shift"] in args.shifts], name))
    print(f"scores of {len(rows)} segmentations in {csv_path}")
    return 1 if failed else 0


def _named_models(args: argparse.Namespace):
    """The models of --models (default: the default model), the same for every case."""
    from ..network import registry
    models = args.models or [registry.default_model()]
    if args.weights and len(models) != 1:
        raise ValueError("--weights names the weights of one model: give exactly one name with --models")
    for name in models:
        registry.get(name)
    loaded = {name: weights.load(name, args.weights) for name in models}
    return models, lambda source: loaded


def _held_out_models(run: Path, sources: Sequence[Path]):
    """The run as the one model, per case the fold model that never saw it, and the cleanup rule the run
    chose (the rule its EnsembleCNN's card carries; named in the model's label when not the default)."""
    fold_of = crossval.held_out_folds(run)
    strangers = [s.name for s in sources if s.name not in fold_of]
    if strangers:
        raise ValueError(f"{', '.join(strangers)}: not a case of {run}'s folds; with --run, pass the run's cases")
    label, cleanup = crossval.held_out_rule(run)
    loaded = {}

    def models_for(source: Path) -> dict:
        fold = fold_of[source.name]
        if fold not in loaded:
            path = crossval.fold_weights(run, fold)
            model_name = json.loads(path.with_suffix(".json").read_text())["model"]
            loaded[fold] = weights.load(model_name, path)
        return {label: loaded[fold]}
    return [label], models_for, cleanup


def _cases(path: Path) -> List[Path]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such case or folder")
    found = io.find_cases(path)
    if not found:
        raise ValueError(f"{path}: no case found (a case folder holds T1, T1c, T2, FLAIR and the truth)")
    return found


def run_case(source: Path, todo, loaded, options: SegmentationOptions, args, csv_path: Path,
             rows: List[dict], prefix: str) -> List[dict]:
    """Segment one case under the shifts and models of `todo`; every row is saved as soon as it exists."""
    case = read_case(source)
    if case.truth is None:
        raise ValueError(f"{source}: no ground truth found; the benchmark scores against it")
    images, truth, geometry = case.images, case.truth, case.geometry
    if args.slab:
        images, truth, geometry = site_shifts.slab(images, truth, geometry, args.slab)
    brain = brain_mask(images)
    share = site_shifts.tumor_share(truth, brain)
    new = []
    for shift in dict.fromkeys(s for s, _ in todo):
        shifted = site_shifts.apply(shift, images, brain, truth, geometry, seed=args.seed)
        if options.through_plane:  # as `segment --through-plane`: on the shifted raw images
            shifted = through_plane_average(shifted, brain, geometry.spacing[2])
        prepared = {}  # preprocessed once per normalisation the models use
        for model_name in [m for s, m in todo if s == shift]:
            model, card = loaded[model_name]
            config = PreprocessingConfig.of_model(card, options.preprocessing)
            if config not in prepared:
                prepared[config] = preprocess(shifted, config, spacing=geometry.spacing)
            pre = prepared[config]
            start = time.perf_counter()
            result = segment_preprocessed(model, model_name, card, pre.images, pre.brain_mask, geometry.spacing,
                                          options)
            scores = evaluate_case(result.labels, truth, geometry.spacing, case.scheme.regions).as_row()
            row = {"case": case.name, "model": model_name, "shift": shift, "tumor_share": round(share, 5),
                   "slices": int(truth.shape[0]), **{k: v for k, v in scores.items() if k.startswith("dice_")
                                                      or k.startswith(("sensitivity_", "precision_"))}}
            new.append(row)
            write_csv(csv_path, rows + new, mean=False)
            print(f"{prefix} {case.name} {model_name} {shift}: Dice {_dice_text(row)} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return new


def _dice_text(row: Optional[dict]) -> str:
    """A row's Dice per region as `0.812 / 0.820 / -`; "-" without a row."""
    if row is None:
        return "-"
    return " / ".join("-" if value(row, r) is None else f"{value(row, r):.3f}" for r in REGIONS)


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {sd:.3f}"


def report(rows: Sequence[dict], model: str) -> str:
    """The benchmark's tables for one model: per shift, mean ± sd over the cases and the mean change from
    clean per region; the worst realistic shift per region; per case, the tumor's share of the brain, the
    clean Dice and the worst shift with its change."""
    if not rows:
        return f"{model}: nothing scored"
    cases = by_case(rows)
    change = drops(rows)
    header = " | ".join(f"Dice {r}" for r in REGIONS)
    lines = [f"## {model}: {len(cases)} case(s): {', '.join(cases)}", "",
             f"| shift | cases | {header} | change from clean ({' / '.join(REGIONS)}) |",
             "|---|---|" + "---|" * len(REGIONS) + "---|"]
    for shift in [s for s in site_shifts.SHIFTS if any(r["shift"] == s for r in rows)]:
        chosen = [r for r in rows if r["shift"] == shift]
        cells = [_mean_sd([v for v in (value(r, region) for r in chosen) if v is not None]) for region in REGIONS]
        delta = " / ".join(f"{np.mean(change[shift][r]):+.3f}" if change.get(shift, {}).get(r) else "-"
                           for r in REGIONS)
        lines.append(f"| {shift} | {len(chosen)} | " + " | ".join(cells) + f" | {delta} |")
    worst = {r: worst_shift(change, r) for r in REGIONS}
    lines += ["", "Worst realistic shift: " + "; ".join(
        f"{r}: {w} ({np.mean(change[w][r]):+.3f})" if w else f"{r}: -" for r, w in worst.items()), "",
        "| case | tumor share of brain | clean Dice (" + " / ".join(REGIONS) + ") | worst shift (complete) "
        "| its change (" + " / ".join(REGIONS) + ") |", "|---|---|---|---|---|"]
    for name, shifts in cases.items():
        mine = case_changes(shifts)
        bad = min((s for s in site_shifts.REALISTIC if "complete" in mine.get(s, {})),
                  key=lambda s: mine[s]["complete"], default=None)
        delta = " / ".join(f"{mine[bad][r]:+.3f}" if bad and r in mine[bad] else "-" for r in REGIONS)
        share = as_float(next(iter(shifts.values())).get("tumor_share"))
        lines.append(f"| {name} | {100 * share:.1f} % | {_dice_text(shifts.get('clean'))} | {bad or '-'} "
                     f"| {delta} |")
    return "\n".join(lines) + "\n"
