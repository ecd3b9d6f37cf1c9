"""Ship trained weights: score them on whole validation volumes and write
`<models>/<NAME>.safetensors` + `<NAME>.json` (the model card).

    python Testing/Tools/ship_model.py RUN_DIR NAME --validation CASE... [--weights best|phase1]
        [--extra CASE...] [--models Resources/Models]
    python Testing/Tools/ship_model.py RUN_DIR NAME --crossval CV_DIR [--extra CASE...]

The card gets what a user needs to trust the model: architecture, label
scheme, training cases and settings, epochs and wall time (from the run), and
Dice / sensitivity / specificity / HD95 per region, per validation case and
averaged, measured here by the same pipeline `braintumorcnn segment` runs
(preprocessing, dense inference, cleanup).  `--extra` cases (e.g. a BRATS 2012
case with complete/core truth only) are scored and reported separately.
With `--crossval`, the weights were trained on every labelled case with the
recipe that cross-validation run measured: the card's figures are that run's
held-out per-case scores and mean / sd (`braintumorcnn crossval`), not a
re-scoring of these weights (which saw every case). When the run holds fewer
folds than its split (`--only-folds`), RUN_DIR is one of its fold folders and
the card's figures are that fold model's own held-out cases.  RUN_DIR may be a
fold folder of a complete run too: the card then says the weights are that
fold's model and gives the whole run's figures.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from BrainTumorCNNLib.learning import crossval
from BrainTumorCNNLib.network import registry, weights
from BrainTumorCNNLib.running import inference, pipeline
from BrainTumorCNNLib.running.cases import read_case
from BrainTumorCNNLib.scoring import metrics, tables

REPO = Path(__file__).resolve().parents[2]


def score(name: str, weights_path: Path, cases: list) -> list:
    rows = []
    options = pipeline.SegmentationOptions(model=name, weights_path=str(weights_path), device="cpu",
                                           precision=inference.SCORING_PRECISION)
    for folder in cases:
        case = read_case(folder)
        started = time.time()
        result = pipeline.segment(case.images, case.geometry, options)
        seconds = time.time() - started
        scores = metrics.evaluate_case(result.labels, case.truth, case.geometry.spacing, case.scheme.regions)
        rows.append({"case": case.name, **scores.as_row(), "seconds": round(seconds, 1)})
        print(tables.format_table(rows[-1:]), f"\n({seconds:.0f} s)", flush=True)
    return rows


def run_summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}


def machine(run: Path) -> str:
    """Where the run trained: its summary records the device; this machine's cores for a CPU run."""
    if run_summary(run).get("device") == "cuda":
        return "GPU (CUDA)"
    return f"{os.cpu_count()} CPU cores (no GPU)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name", choices=list(registry.MODELS))
    parser.add_argument("--weights", choices=("best", "phase1"), default="best",
                        help="best: the two-phase result; phase1: the one-phase model")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--validation", nargs="+")
    source.add_argument("--crossval", type=Path, help="cross-validation run of the recipe these weights were "
                        "trained with")
    parser.add_argument("--extra", nargs="*", default=[])
    parser.add_argument("--models", type=Path, default=REPO / "Resources" / "Models")
    args = parser.parse_args(argv)

    source = args.run_dir / f"{args.weights}.safetensors"
    model, run_card = weights.load(args.name, source)
    epochs = []  # the epochs that made these weights (none for AverageCNN, put together from trained parts)
    if (args.run_dir / "log.csv").is_file():
        with open(args.run_dir / "log.csv") as f:
            epochs = [row for row in csv.DictReader(f) if args.weights == "best" or row["phase"] == "1"]
    extra = score(args.name, source, args.extra) if args.extra else []
    left_out = []  # held-out cases whose fold trained on the same patient, or a patient's second case: listed
    if args.crossval:
        validation, left_out = crossval.split_means(crossval.held_out_rows(args.crossval))
        summary = json.loads((args.crossval / "summary.json").read_text())
        folds_run = sorted({int(r["fold"]) for r in validation})
        own_fold = [k for k in folds_run if args.run_dir.resolve() == (args.crossval / f"fold-{k}").resolve()]
        if len(folds_run) == summary["folds"]:
            protocol = (f"{summary['folds']}-fold cross-validation by case (fold seed {summary['seed']}) of the "
                        f"recipe these weights were trained with: each case segmented whole through "
                        "`braintumorcnn segment`'s pipeline by the model of the fold that held it out; "
                        "mean (sd) over the held-out cases"
                        + (f"; these weights are fold {own_fold[0]}'s model, trained on the other folds' cases"
                           if own_fold else ""))
        elif own_fold and len(folds_run) == 1:
            protocol = (f"fold {folds_run[0]} of a {summary['folds']}-fold split by case (fold seed "
                        f"{summary['seed']}), a lighter protocol than full cross-validation: these weights are "
                        "that fold's model, trained on the other folds' cases; its held-out cases segmented whole "
                        "through `braintumorcnn segment`'s pipeline; mean (sd) over them")
        else:
            parser.error(f"{args.crossval} ran folds {folds_run} of {summary['folds']}: ship a fold's own model "
                         f"(RUN_DIR = {args.crossval}/fold-K) or run every fold")
        spread = crossval.by_metric(summary["scores"], "sd")
    else:
        validation = score(args.name, source, args.validation)
        protocol = ("whole volumes through `braintumorcnn segment`'s pipeline (preprocessing, dense inference, "
                    "cleanup) on the validation cases; BraTS regions; mean over cases")
        spread = None
    mean = metrics.summarize(validation)
    card = {
        "description": registry.get(args.name).description,
        "paper": "Havaei et al., Brain Tumor Segmentation with Deep Neural Networks, Medical Image Analysis 35 (2017)",
        "label_scheme": run_card["label_scheme"],
        "classes": run_card["classes"],
        "receptive_field": run_card["receptive_field"],
        "training": {
            "cases": run_card["train_cases"],
            "validation_cases_for_early_stopping": run_card["validation_cases"],
            "phase": ("one phase (phase 1 only)" if args.weights == "phase1" or not run_card["config"]["phase2_epochs"]
                      else "two phases"),
            "epochs_run": len(epochs),
            "best_epoch": run_card["best_epoch"],
            "wall_s": round(sum(float(row["seconds"]) for row in epochs), 1),
            "machine": machine(args.run_dir),
            "learning_rate": run_summary(args.run_dir).get("learning_rate"),  # the range test's, when config says 0
            "config": run_card["config"],
        },
        "validation": {
            "protocol": protocol,
            "cases": [r["case"] for r in validation],
            **{metric: {region: round(mean[f"{metric}_{region}"], 4)
                        for region in ("complete", "core", "enhancing") if f"{metric}_{region}" in mean}
               for metric in metrics.METRICS},
            **({"sd": spread, "folds": summary["folds"], "fold_seed": summary["seed"]} if spread else {}),
            **({"folds_run": folds_run} if spread and len(folds_run) < summary["folds"] else {}),
            "per_case": validation,
            **({"left_out": left_out} if left_out else {}),
        },
        "other_cases": extra,
        "shipped": time.strftime("%Y-%m-%d"),
    }
    args.models.mkdir(parents=True, exist_ok=True)
    weights.save(model, args.name, args.models / f"{args.name}.safetensors", card)
    print(f"shipped {args.name} to {args.models}: validation Dice {card['validation']['dice']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
