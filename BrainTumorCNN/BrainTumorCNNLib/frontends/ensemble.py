"""`braintumorcnn ensemble`: the fold models of a finished cross-validation run as one network (the mean of
their probabilities: EnsembleCNN of TwoPathCNNs, CascadeEnsembleCNN of InputCascadeCNNs), written with its
card into a models folder: the folder BRAINTUMORCNN_MODELS names, or Resources/Models to ship it."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import labels
from ..learning import ensemble


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a finished `braintumorcnn crossval` run of TwoPathCNN or InputCascadeCNN "
                        "(every fold trained and scored)")
    parser.add_argument("--output", required=True, help="models folder for the ensemble's .safetensors and .json")
    parser.add_argument("--overwrite", action="store_true", help="replace the same ensemble already in --output")


def main(args: argparse.Namespace) -> int:
    output = Path(args.output)
    name = ensemble.name_of(Path(args.run_dir))
    target = output / f"{name}.safetensors"
    if target.exists() and not args.overwrite:
        raise ValueError(f"{target} exists: pass --overwrite to replace it")
    card = ensemble.assemble(Path(args.run_dir), output)
    dice = card["validation"]["dice"]
    print(f"{name}: {len(card['members'])} members written to {target}")
    for line in ensemble.member_names(card):
        print(f"  {line}")
    print(f"  never seen by any member: {', '.join(card['never_seen_by_any_member']) or 'none'}")
    print("  cross-validated Dice (each case by the member that never saw it): "
          + " / ".join(f"{dice[r]:.3f}" for r in labels.REGIONS if r in dice) + " (complete / core / enhancing)")
    return 0
