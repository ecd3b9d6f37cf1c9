"""Measure what N4's cheaper settings cost and change, on real cases (maintainer tool; minutes).

For each case: seconds of N4 (T1 + T1c) with the OLD settings and with NEW
ones (the shipped defaults unless --shrink / --iterations / --convergence
say otherwise), the difference of the preprocessed intensities inside the
brain (z-score units), and the Dice per region of the default model's
segmentation (`pipeline.segment`, cleanup included) with NEW against the one
with OLD, and of each against the expert truth.  Medians over the cases at
the end.  A new N4 default is justified when the segmentation stays within
0.005 Dice per region.

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_n4.py [--shrink 8] [--no-segment]
"""
from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.preparing import preprocessing
from BrainTumorCNNLib.running import inference, pipeline
from BrainTumorCNNLib.running.cases import read_case

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CASES = ("brats2021/BraTS2021_00000", "brats2018/Brats18_TCIA01_231_1", "brats2020/BraTS20_Training_001")
#: The settings N4 had before they were measured here (PREPROCESSING_VERSION 2).
OLD = preprocessing.PreprocessingConfig(n4_shrink=4, n4_iterations=(50, 50, 30), n4_convergence=0.001)
REGIONS = tuple(labels.REGIONS)


@contextmanager
def n4_clock() -> Iterator[List[float]]:
    """Seconds of every n4_correct call made inside the block."""
    seconds: List[float] = []
    original = preprocessing.n4_correct

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    preprocessing.n4_correct = timed
    try:
        yield seconds
    finally:
        preprocessing.n4_correct = original


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def region_dice(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    return {r: dice(labels.region_mask(a, r), labels.region_mask(b, r)) for r in REGIONS}


def measure(path: Path, new: preprocessing.PreprocessingConfig, segment: bool) -> Dict[str, object]:
    case = read_case(path)
    row: Dict[str, object] = {"case": case.name}
    pre = {}
    for key, config in (("old", OLD), ("new", new)):
        with n4_clock() as seconds:
            pre[key] = preprocessing.preprocess(case.images, config, spacing=case.geometry.spacing)
        row[f"n4_{key}_s"] = sum(seconds)
    mask = pre["old"].brain_mask
    difference = np.abs(pre["new"].images[:, mask] - pre["old"].images[:, mask])
    row["intensity_max_abs"], row["intensity_mean_abs"] = float(difference.max()), float(difference.mean())
    if segment:
        seg = {key: pipeline.segment(case.images, case.geometry, pipeline.SegmentationOptions(
                   device="cpu", precision=inference.SCORING_PRECISION, preprocessing=config)).labels
               for key, config in (("old", OLD), ("new", new))}
        row["dice_new_vs_old"] = region_dice(seg["new"], seg["old"])
        if case.truth is not None:
            row["dice_truth_old"] = region_dice(seg["old"], case.truth)
            row["dice_truth_new"] = region_dice(seg["new"], case.truth)
    return row


def _dice_text(scores: Dict[str, float]) -> str:
    return " / ".join(f"{scores[r]:.4f}" for r in REGIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=[str(SHARED_DATA / c) for c in CASES])
    parser.add_argument("--shrink", type=int, help="NEW n4_shrink (default: the shipped default)")
    parser.add_argument("--iterations", type=int, nargs="+", help="NEW n4_iterations")
    parser.add_argument("--convergence", type=float, help="NEW n4_convergence")
    parser.add_argument("--no-segment", action="store_true", help="intensities and times only (seconds, not minutes)")
    args = parser.parse_args()
    new = preprocessing.PreprocessingConfig()
    for field, value in (("n4_shrink", args.shrink), ("n4_convergence", args.convergence),
                         ("n4_iterations", tuple(args.iterations) if args.iterations else None)):
        if value is not None:
            new = replace(new, **{field: value})
    print(f"OLD: shrink {OLD.n4_shrink}, iterations {OLD.n4_iterations}, convergence {OLD.n4_convergence}")
    print(f"NEW: shrink {new.n4_shrink}, iterations {new.n4_iterations}, convergence {new.n4_convergence}")
    print("Dice per region: complete / core / enhancing; intensities in z-score units inside the brain")
    rows = []
    for path in args.cases:
        row = measure(Path(path), new, not args.no_segment)
        rows.append(row)
        line = (f"{row['case']}: N4 (T1 + T1c) {row['n4_old_s']:.2f} s -> {row['n4_new_s']:.2f} s; "
                f"intensity |new - old| max {row['intensity_max_abs']:.3f}, mean {row['intensity_mean_abs']:.4f}")
        if "dice_new_vs_old" in row:
            line += f"; Dice new vs old {_dice_text(row['dice_new_vs_old'])}"
        if "dice_truth_old" in row:
            line += (f"; vs truth old {_dice_text(row['dice_truth_old'])}, "
                     f"new {_dice_text(row['dice_truth_new'])}")
        print(line, flush=True)
    median = {k: float(np.median([r[k] for r in rows]))
              for k in ("n4_old_s", "n4_new_s", "intensity_max_abs", "intensity_mean_abs")}
    print(f"median over {len(rows)} cases: N4 {median['n4_old_s']:.2f} s -> {median['n4_new_s']:.2f} s "
          f"({median['n4_old_s'] / median['n4_new_s']:.1f}x); intensity |new - old| max "
          f"{median['intensity_max_abs']:.3f}, mean {median['intensity_mean_abs']:.4f}")
    if all("dice_new_vs_old" in r for r in rows):
        worst = {reg: min(r["dice_new_vs_old"][reg] for r in rows) for reg in REGIONS}
        print(f"Dice new vs old: median {_dice_text({reg: float(np.median([r['dice_new_vs_old'][reg] for r in rows])) for reg in REGIONS})}, "
              f"lowest {_dice_text(worst)}")


if __name__ == "__main__":
    main()
