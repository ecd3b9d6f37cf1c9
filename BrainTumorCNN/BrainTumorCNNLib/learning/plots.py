"""The figures of a training run: loss and validation Dice per epoch, the learning-rate range test."""
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
    epochs = [int(r["epoch"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [float(r["train_loss"]) for r in rows], "o-")
    a.set(xlabel="epoch", ylabel="training loss (NLL)", title="Training loss")
    for r in labels.REGIONS:
        key = f"val_dice_{r}"
        if rows and key in rows[0] and rows[0][key]:
            b.plot(epochs, [float(x[key]) for x in rows], "o-", label=r)
    b.set(xlabel="epoch", ylabel="Dice", title="Validation Dice (sampled slices)", ylim=(0, 1))
    if b.lines:
        b.legend()
    fig.tight_layout()
    with atomic_path(run_dir / "curves.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
