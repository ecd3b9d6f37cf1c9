"""The real ground-truth files in ../shared/data, for tests that check metrics and cleanup on them."""
from __future__ import annotations

from pathlib import Path

import pytest

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.reading import io

PATTERNS = ("brats2021/*/*_seg.nii.gz", "brats2023/*/*-seg.nii.gz", "brats2012/*/*_truth.mha")


def truth_files(shared_data: Path, one_per_release: bool = False) -> list:
    """Every ground-truth file (or the first of each release, to keep a test fast); skips when there is none."""
    found = []
    for pattern in PATTERNS:
        files = sorted(shared_data.glob(pattern))
        found += files[:1] if one_per_release else files
    if not found:
        pytest.skip(f"no ground-truth files under {shared_data}")
    return found


def read_truth(path: Path):
    """(internal label map, geometry, scheme) of a ground-truth file, its scheme told by its name."""
    raw, geometry = io.read_image(path)
    name = "brats2023" if path.name.endswith("-seg.nii.gz") else "brats2012" if path.suffix == ".mha" else "brats2021"
    scheme = labels.scheme(name)
    return scheme.convert(raw, str(path)), geometry, scheme
