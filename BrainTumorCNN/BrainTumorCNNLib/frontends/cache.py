"""`braintumorcnn cache`: preprocess cases once into the compact cache that training runs from,
or convert cache files (e.g. to 8 bits, to carry a training set to a GPU machine)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..learning.sampling import CACHE_BITS, CACHE_SUFFIX, cache_path, case_sources, load_case, write_cache
from ..preparing.preprocessing import PreprocessingConfig
from .train import add_preprocessing_options, preprocessing_from_args


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cases", nargs="+", help="case folders (or folders of cases) with a seg/truth file, "
                        "or cache files / folders of them to convert")
    parser.add_argument("--output", required=True, help="cache folder (give it to train / crossval as cases, "
                        "or as --cache-dir)")
    add_preprocessing_options(parser)
    parser.add_argument("--bits", type=int, choices=CACHE_BITS, default=16,
                        help="16: float16 images; 8: each modality quantised to 256 levels inside the brain "
                        "(about half the size; error at most 0.02 sd)")


def main(args: argparse.Namespace) -> int:
    config = preprocessing_from_args(args, PreprocessingConfig())
    output = Path(args.output)
    paths = [c for p in args.cases for c in case_sources(p)]
    total = 0
    for i, path in enumerate(paths):
        converting = path.name.endswith(CACHE_SUFFIX)  # a cache file: written again with --bits, same name
        target = output / path.name if converting else cache_path(path, config, output)
        if converting and target.resolve() == path.resolve():
            raise SystemExit(f"{path} is already in {output}: give another --output to convert it")
        kept = target.is_file()
        if not kept:
            write_cache(load_case(path, config), target, args.bits)
        size = target.stat().st_size
        total += size
        note = " (already in the cache, kept)" if kept else ""
        print(f"[{i + 1}/{len(paths)}] {target.name}: {size / 1e6:.1f} MB{note}", flush=True)
    print(f"{len(paths)} cases, {total / 1e6:.1f} MB in {output}")
    return 0
