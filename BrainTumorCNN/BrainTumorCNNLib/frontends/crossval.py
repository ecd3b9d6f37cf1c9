"""`braintumorcnn crossval`: the train options, the folds, and a cross-validation run."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..learning.crossval import run
from ..learning.sampling import case_sources
from ..running import inference
from ..running.pipeline import SegmentationOptions
from ..running.postprocessing import CleanupConfig
from . import train


def configure_parser(parser: argparse.ArgumentParser) -> None:
    train.configure_parser(parser)
    parser.add_argument("--folds", type=int, default=5, help="number of folds (cases split by a seeded shuffle)")
    parser.add_argument("--fold-seed", type=int, default=0, help="seed of the split into folds")
    parser.add_argument("--inner-validation", type=int, default=0,
                        help="training cases of each fold set aside for early stopping (0: fixed schedule)")
    parser.add_argument("--only-folds", type=int, nargs="*", help="run these folds now (0-based); the others "
                        "are read from earlier runs")
    parser.add_argument("--validate-held-out", action="store_true",
                        help="draw each fold's validation curve on its held-out cases (then --keep last: nothing "
                             "is chosen on them)")
    parser.add_argument("--flips", action="store_true", help="test-time left-right flips (probabilities averaged)")
    parser.add_argument("--no-cleanup", action="store_true", help="score the predictions without cleanup")
    for name, what in BASE_RUNS.items():
        parser.add_argument(f"--{name.split('_')[0]}-run", type=Path, help=f"cross-validation run (same cases and "
                            f"folds) whose fold models are {what}; replaces --{name.replace('_', '-')}")


#: The weights a model builds on, taken fold by fold from an earlier run so that no fold sees its held-out cases.
BASE_RUNS = {"first_weights": "a cascade's first network (TwoPathCNN)",
             "local_weights": "AverageCNN's LocalPathCNN", "global_weights": "AverageCNN's GlobalPathCNN",
             "start_weights": "where this run's training starts (a further stage of the same model)"}


def main(args: argparse.Namespace) -> int:
    config = train.config_from_args(args)
    if args.validate_held_out and config.keep != "last":
        raise SystemExit("--validate-held-out scores the held-out cases during training: add --keep last, so that "
                         "no weights are chosen on them")
    cases = [c for p in args.cases for c in case_sources(p)]
    if not cases:
        raise SystemExit("no cases: pass case folders (with a seg/truth file) or cache files")
    # held-out cases scored in the reference arithmetic, whatever arithmetic trained and whatever the CPU
    options = SegmentationOptions(model=config.model, device=config.device, flips=args.flips,
                                  precision=inference.SCORING_PRECISION,
                                  cleanup=None if args.no_cleanup else CleanupConfig())
    base_runs = {name: getattr(args, f"{name.split('_')[0]}_run") for name in BASE_RUNS}
    run(cases, args.folds, Path(args.run_dir), config, options, seed=args.fold_seed,
        inner_validation=args.inner_validation, only_folds=args.only_folds,
        base_runs={name: path for name, path in base_runs.items() if path}, progress=not args.quiet,
        validate_held_out=args.validate_held_out, deadline=train.deadline(args))
    return 0
