"""`braintumorcnn demo`: the whole job on a case the project makes itself.

1. writes a synthetic four-modality case with its ground truth (synthetic/phantom.py) to
   `OUTPUT/<name>/` in the BraTS 2021 layout;
2. segments it with the best shipped model (or `--model`) exactly as
   `braintumorcnn segment` does (segment_case.run_case): `OUTPUT/<name>.seg.nrrd`
   (a Slicer segmentation), `OUTPUT/<name>_labels.nii.gz` and
   `OUTPUT/<name>_preview.png`;
3. prints the Dice (and the other BraTS metrics) per region against the
   phantom's truth, and fails (exit status 1) when their mean is below
   MIN_MEAN_DICE: a broken or untrained model, caught by CI, which runs the demo.

Needs no data but the package: the phantom's anatomy is the MNI152 template
nilearn ships, its intensities the statistics measured on real cases.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import labels
from ..network import registry

DEFAULT_OUTPUT = Path("braintumorcnn-demo")
#: Least mean Dice (complete, core, enhancing) a working model scores on the phantom.  The shipped
#: TwoPathCNN scores 0.66 / 0.53 / 0.65 on seed 0, an untrained one about 0.05.
MIN_MEAN_DICE = 0.4


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", type=Path, default=DEFAULT_OUTPUT,
                        help=f"folder for the phantom and the results (default: ./{DEFAULT_OUTPUT})")
    parser.add_argument("--model", choices=list(registry.MODELS), help="model (default: best shipped model)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (tumor shape, size, place, contrasts)")
    parser.add_argument("--size", choices=("full", "small"), default="full",
                        help="full: the BraTS grid 240x240x155; small: a 128x128x64 crop (quicker)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def main(args: argparse.Namespace) -> int:
    from ..running import pipeline
    from ..running.segmenter import Segmenter
    from ..scoring import tables
    from ..synthetic import phantom
    from ..writing.outputs import output_paths
    from . import segment_case

    model = args.model or registry.default_model()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.time()
    case = phantom.make_phantom(args.seed, args.size)
    files = phantom.write_phantom(case, output)
    volumes = case.parameters["volumes_ml"]
    print(f"phantom {case.name} (seed {args.seed}): {files['truth'].parent} "
          f"[NCR/NET {volumes['ncr_net']} ml, edema {volumes['edema']} ml, enhancing {volumes['enhancing']} ml; "
          f"{time.time() - started:.1f} s]")
    segmenter = Segmenter(pipeline.SegmentationOptions(model=model, device=args.device))
    row = segment_case.run_case(case.name, files["truth"].parent, output, segmenter, truth=None, resample=False).row
    for kind, path in output_paths(output, case.name).items():
        print(f"{kind:>12}: {path}")
    print(f"\n{model} against the phantom's truth:")
    print(tables.format_table([row]))
    dice = {region: row[f"dice_{region}"] for region in labels.REGIONS}
    print("\nDice: " + ", ".join(f"{region} {value:.3f}" for region, value in dice.items()))
    mean = sum(dice.values()) / len(dice)
    if mean < MIN_MEAN_DICE:
        print(f"braintumorcnn demo: error: {model} scores a mean Dice of {mean:.3f} on the phantom, below the "
              f"floor of {MIN_MEAN_DICE}: its weights are broken or untrained", file=sys.stderr)
        return 1
    return 0
