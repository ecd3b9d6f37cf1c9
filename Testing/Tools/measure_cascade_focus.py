"""Whether a cascade's second network, run only near the tumor its first network finds, gives the cleaned
labels of the whole cascade, and what it saves (maintainer tool; issue 33's "screening on the first stage").

Each cached, preprocessed case (`braintumorcnn cache`) is segmented by one cascade's weights file two ways:
- whole: the cascade as `segment` runs it (pipeline.segment_preprocessed: screening, the card's cleanup);
- two stages: its first network alone, screened the same way; then the second network, given the first's
  probabilities as the extra input channels it was trained with (networks.CascadeCNN), only on the slices
  where the first found tumor and --beyond slices either side, inside that tumor grown by --margin pixels
  in-plane (a slice beyond takes its neighbours' region); elsewhere the first network's probabilities; the
  same cleanup.
A line per case: the cleaned voxels that differ, each way's Dice against the truth (complete / core /
enhancing), and the CPU seconds of each way (the second stage's apart).

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_cascade_focus.py CACHE_DIR WEIGHTS [--model M]
        [--margin PX] [--beyond SLICES] [--reach PX] [--cases NAME...]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.learning.sampling import load_case
from BrainTumorCNNLib.network import weights
from BrainTumorCNNLib.preparing.preprocessing import BACKGROUND_VALUE, PreprocessingConfig
from BrainTumorCNNLib.running import inference, pipeline
from BrainTumorCNNLib.running.postprocessing import cleanup
from BrainTumorCNNLib.running.segmenter import cleanup_rule, screen_step


class GivenMaps(torch.nn.Module):
    """The cascade fed its first network's maps as input channels: the second network alone runs."""

    def __init__(self, cascade):
        super().__init__()
        self.cascade = cascade
        self.in_channels = cascade.in_channels + cascade.num_classes
        self.num_classes, self.receptive_field = cascade.num_classes, cascade.receptive_field

    def forward(self, x):
        return self.cascade(x)


def dice(predicted: np.ndarray, truth: np.ndarray) -> str:
    out = []
    for region in labels.REGIONS:
        p, t = labels.region_mask(predicted, region), labels.region_mask(truth, region)
        out.append(f"{2 * (p & t).sum() / max(p.sum() + t.sum(), 1):.3f}")
    return "/".join(out)


def runner(model, options: pipeline.SegmentationOptions) -> inference.Runner:
    return inference.Runner(model, inference.resolve_device(options.device), options.fast,
                            inference.DEFAULT_MEMORY_BUDGET, None, options.precision)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--model", default="InputCascadeCNN")
    parser.add_argument("--margin", type=int, default=32, help="pixels the first network's tumor is grown by")
    parser.add_argument("--beyond", type=int, default=0, help="slices either side of the first network's tumor")
    parser.add_argument("--reach", type=int, default=0,
                        help="pixels beyond the brain the first network's maps cover (the second network reads "
                             "them up to half its window away)")
    parser.add_argument("--cases", nargs="*", help="case names (default: every case of the cache)")
    args = parser.parse_args(argv)
    cascade, card = weights.load(args.model, args.weights)
    cascade.eval()
    options = pipeline.SegmentationOptions()
    rule, step = cleanup_rule(options, card), screen_step(options, card)
    first, second = runner(cascade.first, options), runner(GivenMaps(cascade), options)
    values = labels.class_values(int(cascade.num_classes))
    grow = ndimage.generate_binary_structure(2, 1)
    for path in sorted(p for p in args.cache.glob("*.npz") if "-first-" not in p.name):
        case = load_case(path, PreprocessingConfig())
        if args.cases and case.name not in args.cases:
            continue
        volume, brain = case.images.astype(np.float32), case.brain
        started = time.process_time()
        whole = pipeline.segment_preprocessed(cascade, args.model, card, volume, brain, case.spacing, options).labels
        whole_cpu = time.process_time() - started

        started = time.process_time()
        reach = brain if not args.reach else np.stack(
            [ndimage.binary_dilation(b, grow, iterations=args.reach) if b.any() else b for b in brain])
        maps = first.segment(volume, reach, screen_step=step).probabilities
        tumor = inference.argmax_classes(maps) > 0
        near = np.zeros_like(tumor)
        for z in np.flatnonzero(tumor.any(axis=(1, 2))):
            near[z] = ndimage.binary_dilation(tumor[z], grow, iterations=args.margin)
        if args.beyond:
            near = ndimage.maximum_filter1d(near.view(np.uint8), 2 * args.beyond + 1, axis=0).astype(bool)
        near &= brain
        first_cpu = time.process_time() - started
        probabilities = maps.copy()
        if near.any():
            # beyond the volume's edges the maps say background, as in training (the engine pads every channel
            # with the images' background value)
            pad = cascade.receptive_field // 2
            given = np.concatenate([np.pad(volume, ((0, 0), (0, 0), (pad, pad), (pad, pad)),
                                           constant_values=BACKGROUND_VALUE),
                                    np.pad(maps.astype(np.float32), ((0, 0), (0, 0), (pad, pad), (pad, pad)))])
            given[volume.shape[0], :, :pad] = given[volume.shape[0], :, -pad:] = 1.0
            given[volume.shape[0], :, :, :pad] = given[volume.shape[0], :, :, -pad:] = 1.0
            out = second.segment(given, np.pad(near, ((0, 0), (pad, pad), (pad, pad)))).probabilities
            probabilities[:, near] = out[:, :, pad:-pad, pad:-pad][:, near]
        found = values[inference.argmax_classes(probabilities)]
        staged = cleanup(found, case.spacing, rule)[0] if rule is not None else found
        staged_cpu = time.process_time() - started
        print(f"{case.name}: cleaned voxels differing {int((staged != whole).sum())} of {int((whole > 0).sum())} "
              f"tumor; Dice whole {dice(whole, case.truth)}, two stages {dice(staged, case.truth)}; CPU whole "
              f"{whole_cpu:.1f} s, two stages {staged_cpu:.1f} s (first {first_cpu:.1f} s; second on "
              f"{int(near.any(axis=(1, 2)).sum())} slices, {int(near.sum())} voxels)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
