"""Measure the edema growth of the cleanup (postprocessing.grow_edema) on a finished cross-validation run
(issue 33 item 3; maintainer tool; no network runs: the run's kept held-out predictions are re-cleaned).

Every held-out case that counts in the run's means is cleaned with the component rule its fold chose on the
other folds' cases (per_case_chosen_rule.csv; any growth that choice carries left out) and then grown by each
(share of the way from the brain's median FLAIR to the edema's, reach in mm) of a grid, or not at all.  For each fold the setting (no growth first on a tie) with the best
mean Dice over the *other* folds' cases is applied to the fold's cases, as `crossval.nested_rule_choice`
chooses cleanup rules.  Whole volumes, BraTS scores as the run's tables; one table row per setting and the
nested figure; per case in OUTPUT/per_case.csv.

`--fainter-lesion F` reads the growth's FLAIR with the tumor's contrast to the brain times F (inside the
expert's tumor, its edge blurred by 1 voxel, pulled toward the healthy brain's median), the predictions
held: how much of the growth a site with fainter lesions keeps (the `robustness` benchmark's lesion contrast
shift also changes what the networks call; this isolates the growth).

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_edema_growth.py RUN_DIR CACHE_DIR [--output DIR]
        [--fainter-lesion 0.6]
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.learning import crossval
from BrainTumorCNNLib.learning.sampling import CachedCase, case_name, case_sources, load_case
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig
from BrainTumorCNNLib.scoring import site_shifts, tables
from BrainTumorCNNLib.scoring.site_shifts import FLAIR

SHARES = (0.3, 0.4, 0.5, 0.6, 0.7)
REACH_MM = (1.0, 2.0, 3.0)
Setting = Optional[Tuple[float, float]]


def setting_name(setting: Setting) -> str:
    return "none" if setting is None else crossval.growth_name(*setting)


def fainter_lesion(case: CachedCase, factor: float) -> CachedCase:
    """The case with its FLAIR's tumor-to-brain contrast times `factor` inside the (blurred) expert tumor,
    as the benchmark's shift changes it (site_shifts), on the preprocessed FLAIR; the background stays."""
    flair = case.images[FLAIR].astype(np.float32)
    tumor = case.truth > 0
    weight = site_shifts.lesion_weight(tumor) * case.brain
    images = case.images.copy()
    images[FLAIR] = site_shifts.fainter_lesion(flair, weight, float(np.median(flair[case.brain & ~tumor])), factor)
    return replace(case, images=images)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("--output", type=Path, default=Path("runs/edema-growth"))
    parser.add_argument("--fainter-lesion", type=float, default=None, metavar="F",
                        help="the growth reads a FLAIR whose tumor-to-brain contrast is times F (see above)")
    args = parser.parse_args(argv)
    settings: List[Setting] = [None] + [(share, mm) for share in SHARES for mm in REACH_MM]
    sources = {case_name(p): p for p in case_sources(str(args.cache))}
    rows = [r for r in crossval.held_out_rows(args.run_dir, chosen_rule=True) if crossval.in_means(r)]
    scored: Dict[str, List[dict]] = {setting_name(s): [] for s in settings}
    for row in rows:
        case = load_case(sources[row["case"]], PreprocessingConfig())
        if args.fainter_lesion is not None:
            case = fainter_lesion(case, args.fainter_lesion)
        with np.load(args.run_dir / f"fold-{int(row['fold'])}" / "predictions" / f"{row['case']}.npz",
                     allow_pickle=False) as data:
            predicted = data["labels"]
        # the component rule of the fold's choice, without any growth it may carry
        rule = replace(crossval.CLEANUP_RULES[row["cleanup"]], edema_flair_share=None)
        for setting in settings:
            grown = rule if setting is None else replace(rule, edema_flair_share=setting[0], edema_growth_mm=setting[1])
            scored[setting_name(setting)].append(dict(crossval.score(case, predicted, grown), case=row["case"],
                                                      fold=int(row["fold"])))
        print(f"{row['case']}: complete Dice " + ", ".join(
            f"{name} {scored[name][-1]['dice_complete']:.3f}" for name in list(scored)[:4]), flush=True)
    folds = [int(r["fold"]) for r in rows]
    chosen = crossval.nested_rule_choice(folds, scored)
    nested = [dict(scored[chosen[f]][i], growth=chosen[f]) for i, f in enumerate(folds)]
    table = [("setting", "Dice complete / core / enhancing", "sensitivity complete / core / enhancing")]
    for name, of_cases in list(scored.items()) + [("chosen per fold on the other folds' cases", nested)]:
        means = crossval.mean_sd(of_cases)
        table.append((name, " / ".join(f"{means[f'dice_{r}']['mean']:.3f}" for r in labels.REGIONS),
                      " / ".join(f"{means[f'sensitivity_{r}']['mean']:.3f}" for r in labels.REGIONS)))
    print("\n".join(f"| {a} | {b} | {c} |" for a, b, c in table))
    print("chosen: " + "; ".join(f"fold {f}: {name}" for f, name in chosen.items()))
    args.output.mkdir(parents=True, exist_ok=True)
    tables.write_csv(args.output / "per_case.csv", [dict(r, setting=name) for name, of_cases in
                                                    list(scored.items()) + [("nested", nested)] for r in of_cases],
                     mean=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
