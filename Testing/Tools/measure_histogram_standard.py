"""Measure Nyúl-style histogram standardisation at test time on a cross-validation run (issue 33 item 3;
maintainer tool; about two thirds of a whole-volume run per case).

Each sequence of a preprocessed (z-scored) case is mapped, piecewise linearly between intensity
landmarks (percentiles inside the brain), onto a standard: the mean landmarks of the fold's own
training cases (z-scoring is affine, so this equals Nyúl's mapping of the raw intensities followed by
the z-score).  Two readings of a case's landmarks are compared with leaving the images as they are:

- ``brain``: over the whole brain, as Nyúl and Udupa do (a large tumor moves them);
- ``healthy``: over the brain outside the tumor the unstandardised pass found (the standard likewise
  over the training cases' brain outside their truth), so the tumor does not move its own mapping.

Every held-out case that counts in the run's means (`crossval.in_means`) is run through its own fold's
network on every k-th brain slice, once per reading (probabilities kept, float16, resumable).  For each
fold the reading (none first on a tie) with the best mean Dice over the *other* folds' cases is applied
to the fold's cases, as `crossval.nested_rule_choice` chooses cleanup rules.  Dice and sensitivity are on
the sampled slices, before cleanup.

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_histogram_standard.py RUN_DIR CACHE_DIR
        [--slice-step 3] [--output DIR]
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.learning.crossval import fold_weights, held_out_folds, in_means
from BrainTumorCNNLib.learning.sampling import case_name, case_sources, load_case
from BrainTumorCNNLib.network import weights
from BrainTumorCNNLib.preparing.preprocessing import BACKGROUND_VALUE, PreprocessingConfig
from BrainTumorCNNLib.running import inference
from BrainTumorCNNLib.scoring import metrics

PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
READINGS = ("none", "brain", "healthy")  # the order of a tie: none first


def landmarks(image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """(4, len(PERCENTILES)) intensity landmarks of each sequence over the voxels `inside`."""
    return np.stack([np.percentile(sequence[inside], PERCENTILES) for sequence in image]).astype(np.float64)


def standardise(image: np.ndarray, brain: np.ndarray, own: np.ndarray, standard: np.ndarray) -> np.ndarray:
    """`image` (4, Z, Y, X) with each sequence's brain voxels mapped piecewise linearly from its landmarks
    `own` onto `standard` (beyond the end landmarks the end segments' slopes carry on); background kept."""
    out = np.full(image.shape, BACKGROUND_VALUE, dtype=np.float32)
    for s in range(image.shape[0]):
        x, y = own[s], standard[s]
        values = image[s][brain].astype(np.float64)
        mapped = np.interp(values, x, y)
        low, high = values < x[0], values > x[-1]
        mapped[low] = y[0] + (values[low] - x[0]) * (y[1] - y[0]) / max(x[1] - x[0], 1e-6)
        mapped[high] = y[-1] + (values[high] - x[-1]) * (y[-1] - y[-2]) / max(x[-1] - x[-2], 1e-6)
        out[s][brain] = mapped
    return out


def training_landmarks(source: Path) -> Dict[str, np.ndarray]:
    """{reading: landmarks} of a training case's cached images, as it was trained on."""
    case = load_case(source, PreprocessingConfig())
    image = case.images.astype(np.float32)
    return {"brain": landmarks(image, case.brain), "healthy": landmarks(image, case.brain & (case.truth == 0))}


def fold_standards(run_dir: Path, fold: int, cases: Dict[str, Path],
                   known: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """{reading: mean landmarks of the fold's training cases}; `known` keeps each case's landmarks for the
    other folds (every case trains three of the four)."""
    config = json.loads((run_dir / f"fold-{fold}" / "config.json").read_text(encoding="utf-8"))
    names = [Path(source).name for source in config["train_cases"]]
    for name in names:
        if name not in known:
            known[name] = training_landmarks(cases[name])
    return {reading: np.mean([known[name][reading] for name in names], axis=0) for reading in ("brain", "healthy")}


def run_reading(model, image: np.ndarray, brain: np.ndarray, slices: np.ndarray) -> np.ndarray:
    result = inference.segment_volume(model, image, brain, device="cpu", only_slices=slices,
                                      precision=inference.SCORING_PRECISION)
    return result.probabilities[:, slices].astype(np.float16)


def scores(probabilities: np.ndarray, truth: np.ndarray, regions) -> Dict[str, float]:
    predicted = labels.class_values(probabilities.shape[0])[inference.argmax_classes(probabilities)]
    out = {}
    for region in regions:
        p, t = labels.region_mask(predicted, region), labels.region_mask(truth, region)
        both, sizes = metrics.overlap(p, t)
        out[f"dice_{region}"] = metrics.dice_of(both, sizes)
        out[f"sensitivity_{region}"] = both / t.sum() if t.any() else float("nan")
    return out


def measure_case(name: str, fold: int, source: Path, model, standards: Dict[str, np.ndarray], step: int,
                 store: Path) -> Dict[str, Dict[str, float]]:
    """{reading: scores} of one held-out case; its probabilities kept in `store` per reading."""
    case = load_case(source, PreprocessingConfig())
    image = case.images.astype(np.float32)
    slices = np.flatnonzero(case.brain.any(axis=(1, 2)))[::step]
    out: Dict[str, Dict[str, float]] = {}
    first: Optional[np.ndarray] = None
    for reading in READINGS:
        kept = store / f"{name}-{reading}.npz"
        if kept.is_file():
            with np.load(kept, allow_pickle=False) as data:
                probabilities = data["probabilities"]
        else:
            if reading == "none":
                source_image = image
            else:
                inside = case.brain.copy()
                if reading == "healthy":
                    tumor = np.zeros_like(case.brain)
                    tumor[slices] = inference.argmax_classes(first.astype(np.float32)) > 0
                    inside &= ~tumor
                sampled = np.zeros_like(case.brain)
                sampled[slices] = True
                own = landmarks(image, inside & sampled)
                source_image = standardise(image, case.brain, own, standards[reading])
            probabilities = run_reading(model, source_image, case.brain, slices)
            np.savez_compressed(kept, probabilities=probabilities)
        if reading == "none":
            first = probabilities
        out[reading] = scores(probabilities.astype(np.float32), case.truth[slices], case.regions)
    return out


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("--slice-step", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("runs/histogram-standard"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    fold_of = held_out_folds(args.run_dir)
    with (args.run_dir / "per_case.csv").open(encoding="utf-8") as f:
        counted = {row["case"] for row in csv.DictReader(f) if in_means(row)}
    sources = {case_name(p): p for p in case_sources(str(args.cache))}
    args.output.mkdir(parents=True, exist_ok=True)
    table: Dict[str, Dict[str, Dict[str, float]]] = {}
    known: Dict[str, Dict[str, np.ndarray]] = {}
    for fold in sorted(set(fold_of.values())):
        model_path = fold_weights(args.run_dir, fold)
        card = json.loads(model_path.with_suffix(".json").read_text(encoding="utf-8"))
        model = weights.load(card["model"], model_path, device="cpu")[0]
        standards = fold_standards(args.run_dir, fold, sources, known)
        for name in sorted(n for n, f in fold_of.items() if f == fold and n in counted):
            table[name] = measure_case(name, fold, sources[name], model, standards, args.slice_step, args.output)
            print(f"{name} (fold {fold}): Dice complete " + ", ".join(
                f"{r} {table[name][r]['dice_complete']:.3f}" for r in READINGS), flush=True)

    def merit(names, reading):
        return float(np.mean([np.mean([v for k, v in table[n][reading].items() if k.startswith("dice_")])
                              for n in names]))

    rows = []
    for fold in sorted({fold_of[n] for n in table}):
        others = [n for n in table if fold_of[n] != fold]
        chosen = max(READINGS, key=lambda r: merit(others, r))
        print(f"fold {fold}: chosen on the other folds' cases: {chosen}")
        rows += [dict(case=n, fold=fold, chosen=chosen, **{f"{r}:{k}": v for r in READINGS
                                                           for k, v in table[n][r].items()})
                 for n in sorted(table) if fold_of[n] == fold]
    with (args.output / "histogram_standard.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} patients, every {args.slice_step}rd brain slice, before cleanup (mean +- sd):")
    for metric in ("dice", "sensitivity"):
        for region in labels.REGIONS:
            key = f"{metric}_{region}"
            line = []
            for reading in READINGS + ("nested",):
                values = [r[f"{r['chosen'] if reading == 'nested' else reading}:{key}"] for r in rows
                          if f"none:{key}" in r and not np.isnan(r[f"none:{key}"])]
                line.append(f"{reading} {np.mean(values):.3f} +- {np.std(values, ddof=1):.3f}")
            print(f"  {key:22s} " + "; ".join(line))
    print("per case, Dice complete / core / enhancing:")
    for r in rows:
        cells = [" / ".join(f"{r[f'{reading}:dice_{g}']:.3f}" if f"{reading}:dice_{g}" in r else "-"
                            for g in labels.REGIONS) for reading in READINGS]
        print(f"  {r['case']:24s} fold {r['fold']}  " + "  |  ".join(f"{n} {c}" for n, c in zip(READINGS, cells)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
