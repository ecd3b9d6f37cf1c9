"""Markdown tables of cross-validation runs (`braintumorcnn crossval`) for docs/accuracy.md and model cards.

    python Testing/Tools/crossval_table.py RUN_DIR [RUN_DIR...] [--per-case] [--folds 0 1]

One row per run: mean +- sd Dice / sensitivity / HD95 over the held-out cases
(with `--folds`, only those folds' cases, so runs are compared on the same
cases); `--per-case` adds each run's per-case table.  Cases whose fold trained
on the same patient, and a patient's second case, are listed there but left out
of the means, as in the run's summary (`crossval.in_means`).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from BrainTumorCNNLib.learning.crossval import in_means, left_out_reason

REGIONS = ("complete", "core", "enhancing")


def rows_of(run: Path, folds=None, scored_only: bool = True) -> list:
    with (run / "per_case.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["case"] != "mean"]
    return [r for r in rows if (folds is None or int(r["fold"]) in folds)
            and not (scored_only and not in_means(r))]


def cell(rows: list, key: str, digits: int = 3) -> str:
    values = [float(r[key]) for r in rows if r.get(key) not in (None, "", "nan")]
    if not values:
        return "–"
    sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):.{digits}f} ± {sd:.{digits}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--folds", type=int, nargs="*")
    parser.add_argument("--per-case", action="store_true")
    args = parser.parse_args(argv)
    print("| run | cases | Dice complete | Dice core | Dice enhancing | sensitivity compl. / core / enh. "
          "| HD95 mm compl. / core / enh. | training s per fold |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        rows = rows_of(run, args.folds)
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
        walls = [w for w in summary.get("train_seconds_per_fold", []) if w]
        print(f"| {run.name} | {len(rows)} | " + " | ".join(cell(rows, f"dice_{r}") for r in REGIONS)
              + " | " + " / ".join(cell(rows, f"sensitivity_{r}", 2) for r in REGIONS)
              + " | " + " / ".join(cell(rows, f"hd95_{r}", 1) for r in REGIONS)
              + (f" | {np.mean(walls):.0f} |" if walls else " | – |"))
    if args.per_case:
        for run in args.runs:
            print(f"\n{run.name}:\n\n| fold | case | release | Dice complete / core / enhancing | HD95 mm |")
            print("|---|---|---|---|---|")
            for r in rows_of(run, args.folds, scored_only=False):
                dice = " / ".join(f"{float(r[f'dice_{g}']):.3f}" if r.get(f"dice_{g}") else "–" for g in REGIONS)
                hd = " / ".join(f"{float(r[f'hd95_{g}']):.1f}" if r.get(f"hd95_{g}") else "–" for g in REGIONS)
                twin = f" (not in the means: {left_out_reason(r)})" if not in_means(r) else ""
                print(f"| {r['fold']} | {r['case']}{twin} | {r['release']} | {dice} | {hd} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
