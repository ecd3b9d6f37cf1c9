"""Draw the plots of the measurement pages in docs/ (docs/plots/*.png).

    python Testing/Tools/plot_docs.py

Accuracy from the shipped model cards (Resources/Models/*.json: each recipe's cross-validation per
case); robustness, speed and training from the tables of docs/robustness.md, docs/speed.md and
docs/training.md, so each figure is drawn from the numbers its page prints.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from BrainTumorCNNLib.learning.crossval import in_means  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PLOTS = DOCS / "plots"
REGIONS = ("complete", "core", "enhancing")
REGION_COLOURS = {"complete": "#4c72b0", "core": "#dd8452", "enhancing": "#c44e52"}


def markdown_tables(text: str) -> list:
    """Every pipe table of `text` as (title, header cells, rows of cells); the title is the last
    bold line (`**...**`) or heading before it."""
    tables, title, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        bold = re.match(r"\*\*(.+?)\*\*", line)
        if bold or line.startswith("#"):
            title = bold.group(1) if bold else line.lstrip("# ")
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            tables.append((title, header, rows))
            continue
        i += 1
    return tables


def first_number(cell: str) -> float:
    return float(re.search(r"[-+−]?\d+(?:\.\d+)?", cell.replace("**", "")).group(0).replace("−", "-"))


def plot_accuracy() -> Path:
    cards = [json.loads(p.read_text()) for p in sorted((REPO / "Resources" / "Models").glob("*.json"))]
    cards.sort(key=lambda c: -c["validation"]["dice"]["complete"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), sharey=True)
    rng = np.random.default_rng(0)
    for ax, region in zip(axes, REGIONS):
        for k, card in enumerate(cards):
            dice = [row[f"dice_{region}"] for row in card["validation"]["per_case"]
                    if row[f"dice_{region}"] is not None and in_means(row)]
            ax.bar(k, np.mean(dice), color=REGION_COLOURS[region], alpha=0.35, width=0.7)
            ax.scatter(k + rng.uniform(-0.22, 0.22, len(dice)), dice, s=10, color=REGION_COLOURS[region])
        ax.set_xticks(range(len(cards)), [c["model"] for c in cards], rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{region} tumor: Dice per held-out case")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Dice (bar: mean over 16 patients)")
    fig.suptitle("Each shipped recipe, 3-fold cross-validation over the 18 labelled cases (the twin pair left out)")
    fig.tight_layout()
    return save(fig, "accuracy_per_case.png")


def plot_robustness() -> Path:
    tables = [t for t in markdown_tables((DOCS / "robustness.md").read_text()) if t[1][0] == "shift"
              and "change from clean (complete / core / enhancing)" in t[1]]
    shifts = [row[0] for row in tables[0][2] if row[0] not in ("clean",)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8), sharey=True)
    width = 0.8 / len(tables)
    for ax, (r, region) in zip(axes, enumerate(REGIONS)):
        for m, (title, header, rows) in enumerate(tables):
            change = {row[0]: row[header.index("change from clean (complete / core / enhancing)")] for row in rows}
            values = [float(change[s].split("/")[r].strip().replace("−", "-")) for s in shifts]
            label = re.sub(r"\s*\(3 cases\):?$", "", title).replace("\\*", "*")
            ax.bar(np.arange(len(shifts)) + (m - (len(tables) - 1) / 2) * width, values, width,
                   label=label if r == 0 else None)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(shifts)), shifts, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{region}: Dice change from clean")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("mean change over the 3 unseen cases")
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return save(fig, "robustness_shifts.png")


def plot_speed() -> Path:
    tables = markdown_tables((DOCS / "speed.md").read_text())
    _, header, rows = next(t for t in tables if t[1][:3] == ["model", "dense-direct s", "dense-fast s"]
                           and len(t[2]) == 8)
    models = [row[0] for row in rows]
    columns = ("dense-direct s", "dense-fast s", "patch-by-patch s")
    fig, ax = plt.subplots(figsize=(10, 4.6))
    width = 0.26
    for c, column in enumerate(columns):
        values = [first_number(row[header.index(column)]) for row in rows]
        ax.bar(np.arange(len(models)) + (c - 1) * width, values, width, label=column.replace(" s", ""))
    ax.set_yscale("log")
    ax.set_ylabel("seconds per brain (2-core CPU, log scale)")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("The eight models on BraTS2021_00002 (`bench`, every slice, no screening)")
    fig.tight_layout()
    return save(fig, "speed_per_brain.png")


def plot_training() -> Path:
    tables = markdown_tables((DOCS / "training.md").read_text())
    _, header, ablation = next(t for t in tables if t[1][0] == "recipe")
    _, curve_header, curve = next(t for t in tables if t[1][0] == "schedule")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.26
    names = [re.search(r"`([^`]+)`", row[0]).group(1) for row in ablation]
    for r, region in enumerate(REGIONS):
        values = [first_number(row[header.index(f"Dice {region}")]) for row in ablation]
        ax1.bar(np.arange(len(ablation)) + (r - 1) * width, values, width, label=region,
                color=REGION_COLOURS[region])
    ax1.set_xticks(range(len(ablation)), names, rotation=20, ha="right", fontsize=8)
    ax1.set_ylabel("mean Dice, fold 0's six held-out cases")
    ax1.set_title("Ablation on fold 0")
    ax1.set_ylim(0, 1)
    ax1.grid(axis="y", alpha=0.3)
    ax1.legend(fontsize=8)
    batches = [sum(first_number(x) for x in row[1].split("+")) for row in curve]
    dice = [[float(v) for v in row[2].split("/")] for row in curve]
    order = np.argsort(batches, kind="stable")
    for r, region in enumerate(REGIONS):
        ax2.plot([batches[i] for i in order], [dice[i][r] for i in order], "o", color=REGION_COLOURS[region],
                 label=region)
    for i, row in enumerate(curve):
        ax2.annotate(re.search(r"`([^`]+)`", row[0]).group(1), (batches[i], dice[i][0]), fontsize=7,
                     xytext=(4, 4), textcoords="offset points")
    ax2.set_xlabel("training batches of 32 (phase 1 + phase 2)")
    ax2.set_ylim(0, 1)
    ax2.set_title("Learning curve (TwoPathCNN)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, "training_fold0.png")


def save(fig, name: str) -> Path:
    PLOTS.mkdir(exist_ok=True)
    path = PLOTS / name
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> None:
    for plot in (plot_accuracy, plot_robustness, plot_speed, plot_training):
        print(plot().relative_to(REPO))


if __name__ == "__main__":
    main()
