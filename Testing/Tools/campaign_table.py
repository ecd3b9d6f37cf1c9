"""Where the training campaign stands: one row per fold run of `training/` (docs/training.md).

    python Testing/Tools/campaign_table.py [training/cv4-*/fold-*]

Per run: steps done of planned, training hours, and the validation Dice per region averaged over the
last `WINDOW` rows of log.csv (its rows are 100 steps apart and noisy) next to the mean of the `WINDOW`
rows before them: the change says whether the curve still rises.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from statistics import mean

REGIONS = ("complete", "core", "enhancing")
WINDOW = 5


def row_of(fold_dir: Path) -> str:
    config = json.loads((fold_dir / "config.json").read_text())
    planned = (config["phase1_epochs"] + config["phase2_epochs"]) * config["batches_per_epoch"]
    with (fold_dir / "log.csv").open() as f:
        log = list(csv.DictReader(f))
    last, before = log[-WINDOW:], log[-2 * WINDOW:-WINDOW]

    def dice(rows):
        return [mean(float(r[f"val_dice_{region}"]) for r in rows) for region in REGIONS] if rows else None

    now, then = dice(last), dice(before)
    change = " / ".join(f"{a - b:+.3f}" for a, b in zip(now, then)) if then else "-"
    steps = f"{int(log[-1]['step']):,} of {planned:,}"
    hours = float(log[-1]["wall_s"]) / 3600
    span = f"{int(last[0]['step']):,}–{int(last[-1]['step']):,}"
    return (f"| {fold_dir.parent.name.replace('cv4-TwoPathCNN-', '')} | {fold_dir.name.replace('fold-', '')} | "
            f"{steps} | {hours:.1f} | {span} | {' / '.join(f'{v:.3f}' for v in now)} | {change} |")


def main(argv) -> int:
    folds = [Path(p) for p in argv] or sorted(Path("training").glob("cv4-*/fold-*"))
    print("| recipe | fold | steps | hours | validation rows | validation Dice (mean of the rows) | "
          f"change from the {WINDOW} rows before |")
    print("|---|---|---|---|---|---|---|")
    for fold_dir in folds:
        if (fold_dir / "log.csv").is_file():
            print(row_of(fold_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
