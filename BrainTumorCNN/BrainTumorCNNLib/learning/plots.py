"""The figures of a training run: loss, training-window and validation Dice against steps, the learning-rate
range test."""
from __future__ import annotations

import csv
from pathlib import Path

from .. import labels
from ..atomic import atomic_path


def plot_run(run_dir: Path) -> None:
    """curves.png from log.csv and lr_range.png from lr_range.csv, where the run has them; skipped where
    matplotlib is absent (a bare GPU machine training from the cache)."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if (run_dir / "lr_range.csv").is_file():
        rows = list(csv.DictReader((run_dir / "lr_range.csv").open()))
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.semilogx([float(r["learning_rate"]) for r in rows], [float(r["smoothed_loss"]) for r in rows], "o-")
        ax.set(xlabel="learning rate", ylabel="smoothed training loss", title="Learning-rate range test")
        fig.tight_layout()
        with atomic_path(run_dir / "lr_range.png") as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
    if not (run_dir / "log.csv").is_file():
        return
    rows = list(csv.DictReader((run_dir / "log.csv").open()))
    # steps (batches) on the x axis; logs written before steps were counted have epochs only
    key = "step" if rows and rows[0].get("step") else "epoch"
    x = [int(r[key]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(x, [float(r["train_loss"]) for r in rows], "o-", markersize=3)
    a.set(xlabel=key, ylabel="training loss (NLL)", title="Training loss")
    for region, colour in zip(labels.REGIONS, ("tab:green", "tab:orange", "tab:red")):
        for prefix, style, what in (("val_dice_", "o-", "validation"), ("train_dice_", "--", "training windows")):
            column = prefix + region
            points = [(xi, float(r[column])) for xi, r in zip(x, rows) if r.get(column)]
            if points:
                b.plot(*zip(*points), style, color=colour, markersize=3, label=f"{region}, {what}")
    b.set(xlabel=key, ylabel="Dice", title="Dice per region", ylim=(0, 1))
    if b.lines:
        b.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(run_dir / "curves.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
