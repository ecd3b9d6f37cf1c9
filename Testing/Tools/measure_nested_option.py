"""The honest figure of a test-time option measured on a cross-validation run (maintainer tool; seconds).

Two `braintumorcnn robustness --run RUN` tables of the same cases, one without the option and one with
it (e.g. `--through-plane`), each case segmented by the fold model that never saw it.  For each fold the
option is chosen on the other folds' cases as `crossval.nested_rule_choice` chooses cleanup rules (best
mean of the regions' mean Dice; a tie keeps it off), and the fold's own cases are scored with that
choice: no case scores with a choice made on itself.  Prints each fold's choice and the mean ± sd of
the three regions without the option, with it everywhere, and chosen so.

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_nested_option.py RUN_DIR OFF.csv ON.csv
        [--shift clean]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Dict, List

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.learning import crossval

CHOICES = ("off", "on")  # the order of a tie: off first


def read_rows(path: Path, shift: str) -> Dict[str, dict]:
    """{case: its Dice scores (None where a region has no truth)} of one shift of a robustness table."""
    with Path(path).open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["shift"] == shift]
    if not rows:
        raise SystemExit(f"{path} has no rows of the shift {shift!r}")
    return {r["case"]: {f"dice_{region}": float(r[f"dice_{region}"]) if r[f"dice_{region}"] else None
                        for region in labels.REGIONS} for r in rows}


def nested_option(fold_of: Dict[str, int], off: Dict[str, dict], on: Dict[str, dict]) -> dict:
    """Each fold's choice, chosen on the other folds' cases, and the Dice of off, on and chosen."""
    if set(off) != set(on):
        raise SystemExit("the tables hold different cases: " + ", ".join(sorted(set(off) ^ set(on))))
    unknown = sorted(set(off) - set(fold_of))
    if unknown:
        raise SystemExit("cases the run holds out in no fold: " + ", ".join(unknown))
    cases = sorted(off)
    folds = [fold_of[c] for c in cases]
    tables = {"off": off, "on": on}
    choice = crossval.nested_rule_choice(folds, {name: [tables[name][c] for c in cases] for name in CHOICES})
    chosen = [tables[choice[fold_of[c]]][c] for c in cases]
    return {"choice": choice, "cases": cases,
            "dice": {"off": crossval.mean_sd([off[c] for c in cases]),
                     "on": crossval.mean_sd([on[c] for c in cases]),
                     "chosen on the other folds": crossval.mean_sd(chosen)}}


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the cross-validation run both tables were made with (--run)")
    parser.add_argument("off", type=Path, help="robustness.csv without the option")
    parser.add_argument("on", type=Path, help="robustness.csv with it")
    parser.add_argument("--shift", default="clean", help="the shift whose rows are compared (default clean)")
    args = parser.parse_args(argv)
    result = nested_option(crossval.held_out_folds(args.run), read_rows(args.off, args.shift),
                           read_rows(args.on, args.shift))
    print(f"{len(result['cases'])} cases; the option chosen on the other folds' cases: "
          + "; ".join(f"fold {f}: {c}" for f, c in result["choice"].items()))
    for name, scores in result["dice"].items():
        print(f"  {name:26s} Dice " + " / ".join(
            f"{scores[k]['mean']:.3f} ± {scores[k]['sd']:.3f}" for r in labels.REGIONS
            if (k := f"dice_{r}") in scores) + "   (complete / core / enhancing)")


if __name__ == "__main__":
    main()
