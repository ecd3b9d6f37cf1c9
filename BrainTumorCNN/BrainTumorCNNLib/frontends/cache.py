"""`braintumorcnn cache`: preprocess cases once into the compact cache that training runs from."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..learning.sampling import cache_path, case_sources, load_case
from ..preparing.preprocessing import PreprocessingConfig


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cases", nargs="+", help="case folders (or folders of cases) with a seg/truth file")
    parser.add_argument("--output", required=True, help="cache folder (give it to train / crossval as cases, "
                        "or as --cache-dir)")
    parser.add_argument("--no-n4", action="store_true", help="skip N4 bias-field correction")


def main(args: argparse.Namespace) -> int:
    config = PreprocessingConfig(n4=not args.no_n4)
    paths = [c for p in args.cases for c in case_sources(p)]
    total = 0
    for i, path in enumerate(paths):
        case = load_case(path, config, Path(args.output))
        size = cache_path(path, config, Path(args.output)).stat().st_size
        total += size
        print(f"[{i + 1}/{len(paths)}] {case.name}: {size / 1e6:.1f} MB", flush=True)
    print(f"{len(paths)} cases, {total / 1e6:.1f} MB in {args.output}")
    return 0
