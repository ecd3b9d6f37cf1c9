"""`braintumorcnn phantom`: write a synthetic four-modality case with its ground truth
(the generator: synthetic/phantom.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..synthetic import phantom


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path, help="folder to write the case folder <name>/ into")
    parser.add_argument("--seed", type=int, default=0, help="random seed: tumor shape, size, place, intensities")
    parser.add_argument("--size", choices=sorted(phantom.SIZES), default="full",
                        help="full: the BraTS grid 240x240x155; small: a 128x128x64 crop around the tumor (tests)")
    parser.add_argument("--name", help="case name (default Phantom_<seed>)")
    parser.add_argument("--growth", type=float, default=1.0,
                        help="scale the tumor's whole and core volumes, all else the same: the seed's patient "
                             "scanned again later (for `compare`)")


def main(args: argparse.Namespace) -> int:
    case = phantom.make_phantom(args.seed, args.size, args.name, args.growth)
    files = phantom.write_phantom(case, args.out_dir)
    p = case.parameters
    print(f"{files['truth'].parent}: {case.geometry.size[0]}x{case.geometry.size[1]}x"
          f"{case.geometry.size[2]} voxels, tumor NCR/NET {p['volumes_ml']['ncr_net']} ml, "
          f"edema {p['volumes_ml']['edema']} ml, enhancing {p['volumes_ml']['enhancing']} ml")
    return 0
