"""Measure a cascade ensemble whose tumor extent is its first networks' (issue 33 item 2, "any mix the
measures favour"; maintainer tool; no network runs: two finished cross-validation runs' kept held-out
predictions are re-cleaned).

A cascade run (InputCascadeCNN) was trained on the folds of its first run (TwoPathCNN): each held-out case
has a prediction of the first network and one of the cascade by models of the same fold, which never saw
it.  Each is cleaned with the rule its own run chose for the fold on the other folds' cases
(per_case_chosen_rule.csv, growth included), then joined three ways: the cascade alone (the default's
labels), the first network alone (EnsembleCNN's), and the first network's tumor with the cascade's tissue
inside it (`first_extent`: where the cascade calls no tumor, the first network's label; the cascade's tumor
outside the first's dropped).  For each fold the way with the best mean Dice over the *other* folds' cases
is applied to the fold's cases (crossval.nested_rule_choice).  The cascade's first stage is the first run's
fold network, so in `segment` the first networks' labels would cost no network time.

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_first_extent.py CASCADE_RUN FIRST_RUN CACHE_DIR \
        [--output DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List

import numpy as np

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.learning import crossval
from BrainTumorCNNLib.learning.sampling import CachedCase, case_name, case_sources, load_case
from BrainTumorCNNLib.modalities import MODALITIES
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig
from BrainTumorCNNLib.running.postprocessing import postprocess
from BrainTumorCNNLib.scoring import metrics, tables

WAYS = ("cascade", "first network", "first network's extent, cascade's tissue")


def first_extent(first: np.ndarray, cascade: np.ndarray) -> np.ndarray:
    """Labels (uint8) on the first network's tumor: the cascade's label where it calls tumor, else the first
    network's; nothing outside the first network's tumor."""
    return np.where(first > 0, np.where(cascade > 0, cascade, first), 0).astype(np.uint8)


def cleaned(run: Path, row: dict, case: CachedCase) -> np.ndarray:
    """The run's held-out prediction of the case cleaned with the rule its fold chose on the other folds."""
    with np.load(run / f"fold-{int(row['fold'])}" / "predictions" / f"{row['case']}.npz", allow_pickle=False) as data:
        predicted = data["labels"]
    return postprocess(predicted, case.spacing, crossval.CLEANUP_RULES[row["cleanup"]],
                       case.images[MODALITIES.index("FLAIR")], case.brain)[0]


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cascade_run", type=Path)
    parser.add_argument("first_run", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("--output", type=Path, default=Path("runs/first-extent"))
    args = parser.parse_args(argv)
    sources = {case_name(p): p for p in case_sources(str(args.cache))}
    first_rows = {r["case"]: r for r in crossval.held_out_rows(args.first_run, chosen_rule=True)}
    rows = [r for r in crossval.held_out_rows(args.cascade_run, chosen_rule=True) if crossval.in_means(r)]
    scored: Dict[str, List[dict]] = {way: [] for way in WAYS}
    for row in rows:
        if int(first_rows[row["case"]]["fold"]) != int(row["fold"]):
            raise ValueError(f"{row['case']}: held out by fold {row['fold']} of {args.cascade_run} but fold "
                             f"{first_rows[row['case']]['fold']} of {args.first_run}: not the same folds")
        case = load_case(sources[row["case"]], PreprocessingConfig())
        cascade = cleaned(args.cascade_run, row, case)
        first = cleaned(args.first_run, first_rows[row["case"]], case)
        for way, joined in zip(WAYS, (cascade, first, first_extent(first, cascade))):
            scores = metrics.evaluate_case(case.uncrop(joined), case.uncrop(case.truth), case.spacing, case.regions)
            scored[way].append(dict(scores.as_row(), case=row["case"], fold=int(row["fold"])))
        print(f"{row['case']}: Dice complete / core " + ", ".join(
            f"{way} {scored[way][-1]['dice_complete']:.3f} / {scored[way][-1]['dice_core'] or 0:.3f}" for way in WAYS),
            flush=True)
    folds = [int(r["fold"]) for r in rows]
    chosen = crossval.nested_rule_choice(folds, scored)
    nested = [dict(scored[chosen[f]][i], way=chosen[f]) for i, f in enumerate(folds)]
    table = [("labels", "Dice complete / core / enhancing", "sensitivity complete / core / enhancing")]
    for name, of_cases in list(scored.items()) + [("chosen per fold on the other folds' cases", nested)]:
        means = crossval.mean_sd(of_cases)
        table.append((name, " / ".join(f"{means[f'dice_{r}']['mean']:.3f} ± {means[f'dice_{r}']['sd']:.3f}"
                                       for r in labels.REGIONS),
                      " / ".join(f"{means[f'sensitivity_{r}']['mean']:.3f}" for r in labels.REGIONS)))
    print("\n".join(f"| {a} | {b} | {c} |" for a, b, c in table))
    print("chosen: " + "; ".join(f"fold {f}: {name}" for f, name in chosen.items()))
    args.output.mkdir(parents=True, exist_ok=True)
    tables.write_csv(args.output / "per_case.csv", [dict(r, labels=name) for name, of_cases in
                                                    list(scored.items()) + [("nested", nested)] for r in of_cases],
                     mean=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
