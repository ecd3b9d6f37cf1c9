"""A prior scan compared with the open case in the page (issue 34, `braintumorcnn compare`'s page form):
the comparison of the engine (scoring/longitudinal.compare_scans) on the prior's segmentation and the
open case's segmentation as edited, its files written by the command's writer (writing/comparison.py)
into the session's folder, and what the page shows of it (longitudinal.table, longitudinal.caveats)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np

from ....modalities import MODALITIES
from ....reading import io
from ....scoring import longitudinal
from ....writing import comparison as comparison_files

#: What the page offers of a comparison: kind (a key of comparison_files.comparison_paths) -> (button text,
#: MIME type).
KINDS = {
    "preview": ("Comparison (.png)", "image/png"),
    "csv": ("Comparison (.csv)", "text/csv"),
}


@dataclass
class PriorComparison:
    """A comparison made: the engine's, its files, and the page's table and caveats of it."""

    comparison: longitudinal.Comparison
    paths: Dict[str, Path]
    rows: List[Dict[str, str]]
    caveats: List[str]


def t1c(case: io.Case) -> np.ndarray:
    return case.images[MODALITIES.index("T1c")]


def compare(prior: io.Case, prior_labels: np.ndarray, current: io.Case, current_labels: np.ndarray,
            folder: Path) -> PriorComparison:
    """Register the prior's T1c onto the open case's, compare the labels (each on its own case's grid) and
    write the comparison's files into `folder` (a sub-folder of the session's)."""
    result, prior_image = longitudinal.compare_scans(prior.name, prior_labels, prior.geometry, t1c(prior),
                                                     current.name, current_labels, current.geometry, t1c(current))
    folder.mkdir(mode=0o700, exist_ok=True)
    paths = comparison_files.write_comparison(folder, result, current.geometry, prior_image,
                                              np.asarray(t1c(current), np.float32), current_labels)
    return PriorComparison(result, paths, longitudinal.table(result), longitudinal.caveats(result))
