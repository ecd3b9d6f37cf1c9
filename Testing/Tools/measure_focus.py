"""Whether the focused gaps (running/inference.focus_boxes) leave a case's cleaned labels those of screening
without them, and how far they move the confidence figure (maintainer tool; about a minute a case on a
2-core CPU).

Each cached, preprocessed case (`braintumorcnn cache`) is segmented by the shipped default as `segment`
does (pipeline.segment_preprocessed: screening, cleanup), once as shipped and once with the boxes as wide
as any plane (inference.FOCUS_MARGIN), and a line per case is printed: the cleaned voxels that differ, the
confidence figure of each (uncertainty.confidence) and the CPU seconds of each.

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_focus.py CACHE_DIR [--cases NAME...]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from BrainTumorCNNLib.learning.sampling import load_case
from BrainTumorCNNLib.network import registry, weights
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig
from BrainTumorCNNLib.running import inference, pipeline, uncertainty

WIDER_THAN_ANY_PLANE = 1 << 20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path)
    parser.add_argument("--cases", nargs="*", help="case names (default: every case of the cache)")
    args = parser.parse_args(argv)
    files = sorted(p for p in args.cache.glob("*.npz") if "-first-" not in p.name)
    model, card = weights.load(registry.default_model())
    shipped, worst = inference.FOCUS_MARGIN, 0.0
    for path in files:
        case = load_case(path, PreprocessingConfig())
        if args.cases and case.name not in args.cases:
            continue
        volume, brain = case.images.astype(np.float32), case.brain
        out = {}
        for mode, margin in (("boxes", shipped), ("whole gaps", WIDER_THAN_ANY_PLANE)):
            inference.FOCUS_MARGIN = margin
            started = time.process_time()
            result = pipeline.segment_preprocessed(model, card["model"], card, volume, brain, case.spacing,
                                                   pipeline.SegmentationOptions())
            out[mode] = (result.labels, uncertainty.confidence(result.probabilities, result.labels, brain,
                                                               case.spacing), time.process_time() - started)
        inference.FOCUS_MARGIN = shipped
        (labels, figure, cpu), (whole, figure_whole, cpu_whole) = out["boxes"], out["whole gaps"]
        moved = max(abs(figure[r] - figure_whole[r]) for r in figure)
        worst = max(worst, moved)
        print(f"{case.name}: cleaned voxels differing {int((labels != whole).sum())} of {int((whole > 0).sum())} "
              f"tumor; confidence {figure} against {figure_whole} (largest change {moved:.4f}); "
              f"CPU {cpu:.1f} s against {cpu_whole:.1f} s", flush=True)
    print(f"largest change of the confidence figure: {worst:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
