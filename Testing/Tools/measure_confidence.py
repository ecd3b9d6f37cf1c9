"""How well a segmentation's own probabilities tell a good result from a poor one, measured honestly on a
cross-validation run (maintainer tool; about a minute and a half per case on a 2-core CPU).

Each case of the run is segmented by the fold model that never saw it (the run's cached, preprocessed
case; the precision accuracy is scored in; the cleanup rule the run chose), and its probabilities give
the two readings of running/uncertainty.py: the Dice the model expects of its own labels per region, and
the voxel map of normalised entropy.  Printed: Spearman's rank correlation between the expected and the
true Dice over the cases, per region; per case both; and how much of the voxels the labels get wrong
(the complete tumor's false positives and misses) lie where the map exceeds each threshold, beside the
share of the brain it flags there.  Rows go to OUTPUT/confidence.csv as they come (a rerun resumes).

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_confidence.py RUN_DIR --output DIR [--cases NAME...]
        [--default-on CASE...]
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
from scipy.stats import spearmanr

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.learning import crossval
from BrainTumorCNNLib.learning.sampling import load_case
from BrainTumorCNNLib.network import weights
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig
from BrainTumorCNNLib.running import inference, uncertainty
from BrainTumorCNNLib.running.pipeline import SegmentationOptions, segment_preprocessed
from BrainTumorCNNLib.scoring import metrics

THRESHOLDS = (0.2, 0.4, 0.6)
CSV_NAME = "confidence.csv"


def case_sources(run: Path) -> Dict[str, Path]:
    """{case: its source path} of every held-out case of the run (from the folds' configs)."""
    out = {}
    for config_path in sorted(run.glob("fold-*/config.json")):
        config = json.loads(config_path.read_text())
        for path in config["validation_cases"]:
            out[Path(path).name] = Path(path)
    return out


def measure(run: Path, name: str, source: Path, fold: int, cleanup) -> dict:
    """One case by its fold's model: expected and true Dice per region, and the map's cover of the errors."""
    config = json.loads((run / f"fold-{fold}" / "config.json").read_text())
    preprocessing = PreprocessingConfig(**{k: tuple(v) if isinstance(v, list) else v
                                           for k, v in config["preprocessing"].items()})
    case = load_case(source, preprocessing, Path(config["cache_dir"]))
    path = crossval.fold_weights(run, fold)
    model, card = weights.load(json.loads(path.with_suffix(".json").read_text())["model"], path)
    return readings(name, fold, case, model, card, SegmentationOptions(precision=inference.SCORING_PRECISION,
                                                                       cleanup=cleanup))


def measure_default(source: Path, cache: Path) -> dict:
    """One case (no member saw it) by the shipped default model, with the cleanup its card carries."""
    from BrainTumorCNNLib.network import registry
    name = registry.default_model()
    model, card = weights.load(name)
    options = SegmentationOptions(precision=inference.SCORING_PRECISION)
    case = load_case(source, PreprocessingConfig.of_model(card, options.preprocessing), cache)
    return readings(source.name, name, case, model, card, options)


def readings(name: str, fold, case, model, card, options: SegmentationOptions) -> dict:
    result = segment_preprocessed(model, card["model"], card, case.images.astype(np.float32), case.brain,
                                  case.spacing, options)
    near = uncertainty.near_tumor(result.labels, case.brain, case.spacing)
    expected = uncertainty.expected_dice(result.probabilities, result.labels, near, case.regions)
    # secondary readings, reported beside the one the product uses (not chosen on these cases)
    over_brain = uncertainty.expected_dice(result.probabilities, result.labels, case.brain, case.regions)
    true = metrics.evaluate_case(case.uncrop(result.labels), case.uncrop(case.truth), case.spacing, case.regions)
    entropy_volume = uncertainty.entropy_map(result.probabilities)
    entropy = entropy_volume[case.brain]
    wrong = (labels.region_mask(result.labels, "complete") != labels.region_mask(case.truth, "complete"))[case.brain]
    row = {"case": name, "fold": fold, "entropy_near": round(float(entropy_volume[near].mean()), 5)}
    for region in case.regions:
        row[f"expected_{region}"] = round(expected[region], 5)
        row[f"expected_over_brain_{region}"] = round(over_brain[region], 5)
        row[f"dice_{region}"] = round(true[region].dice, 5)
        row[f"sensitivity_{region}"] = round(true[region].sensitivity, 5)
    for t in THRESHOLDS:
        row[f"errors_covered_{t}"] = round(float((entropy[wrong] >= t).mean()) if wrong.any() else 1.0, 5)
        row[f"brain_flagged_{t}"] = round(float((entropy >= t).mean()), 5)
    return row


def report(rows: List[dict]) -> str:
    lines = [f"{len(rows)} cases; Spearman rank correlation with the true Dice of the region:"]
    for reading, key in (("expected Dice within 10 mm of the labels (the product's)", "expected_{}"),
                         ("expected Dice over the whole brain", "expected_over_brain_{}"),
                         ("minus the mean entropy within 10 mm", "entropy_near")):
        for region in labels.REGIONS:
            pairs = [((-1 if key == "entropy_near" else 1) * float(r[key.format(region)]), float(r[f"dice_{region}"]))
                     for r in rows if r.get(key.format(region)) not in (None, "") and r.get(f"dice_{region}")]
            if len(pairs) > 2:
                rho, p = spearmanr(*zip(*pairs))
                lines.append(f"  {reading}, {region}: {rho:+.3f} (p = {p:.3g}, {len(pairs)} cases)")
    for t in THRESHOLDS:
        covered = np.mean([float(r[f"errors_covered_{t}"]) for r in rows])
        flagged = np.mean([float(r[f"brain_flagged_{t}"]) for r in rows])
        lines.append(f"  entropy >= {t}: covers {covered:.1%} of the complete tumor's wrong voxels on average, "
                     f"flags {flagged:.2%} of the brain")
    lines.append("| case | fold | expected Dice (complete / core / enhancing) | true Dice | complete sensitivity |")
    lines.append("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: float(r["expected_complete"])):
        cell = lambda key: " / ".join(f"{float(r[f'{key}_{g}']):.3f}" if r.get(f"{key}_{g}") not in (None, "")
                                      else "-" for g in labels.REGIONS)  # noqa: E731
        lines.append(f"| {r['case']} | {r['fold']} | {cell('expected')} | {cell('dice')} | "
                     f"{float(r['sensitivity_complete']):.3f} |")
    return "\n".join(lines)


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished cross-validation run (braintumorcnn crossval)")
    parser.add_argument("--output", type=Path, required=True, help=f"folder of {CSV_NAME}")
    parser.add_argument("--cases", nargs="*", help="only these of the run's cases")
    parser.add_argument("--default-on", nargs="*", type=Path, default=[], metavar="CASE",
                        help="also these case folders by the shipped default model (cases none of its members saw); "
                             "their rows are listed apart, not in the correlation")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache-paper"), help="preprocessed-case cache")
    args = parser.parse_args(argv)
    fold_of = crossval.held_out_folds(args.run)
    summary = json.loads((args.run / "summary.json").read_text())
    cleanup = crossval.CLEANUP_RULES[crossval.chosen_rule(summary)]
    sources = case_sources(args.run)
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / CSV_NAME
    rows = list(csv.DictReader(path.open())) if path.is_file() else []
    done = {r["case"] for r in rows}
    # a scan the run holds under two names counts once (crossval.in_means)
    kept = {r["case"] for r in crossval.held_out_rows(args.run) if crossval.in_means(r)}
    for name in sorted(args.cases or kept):
        if name in done:
            continue
        rows.append(measure(args.run, name, sources[name], fold_of[name], cleanup))
        names = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=names)
            writer.writeheader()
            writer.writerows(rows)
        print(f"{name}: expected {rows[-1]['expected_complete']} true {rows[-1]['dice_complete']}", flush=True)
    print(report(rows))
    for source in args.default_on:
        row = measure_default(source, args.cache)
        print(f"{row['case']} by {row['fold']}: expected " + " / ".join(
            f"{row.get('expected_' + r, float('nan')):.3f}" for r in labels.REGIONS) + ", true " + " / ".join(
            f"{row.get('dice_' + r, float('nan')):.3f}" for r in labels.REGIONS), flush=True)


if __name__ == "__main__":
    main()
