"""How far each case's tumor stands above its healthy brain on T2 and FLAIR, beside the Dice a table gave
it (maintainer tool; seconds per cached case).

Contrast = (median of the expert-labelled tumor - median of the healthy brain) / sd of the healthy brain,
on the preprocessed images the networks see.  It asks whether the cases a model misses are cases whose
tumor the intensities barely show (a limit of the data) or cases it should have seen.

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_lesion_contrast.py CACHE_DIR [--scores robustness.csv]
        [--shift clean]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Dict, List

import numpy as np

from BrainTumorCNNLib.learning.sampling import case_sources, load_case
from BrainTumorCNNLib.modalities import MODALITIES
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig

SEQUENCES = ("T2", "FLAIR")


def contrast(images: np.ndarray, brain: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    """{sequence: the tumor's contrast in sd of the healthy brain} of a preprocessed (4, Z, Y, X) case."""
    healthy, tumor = brain & (truth == 0), truth > 0
    if not tumor.any():
        raise ValueError("the case has no labelled tumor")
    out = {}
    for name in SEQUENCES:
        channel = images[MODALITIES.index(name)].astype(np.float32)
        out[name] = float((np.median(channel[tumor]) - np.median(channel[healthy])) / channel[healthy].std())
    return out


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", help="cache files, folders of them, or case folders")
    parser.add_argument("--scores", type=Path, help="a robustness.csv whose Dice to print beside each case")
    parser.add_argument("--shift", default="clean", help="its rows of this shift (default clean)")
    args = parser.parse_args(argv)
    scores = {}
    if args.scores:
        with args.scores.open(newline="") as f:
            scores = {r["case"]: r for r in csv.DictReader(f) if r["shift"] == args.shift}
    rows = []
    for path in [p for arg in args.cases for p in case_sources(arg)]:
        case = load_case(path, PreprocessingConfig())
        if scores and case.name not in scores:
            continue
        row = scores.get(case.name, {})
        rows.append((case.name, float(row.get("dice_complete") or "nan"),
                     float(row.get("sensitivity_complete") or "nan"), contrast(case.images, case.brain, case.truth)))
    rows.sort(key=lambda r: (np.nan_to_num(r[1]), r[0]))
    print(f"{'case':24s} {'Dice':>6s} {'sens.':>6s} " + " ".join(f"{s:>6s}" for s in SEQUENCES)
          + "   (complete; contrast in sd of the healthy brain)")
    for name, dice, sensitivity, values in rows:
        print(f"{name:24s} {dice:6.3f} {sensitivity:6.3f} " + " ".join(f"{values[s]:6.2f}" for s in SEQUENCES))


if __name__ == "__main__":
    main()
