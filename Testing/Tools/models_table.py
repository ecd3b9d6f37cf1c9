"""Print the README's models table from the shipped model cards (Resources/Models/*.json).

    python Testing/Tools/models_table.py
"""
from __future__ import annotations

from BrainTumorCNNLib.network import registry

REGIONS = ("complete", "core", "enhancing")
#: Havaei et al. (2017), BRATS 2013 test set (Dice) -- for comparison only, other data.
PAPER_DICE = {"TwoPathCNN": (0.85, 0.78, 0.73), "InputCascadeCNN": (0.88, 0.79, 0.73),
              "TwoPathCNN-1phase": (0.78, 0.63, 0.68), "LocalPathCNN": (0.85, 0.74, 0.71),
              "GlobalPathCNN": (0.82, 0.73, 0.68)}


def main() -> None:
    print("| model | Dice compl. / core / enh. | sensitivity | specificity | HD95 mm | paper Dice (BRATS 2013) "
          "| BRATS_HG0015 Dice compl. / core | epochs | training wall time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, spec in registry.shipped().items():
        card = spec.card()
        validation, training = card["validation"], card["training"]

        def cells(metric: str, digits: int = 3) -> str:
            return " / ".join(f"{validation[metric][r]:.{digits}f}" for r in REGIONS)

        other = {row["case"]: row for row in card.get("other_cases", [])}.get("BRATS_HG0015")
        hg = f"{other['dice_complete']:.3f} / {other['dice_core']:.3f}" if other else "-"
        paper = " / ".join(f"{d:.2f}" for d in PAPER_DICE[name]) if name in PAPER_DICE else "-"
        print(f"| {name} | {cells('dice')} | {cells('sensitivity')} | {cells('specificity')} | "
              f"{cells('hd95', 1)} | {paper} | {hg} | {training['epochs_run']} | "
              f"{training['wall_s'] / 60:.0f} min |")


if __name__ == "__main__":
    main()
