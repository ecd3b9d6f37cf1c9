"""`braintumorcnn evaluate`: score a folder of predicted label maps against the cases' ground truth."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List

import numpy as np

from .. import labels as label_table
from ..reading import io
from ..running.cases import read_case
from ..scoring.metrics import evaluate_case
from ..scoring.tables import PREDICTION_SCHEMES, find_prediction, format_table, read_prediction, write_csv


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Score predicted label maps against ground truth: Dice, sensitivity, specificity and HD95 (mm) "
        "of the complete, core and enhancing regions, per case and averaged (BraTS conventions).")
    parser.add_argument("predictions", metavar="PRED_DIR",
                        help="folder of predicted label maps: <case>_labels.nii.gz (from `segment`) or <case>.nii.gz")
    parser.add_argument("truth", metavar="TRUTH_DIR",
                        help="folder of cases with ground truth, in any layout `segment` reads")
    parser.add_argument("--output", "-o", metavar="CSV", help="CSV to write (default: PRED_DIR/metrics.csv)")
    parser.add_argument("--prediction-scheme", choices=PREDICTION_SCHEMES, default="internal",
                        help="label values of the predictions: internal = 0/1/2/4 or 0-4 as written by "
                             "`segment` (default); or a file scheme to convert from")
    parser.add_argument("--truth-scheme", choices=tuple(label_table.SCHEMES),
                        help="label scheme of the truth files (default: guessed from the layout)")
    parser.add_argument("--missing", choices=("skip", "penalize"), default="skip",
                        help="a case without a prediction: leave it out (exit status 1), or score it as an "
                             "empty prediction (Dice 0, HD95 373 mm where the truth has the region)")


def main(args: argparse.Namespace) -> int:
    pred_dir, truth_dir = Path(args.predictions), Path(args.truth)
    if not pred_dir.is_dir():
        print(f"error: {pred_dir}: no such folder of predictions", file=sys.stderr)
        return 2
    try:
        cases = io.find_cases(truth_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not cases:
        print(f"error: {truth_dir}: no cases found (a case is a folder with T1, T1c, T2, FLAIR and a "
              "ground-truth file, or an MSD 4-D image)", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else pred_dir / "metrics.csv"

    rows: List[dict] = []
    missing: List[str] = []
    failed: List[str] = []
    matched = set()
    for path in cases:
        name = io.image_stem(path) if path.is_file() else path.name
        prediction_path = find_prediction(pred_dir, name)
        matched.add(prediction_path)
        if prediction_path is None:
            missing.append(name)
            if args.missing == "skip":
                continue
        try:
            case = read_case(path, label_scheme=args.truth_scheme)
            if case.truth is None:
                raise ValueError(f"{path}: no ground-truth file (e.g. <case>_seg.nii.gz) found")
            if prediction_path is None:
                predicted = np.zeros_like(case.truth)
            else:
                predicted, geometry = read_prediction(prediction_path, args.prediction_scheme)
                differences = geometry.differences(case.geometry)
                if differences:
                    raise ValueError(f"{prediction_path}: not on the grid of case {name} "
                                     f"({'; '.join(differences)}); write label maps on the input grid")
            scores = evaluate_case(predicted, case.truth, case.geometry.spacing, case.scheme.regions)
        except (ValueError, OSError) as exc:
            failed.append(name)
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            continue
        rows.append({"case": name, **scores.as_row()})

    if missing:
        what = "scored as empty predictions" if args.missing == "penalize" else "left out"
        print(f"{len(missing)} case(s) without a prediction in {pred_dir} ({what}): {', '.join(missing)}",
              file=sys.stderr)
    unmatched = sorted(p.name for p in pred_dir.iterdir() if io.is_image(p) and p not in matched)
    if unmatched:
        print(f"note: {len(unmatched)} file(s) in {pred_dir} match no case of {truth_dir}: "
              f"{', '.join(unmatched[:10])}{' ...' if len(unmatched) > 10 else ''}", file=sys.stderr)
    if not rows:
        print("error: nothing was scored", file=sys.stderr)
        return 1
    write_csv(output, rows)
    print(format_table(rows))
    print(f"{len(rows)} case(s) scored, {len(failed)} failed; metrics written to {output}")
    return 1 if failed or (missing and args.missing == "skip") else 0
