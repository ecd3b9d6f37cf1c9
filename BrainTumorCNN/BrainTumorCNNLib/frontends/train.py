"""`braintumorcnn train`: a TrainingConfig from a JSON file and the command line, then the training run."""
from __future__ import annotations

import argparse
import gc
import json
import os
import time
from dataclasses import fields, replace
from pathlib import Path

import torch
import torch.distributed as dist

from ..learning.sampling import SamplingConfig, case_sources
from ..learning.training import TrainingConfig, train
from ..modalities import MODALITIES
from ..preparing.preprocessing import STATISTICS, PreprocessingConfig


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cases", nargs="*", help="training case folders (or folders of cases)")
    parser.add_argument("--validation", nargs="*", default=[], help="validation case folders (early stopping)")
    parser.add_argument("--run-dir", required=True, help="folder for checkpoints, logs, curves and weights")
    parser.add_argument("--config", help="JSON file of TrainingConfig fields (command-line options override it)")
    for f in fields(TrainingConfig):
        if f.name in NESTED_FIELDS:
            continue
        kind = {"int": int, "float": float, "str": str, "bool": _yes_no}.get(
            str(f.type).replace("Optional[", "").rstrip("]"), str)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None)
    add_preprocessing_options(parser)
    parser.add_argument("--augment", action="store_true", default=None,
                        help="augmentation imitating other scanners (AugmentationConfig's defaults)")
    for f in fields(SamplingConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type={"float": float, "bool": _yes_no}.get(f.type, int),
                            default=None, help="phase-1 window sampling (SamplingConfig)")
    parser.add_argument("--find-lr", action="store_true",
                        help="only run the learning-rate range test (lr_range.csv / .png in --run-dir) and print "
                             "the rate it suggests")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES",
                        help="stop cleanly with a checkpoint after this many minutes; the same command continues "
                             "the run exactly")
    parser.add_argument("--quiet", action="store_true")


def _yes_no(text: str) -> bool:
    """A yes / no option's value (yes, no, true, false, 1, 0)."""
    value = text.strip().lower()
    if value not in ("yes", "no", "true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected yes or no, not {text!r}")
    return value in ("yes", "true", "1")


def add_preprocessing_options(parser: argparse.ArgumentParser) -> None:
    """The preprocessing a model is trained with (recorded in its card, used again at inference)."""
    parser.add_argument("--no-n4", action="store_true", help="skip N4 bias-field correction")
    parser.add_argument("--n4-sequences", nargs="+", choices=MODALITIES, default=None,
                        help="the sequences N4 corrects (default: T1 T1c, as the paper)")
    parser.add_argument("--n4-shrink", type=int, default=None, metavar="N",
                        help=f"N4 fits its field on the image shrunk N times per axis (default "
                             f"{PreprocessingConfig().n4_shrink}; the training campaign's runs, started with 4, keep 4)")
    parser.add_argument("--statistics", choices=STATISTICS, default=None,
                        help="the z-score's centre and spread inside the brain: mean-sd (the paper, default) or "
                             "median-iqr (robust)")


def preprocessing_from_args(args: argparse.Namespace, base: PreprocessingConfig) -> PreprocessingConfig:
    changes = {"n4": False} if args.no_n4 else {}
    if args.n4_sequences:
        changes["n4_sequences"] = tuple(args.n4_sequences)
    if args.statistics:
        changes["statistics"] = args.statistics
    if args.n4_shrink is not None:
        if args.n4_shrink < 1:
            raise SystemExit(f"--n4-shrink {args.n4_shrink}: give a factor of at least 1")
        changes["n4_shrink"] = args.n4_shrink
    return replace(base, **changes)


NESTED_FIELDS = ("train_cases", "validation_cases", "preprocessing", "augmentation", "sampling")


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """TrainingConfig from `--config` (JSON) overridden by the command-line options."""
    config = TrainingConfig.from_json(Path(args.config).read_text()) if args.config else TrainingConfig()
    for f in fields(TrainingConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name not in NESTED_FIELDS:
            setattr(config, f.name, value)
    config.preprocessing = preprocessing_from_args(args, config.preprocessing)
    if args.augment:
        config.augmentation = replace(config.augmentation, enabled=True)
    overrides = {f.name: getattr(args, f.name) for f in fields(SamplingConfig) if getattr(args, f.name) is not None}
    config.sampling = replace(config.sampling, **overrides)
    return replace(config)  # checks the options set above (TrainingConfig.__post_init__)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.cases:
        config.train_cases = [str(c) for p in args.cases for c in case_sources(p)]
    if args.validation:
        config.validation_cases = [str(c) for p in args.validation for c in case_sources(p)]
    if not config.train_cases:
        raise SystemExit("no training cases: pass case folders (BraTS layout with a seg/truth file)")
    if args.find_lr:  # the range test runs before the first epoch when the rate is 0; train no epoch
        config = replace(config, learning_rate=0.0, phase1_epochs=0, phase2_epochs=0)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        summary = train(config, Path(args.run_dir), progress=not args.quiet, deadline=deadline(args))
        rank = dist.get_rank() if distributed else 0  # read before the process group ends
        if distributed:
            # Gloo's threads must stop while the interpreter is whole: every rank done, the DDP wrappers
            # (which hold the group) freed now. Left to interpreter exit, a rank sometimes aborted.
            dist.barrier()
            gc.collect()
    finally:
        if distributed:
            dist.destroy_process_group()
    if rank == 0:
        print(json.dumps({k: summary.get(k) for k in ("model", "learning_rate", "best_epoch", "best_score", "global_step",
                                                      "stopped", "run_dir")}))
    return 0


def deadline(args: argparse.Namespace):
    """The `time.time()` at which `--time-limit` stops the run (None: no limit)."""
    if args.time_limit is not None and args.time_limit < 0:
        raise SystemExit("--time-limit must be at least 0 minutes")
    return None if args.time_limit is None else time.time() + 60 * args.time_limit
