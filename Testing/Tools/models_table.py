"""Print the shipped models' table (docs/accuracy.md) from their model cards (Resources/Models/*.json).

    python Testing/Tools/models_table.py
"""
from __future__ import annotations

from BrainTumorCNNLib.network import registry

REGIONS = ("complete", "core", "enhancing")
#: Havaei et al. (2017), BRATS 2013 test set (Dice) -- for comparison only, other data.
PAPER_DICE = {"TwoPathCNN": (0.85, 0.78, 0.73), "InputCascadeCNN": (0.88, 0.79, 0.73),
              "TwoPathCNN-1phase": (0.78, 0.63, 0.68), "LocalPathCNN": (0.85, 0.74, 0.71),
              "GlobalPathCNN": (0.82, 0.73, 0.68), "AverageCNN": (0.84, 0.75, 0.70),
              "LocalCascadeCNN": (0.88, 0.76, 0.72), "MFCascadeCNN": (0.86, 0.77, 0.73)}


def main() -> None:
    print("| model | scored on | Dice compl. / core / enh. (mean ± sd) | sensitivity | specificity | HD95 mm "
          "| paper Dice (BRATS 2013) | epochs | training wall time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, spec in registry.shipped().items():
        card = spec.card()
        validation, training = card["validation"], card["training"]

        def cells(metric: str, digits: int = 3) -> str:
            return " / ".join(f"{validation[metric][r]:.{digits}f}" for r in REGIONS)

        sd = validation.get("sd", {}).get("dice", {})
        dice = " / ".join(f"{validation['dice'][r]:.3f}" + (f" ± {sd[r]:.3f}" if r in sd else "") for r in REGIONS)
        folds = validation.get("folds_run")
        scored = (f"fold {', '.join(map(str, folds))} of {validation['folds']}" if folds
                  else f"{validation['folds']}-fold CV" if "folds" in validation else "validation")
        scored += f", {len(validation['cases'])} cases"

        paper = " / ".join(f"{d:.2f}" for d in PAPER_DICE[name])
        print(f"| {name} | {scored} | {dice} | {cells('sensitivity')} | {cells('specificity')} | "
              f"{cells('hd95', 1)} | {paper} | {training['epochs_run']} | "
              f"{training['wall_s'] / 60:.0f} min |")


if __name__ == "__main__":
    main()
