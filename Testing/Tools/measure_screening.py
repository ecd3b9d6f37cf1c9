"""Measure screening against the full run on real cases (maintainer tool; about 1.5 min per case
and model on a 2-core CPU).

For every case and model: the whole volume through `inference.segment_volume` once with every brain
slice and once screened (`screen_step` of `segment`'s default options), both cleaned
with the default cleanup; reports the slices each ran, the seconds, their ratio, and whether the
cleaned labels are equal (voxels that differ).  The two runs of a case follow each other, so a load
that comes and goes weighs on both.

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_screening.py CASES... [--models TwoPathCNN]
        [--csv out.csv]

CASES: case folders, folders of cases, or preprocessed cache files (`braintumorcnn cache`).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from BrainTumorCNNLib.learning.sampling import case_sources, load_case
from BrainTumorCNNLib.network import weights
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig
from BrainTumorCNNLib.running import inference, pipeline
from BrainTumorCNNLib.running.postprocessing import CleanupConfig, cleanup


def measure(model, case, step: int, config: CleanupConfig) -> dict:
    volume = case.images.astype(np.float32)
    runs = {}
    for name, screen in (("full", 1), ("screened", step)):
        result = inference.segment_volume(model, volume, case.brain, device="cpu", screen_step=screen)
        runs[name] = (result, cleanup(result.labels, case.spacing, config)[0])
    differ = int((runs["full"][1] != runs["screened"][1]).sum())
    return {"case": case.name, "brain_slices": int(case.brain.any(axis=(1, 2)).sum()),
            "slices_run": len(runs["screened"][0].slices), "full_s": round(runs["full"][0].seconds, 1),
            "screened_s": round(runs["screened"][0].seconds, 1),
            "ratio": round(runs["screened"][0].seconds / runs["full"][0].seconds, 3), "voxels_differ": differ}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+")
    parser.add_argument("--models", nargs="+", default=["TwoPathCNN"])
    parser.add_argument("--csv", help="also write the rows here")
    args = parser.parse_args(argv)
    options = pipeline.SegmentationOptions(precision=inference.SCORING_PRECISION)
    paths = [p for arg in args.cases for p in case_sources(arg)]
    rows = []
    for model_name in args.models:
        model, card = weights.load(model_name)
        config, step = pipeline.cleanup_rule(options, card), pipeline.screen_step(options, card)
        for path in paths:
            row = dict(model=model_name, **measure(model, load_case(path, PreprocessingConfig()), step, config))
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        mine = [r for r in rows if r["model"] == model_name]
        print(f"{model_name}: {len(mine)} cases, slices run {sum(r['slices_run'] for r in mine)} of "
              f"{sum(r['brain_slices'] for r in mine)}, median time ratio {np.median([r['ratio'] for r in mine]):.3f} "
              f"(range {min(r['ratio'] for r in mine):.3f}-{max(r['ratio'] for r in mine):.3f}), "
              f"cases with differing labels {sum(r['voxels_differ'] > 0 for r in mine)}", flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
