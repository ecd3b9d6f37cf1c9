"""Batch segmentation script for Slicer and plain Python.

    Slicer --no-main-window --python-script BrainTumorCNNBatch.py -- CASES... --output DIR
    python BrainTumorCNNBatch.py CASES... --output DIR     (same as `braintumorcnn segment`)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # BrainTumorCNNLib beside this file

from BrainTumorCNNLib.frontends import cli  # noqa: E402

if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if a != "--"]
    status = cli.main(["segment", *argv])
    if "slicer" in sys.modules and hasattr(sys.modules["slicer"], "app"):
        sys.modules["slicer"].util.exit(status)
    sys.exit(status)
