"""Whether a cascade in two stages (running/cascade.TwoStage: its second network only near the tumor its
first network finds) gives the cleaned labels of the whole cascade, and what it saves (maintainer tool;
issue 33's "screening on the first stage").

Each cached, preprocessed case (`braintumorcnn cache`) is segmented by one cascade's weights file as
`segment` runs it (pipeline.segment_preprocessed: screening, the card's cleanup), once whole and once with
`two_stage`, the region grown by --margin pixels and --beyond slices (cascade.REGION_MARGIN, REGION_SLICES).
A line per case: the cleaned voxels that differ, each way's Dice against the truth (complete / core /
enhancing) and the CPU seconds of each.

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_cascade_focus.py CACHE_DIR WEIGHTS [--model M]
        [--margin PX] [--beyond SLICES] [--cases NAME...]
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.learning.sampling import load_case
from BrainTumorCNNLib.network import weights
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig
from BrainTumorCNNLib.running import cascade, pipeline
from BrainTumorCNNLib.scoring import metrics


def dice(predicted, truth) -> str:
    regions = [(labels.region_mask(predicted, r), labels.region_mask(truth, r)) for r in labels.REGIONS]
    return "/".join(f"{metrics.dice_of(*metrics.overlap(p, t)):.3f}" for p, t in regions)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--model", default="InputCascadeCNN")
    parser.add_argument("--margin", type=int, default=cascade.REGION_MARGIN,
                        help="pixels the first network's tumor is grown by")
    parser.add_argument("--beyond", type=int, default=cascade.REGION_SLICES, help="slices either side of it")
    parser.add_argument("--cases", nargs="*", help="case names (default: every case of the cache)")
    args = parser.parse_args(argv)
    cascade.REGION_MARGIN, cascade.REGION_SLICES = args.margin, args.beyond
    model, card = weights.load(args.model, args.weights)
    staged_options = pipeline.SegmentationOptions()
    whole_options = dataclasses.replace(staged_options, two_stage=False)
    for path in sorted(p for p in args.cache.glob("*.npz") if "-first-" not in p.name):
        case = load_case(path, PreprocessingConfig())
        if args.cases and case.name not in args.cases:
            continue
        out = {}
        for way, options in (("whole", whole_options), ("two stages", staged_options)):
            started = time.process_time()
            out[way] = (pipeline.segment_preprocessed(model, args.model, card, case.images, case.brain, case.spacing,
                                                      options).labels, time.process_time() - started)
        (whole, whole_cpu), (staged, staged_cpu) = out["whole"], out["two stages"]
        print(f"{case.name}: cleaned voxels differing {int((staged != whole).sum())} of {int((whole > 0).sum())} "
              f"tumor; Dice whole {dice(whole, case.truth)}, two stages {dice(staged, case.truth)}; CPU whole "
              f"{whole_cpu:.1f} s, two stages {staged_cpu:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
