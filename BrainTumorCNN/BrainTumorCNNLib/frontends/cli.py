"""`braintumorcnn`: one console command, one subcommand per job.

Each subcommand is a module of this package (frontends/) that provides
`configure_parser(parser)` and `main(args) -> int`; modules are imported only
when their subcommand runs, so `--help` stays fast.

Expected errors -- bad input (ValueError: CaseError, GeometryError, ...),
files and folders (OSError), refused weights, an absent device or package --
end as one line `braintumorcnn COMMAND: error: ...` on stderr and exit status 2
(with BRAINTUMORCNN_DEBUG=1 in the environment they keep their traceback);
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

SUBCOMMANDS = {
    "segment": ("frontends.batch", "segment cases (folders or four files) and write segmentations"),
    "evaluate": ("frontends.evaluate", "score predicted label maps against ground truth (BraTS metrics)"),
    "compare": ("frontends.compare", "compare a prior scan with the current one: volumes then and now, the "
                "bidimensional measure, what is new and resolved"),
    "train": ("frontends.train", "train a model of the registry on BraTS-style cases"),
    "crossval": ("frontends.crossval", "cross-validate training by case: K folds, every held-out case segmented and scored"),
    "ensemble": ("frontends.ensemble", "make the fold models of a finished cross-validation run one network "
                 "(EnsembleCNN, CascadeEnsembleCNN)"),
    "cache": ("frontends.cache", "preprocess cases into a compact cache that training runs from (no SimpleITK needed)"),
    "robustness": ("frontends.robustness", "site-shift benchmark: Dice of held-out cases clean and under scanner / "
                   "protocol shifts"),
    "bench": ("frontends.bench", "time dense and patch-by-patch inference of every model"),
    "phantom": ("frontends.phantom", "write a synthetic four-modality case with ground truth"),
    "demo": ("frontends.demo", "make a phantom, segment it with the default model, report Dice"),
    "serve": ("frontends.serve", "serve a web page that segments, shows, corrects and downloads cases (the [web] extra)"),
}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="braintumorcnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)  # prints usage / error and exits
    name = argv[0]
    module = importlib.import_module(f"BrainTumorCNNLib.{SUBCOMMANDS[name][0]}")
    command = argparse.ArgumentParser(prog=f"braintumorcnn {name}", description=SUBCOMMANDS[name][1])
    module.configure_parser(command)
    args = command.parse_args(argv[1:])
    try:
        return int(module.main(args) or 0)
    except EXPECTED_ERRORS as exc:
        if os.environ.get("BRAINTUMORCNN_DEBUG"):
            raise
        print(f"braintumorcnn {name}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nbraintumorcnn {name}: interrupted", file=sys.stderr)
        return 130


#: What bad input, a missing file, refused weights (weights.WeightsError), an absent CUDA device or an
#: absent package raise; RuntimeError is included for the last three.
EXPECTED_ERRORS = (ValueError, OSError, RuntimeError, ImportError, MemoryError)


def one_line(exc: BaseException) -> str:
    """An error message on one line: an OSError as `path: reason`; of a message of several lines (a
    child process's stderr), the first and the last."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


if __name__ == "__main__":
    sys.exit(main())
