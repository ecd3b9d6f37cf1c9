"""Where the training campaign stands: one row per fold run of `training/` (docs/training.md).

    python Testing/Tools/campaign_table.py [training/cv4-*/fold-*]
    python Testing/Tools/campaign_table.py --by 1000 RUN_DIR RUN_DIR ...

Per run: steps done of planned, training hours, and the validation Dice per region averaged over the
last `WINDOW` rows of log.csv (its rows are 100 steps apart and noisy) next to the mean of the `WINDOW`
rows before them: the change says whether the curve still rises.  With `--by STEPS`, runs side by side
instead (e.g. a fold trained on half its patients beside the full fold): their validation Dice averaged
over each window of STEPS steps of phase 1, then over phase 2.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from statistics import mean
from typing import List, Optional

REGIONS = ("complete", "core", "enhancing")
WINDOW = 5


def read_log(fold_dir: Path) -> List[dict]:
    with (fold_dir / "log.csv").open() as f:
        return list(csv.DictReader(f))


def dice(rows: List[dict]) -> Optional[List[float]]:
    """Mean validation Dice per region over log rows (None for no rows)."""
    return [mean(float(r[f"val_dice_{region}"]) for r in rows) for region in REGIONS] if rows else None


def row_of(fold_dir: Path) -> str:
    config = json.loads((fold_dir / "config.json").read_text())
    planned = (config["phase1_epochs"] + config["phase2_epochs"]) * config["batches_per_epoch"]
    log = read_log(fold_dir)
    last, before = log[-WINDOW:], log[-2 * WINDOW:-WINDOW]
    now, then = dice(last), dice(before)
    change = " / ".join(f"{a - b:+.3f}" for a, b in zip(now, then)) if then else "-"
    steps = f"{int(log[-1]['step']):,} of {planned:,}"
    hours = float(log[-1]["wall_s"]) / 3600
    span = f"{int(last[0]['step']):,}–{int(last[-1]['step']):,}"
    return (f"| {fold_dir.parent.name.replace('cv4-TwoPathCNN-', '')} | {fold_dir.name.replace('fold-', '')} | "
            f"{steps} | {hours:.1f} | {span} | {' / '.join(f'{v:.3f}' for v in now)} | {change} |")


def windows(logs: List[List[dict]], by: int) -> List[tuple]:
    """(label, [Dice per region or None, one per log]) for each window of `by` phase-1 steps, then phase 2."""
    phase1 = [[r for r in log if r["phase"] == "1"] for log in logs]
    last = max((int(r["step"]) for rows in phase1 for r in rows), default=0)
    out = []
    for start in range(0, last, by):
        label = f"{start + 1:,}–{min(start + by, last):,}"
        out.append((label, [dice([r for r in rows if start < int(r["step"]) <= start + by]) for rows in phase1]))
    out.append(("phase 2", [dice([r for r in log if r["phase"] == "2"]) for log in logs]))
    return out


def side_by_side(fold_dirs: List[Path], by: int) -> None:
    logs = [read_log(d) for d in fold_dirs]
    print("| steps | " + " | ".join(str(d) for d in fold_dirs) + " |")
    print("|---|" + "---|" * len(fold_dirs))
    for label, values in windows(logs, by):
        print(f"| {label} | " + " | ".join(" / ".join(f"{v:.3f}" for v in value) if value else "–"
                                          for value in values) + " |")
    print("| hours of training | " + " | ".join(f"{float(log[-1]['wall_s']) / 3600:.2f} ({int(log[-1]['step']):,} "
                                              "steps)" for log in logs) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="fold run folders (default: training/cv4-*/fold-*)")
    parser.add_argument("--by", type=int, help="the runs side by side, validation Dice per window of this "
                        "many phase-1 steps")
    args = parser.parse_args(argv)
    if args.by:
        if not args.runs:
            parser.error("--by compares the runs named")
        side_by_side(args.runs, args.by)
        return 0
    folds = args.runs or sorted(Path("training").glob("cv4-*/fold-*"))
    print("| recipe | fold | steps | hours | validation rows | validation Dice (mean of the rows) | "
          f"change from the {WINDOW} rows before |")
    print("|---|---|---|---|---|---|---|")
    for fold_dir in folds:
        if (fold_dir / "log.csv").is_file():
            print(row_of(fold_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
