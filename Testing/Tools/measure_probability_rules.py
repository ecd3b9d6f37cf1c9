"""Measure decision rules on the class probabilities of a cross-validation run: prior correction
(class weights) and averaging with a second run's models (maintainer tool; about a third of a
whole-volume run per case).

Every held-out case of a `braintumorcnn crossval` run is run through its own fold's network on every
k-th brain slice; the class probabilities are kept (float16, resumable).  Then for each fold the
weights (tumor classes x w, and NCR/NET + enhancing x a further c) that maximise the mean Dice of the
*other* folds' cases are applied to this fold's cases, so no case scores with weights chosen on
itself.  With `--average-with OTHER_RUN` (same folds, its probabilities kept by an earlier run of
this tool), the two runs' probabilities are also averaged per case, both from models that never saw
the case.  Dice is on the sampled slices, before cleanup.  Cases the run leaves out of its means
(`crossval.in_means`: their fold trained on the same patient, or a patient's second case) are left out here too.

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_probability_rules.py RUN_DIR CACHE_DIR
        [--model TwoPathCNN] [--slice-step 3] [--average-with OTHER_RUN]
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.learning.crossval import fold_weights, held_out_folds, in_means
from BrainTumorCNNLib.learning.sampling import case_name, case_sources, load_case
from BrainTumorCNNLib.network import weights
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig
from BrainTumorCNNLib.running import inference

TUMOR = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
CORE = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def probabilities(run_dir: Path, cache: Path, model_name: str, step: int, store: Path) -> dict:
    """{case: (fold, probabilities (C, n, Y, X) float16, truth (n, Y, X), regions)} on every step-th slice."""
    fold_of = held_out_folds(run_dir)
    with (run_dir / "per_case.csv").open() as f:
        for row in csv.DictReader(f):
            if not in_means(row):
                fold_of.pop(row["case"], None)
    paths = {case_name(p): p for p in case_sources(str(cache))}
    store.mkdir(parents=True, exist_ok=True)
    out, models = {}, {}
    for name, fold in sorted(fold_of.items(), key=lambda kv: (kv[1], kv[0])):
        case = load_case(paths[name], PreprocessingConfig())
        slices = np.flatnonzero(case.brain.any(axis=(1, 2)))[::step]
        kept = store / f"{name}.npz"
        if kept.is_file():
            with np.load(kept, allow_pickle=False) as data:
                probs = data["probabilities"]
        else:
            if fold not in models:
                models[fold] = weights.load(model_name, fold_weights(run_dir, fold), device="cpu")[0]
            result = inference.segment_volume(models[fold], case.images.astype(np.float32), case.brain,
                                              device="cpu", only_slices=slices)
            probs = result.probabilities[:, slices].astype(np.float16)
            np.savez_compressed(kept, probabilities=probs)
            print(f"{name}: fold {fold}, {len(slices)} slices, {result.seconds:.1f} s", flush=True)
        out[name] = (fold, probs, case.truth[slices], case.regions)
    return out


def dice(probs: np.ndarray, truth: np.ndarray, regions, class_weights: np.ndarray) -> dict:
    weighted = probs * class_weights[:, None, None, None]  # float16 x float32 -> float32
    predicted = labels.class_values(len(class_weights))[inference.argmax_classes(weighted)]
    scores = {}
    for region in regions:
        p, t = labels.region_mask(predicted, region), labels.region_mask(truth, region)
        total = p.sum() + t.sum()
        scores[region] = 2.0 * (p & t).sum() / total if total else 1.0
    return scores


def class_weights(tumor: float, core: float, num_classes: int) -> np.ndarray:
    keys = labels.CLASS_TISSUES[num_classes]
    return np.array([1.0] + [tumor * (1.0 if k == "edema" else core) for k in keys[1:]], dtype=np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("--model", default="TwoPathCNN")
    parser.add_argument("--slice-step", type=int, default=3)
    parser.add_argument("--average-with", type=Path, help="a cross-validation run on the same folds whose "
                        "probabilities this tool kept before")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = probabilities(args.run_dir, args.cache, args.model, args.slice_step, args.run_dir / "probabilities")
    num_classes = next(iter(cases.values()))[1].shape[0]
    grid = list(itertools.product(TUMOR, CORE))
    table = {}  # (case, setting) -> scores
    for name, (fold, probs, truth, regions) in cases.items():
        for setting in grid:
            table[name, setting] = dice(probs, truth, regions, class_weights(*setting, num_classes))

    def mean_dice(names, setting):
        return float(np.mean([np.mean(list(table[n, setting].values())) for n in names]))

    folds = sorted({fold for fold, *_ in cases.values()})
    rows = []
    for fold in folds:
        mine = [n for n, v in cases.items() if v[0] == fold]
        others = [n for n, v in cases.items() if v[0] != fold]
        chosen = max(grid, key=lambda s: mean_dice(others, s))
        print(f"fold {fold}: chosen on the other folds: tumor x{chosen[0]}, core x{chosen[1]}")
        for name in mine:
            rows.append((name, fold, chosen, table[name, (1.0, 1.0)], table[name, chosen]))
    print(f"{'case':24s} fold  weights     Dice compl/core/enh without -> with")
    for name, fold, chosen, before, after in rows:
        fmt = lambda s: " / ".join(f"{s[r]:.3f}" if r in s else "  -  " for r in labels.REGIONS)
        print(f"{name:24s} {fold}  x{chosen[0]:<4} x{chosen[1]:<4}  {fmt(before)} -> {fmt(after)}")
    for region in labels.REGIONS:
        b = [r[3][region] for r in rows if region in r[3]]
        a = [r[4][region] for r in rows if region in r[4]]
        print(f"{region:10s} mean Dice {np.mean(b):.3f} +- {np.std(b, ddof=1):.3f} -> {np.mean(a):.3f} +- "
              f"{np.std(a, ddof=1):.3f} ({len(a)} cases; mean change {np.mean(np.subtract(a, b)):+.3f})")
    best_all = max(grid, key=lambda s: mean_dice(list(cases), s))
    print(f"chosen on all cases: tumor x{best_all[0]}, core x{best_all[1]}")
    if args.average_with:
        if json.loads((args.average_with / "folds.json").read_text()) != json.loads(
                (args.run_dir / "folds.json").read_text()):
            parser.error(f"{args.average_with} holds other folds than {args.run_dir}")
        ones = np.ones(num_classes, dtype=np.float32)
        averaged = []
        for name, (fold, probs, truth, regions) in cases.items():
            with np.load(args.average_with / "probabilities" / f"{name}.npz", allow_pickle=False) as data:
                other = data["probabilities"].astype(np.float32)
            averaged.append(dice((probs + other) / 2, truth, regions, ones))
        for region in labels.REGIONS:
            alone = [table[n, (1.0, 1.0)][region] for n in cases if region in table[n, (1.0, 1.0)]]
            both = [s[region] for s in averaged if region in s]
            print(f"{region:10s} mean Dice alone {np.mean(alone):.3f} -> averaged with {args.average_with.name} "
                  f"{np.mean(both):.3f} +- {np.std(both, ddof=1):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
