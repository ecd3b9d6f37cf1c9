"""Tables of per-case scores (fixed-width text and CSV) and reading the predicted label maps to score."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import labels as label_table
from ..atomic import atomic_path
from .metrics import METRIC_TITLES, METRICS, as_float, check_labels, summarize

_REGION_SHORT = {"complete": "compl.", "core": "core", "enhancing": "enh."}


def format_table(rows: Sequence[Mapping[str, object]], mean: bool = True) -> str:
    """A fixed-width table of per-case rows ({"case": name, "dice_complete": ...}),
    with a mean row at the bottom when `mean` and there is more than one row."""
    regions = [r for r in label_table.REGIONS if any(f"dice_{r}" in row for row in rows)]
    rows = list(rows)
    if mean and len(rows) > 1:
        rows.append({"case": "mean", **summarize(rows)})
    name_width = max([4] + [len(str(row.get("case", ""))) for row in rows])
    width = max(len(_REGION_SHORT[r]) for r in regions) if regions else 8
    group = " ".join(f"{_REGION_SHORT[r]:>{width}}" for r in regions)
    top = " ".join(f"{METRIC_TITLES[m]:<{len(group)}}" for m in METRICS)
    lines = [f"{'':<{name_width}}  {top}".rstrip(),
             f"{'case':<{name_width}}  " + " ".join(group for _ in METRICS)]
    lines.append("-" * len(lines[-1]))
    for row in rows:
        if row.get("case") == "mean":
            lines.append("-" * len(lines[1]))
        cells = []
        for metric in METRICS:
            for region in regions:
                value = as_float(row.get(f"{metric}_{region}"))
                text = "-" if value is None else (f"{value:.1f}" if metric == "hd95" else f"{value:.3f}")
                cells.append(f"{text:>{width}}")
        lines.append(f"{str(row.get('case', '')):<{name_width}}  " + " ".join(cells))
    return "\n".join(lines)


def write_csv(path: Union[str, Path], rows: Sequence[Mapping[str, object]], mean: bool = True) -> Path:
    """Write per-case rows (and a final "mean" row) as CSV, atomically."""
    rows = list(rows)
    if mean and rows:
        rows.append({"case": "mean", **summarize(rows)})
    names = ["case"] + [k for k in dict.fromkeys(k for row in rows for k in row) if k != "case"]
    score_order = {f"{m}_{r}": i for i, (m, r) in enumerate((m, r) for m in METRICS for r in label_table.REGIONS)}
    names = ["case"] + sorted(names[1:], key=lambda k: score_order.get(k, len(score_order)))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=names, restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (_format_value(v) if k != "case" else v) for k, v in row.items()})
    return path


def read_csv_rows(path: Union[str, Path]) -> list:
    """The per-case rows of a table write_csv wrote (its mean row left out); [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("case") != "mean"]


def _format_value(value) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value



# --- Predictions -------------------------------------------------------------

PREDICTION_SCHEMES = ("internal",) + tuple(label_table.SCHEMES)


def find_prediction(folder: Path, case: str) -> Optional[Path]:
    """`<case>_labels.<ext>` (as written by `braintumorcnn segment`), else `<case>.<ext>`."""
    from ..reading.io import IMAGE_SUFFIXES

    for stem in (f"{case}_labels", case):
        for suffix in IMAGE_SUFFIXES:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def read_prediction(path: Path, scheme: str = "internal") -> Tuple[np.ndarray, "object"]:
    """A predicted label map as internal values (uint8) and its geometry; clear errors
    for unexpected values."""
    from ..reading.io import read_image

    raw, geometry = read_image(path)
    if scheme == "internal":
        return check_labels(raw, str(path)), geometry
    return label_table.scheme(scheme).convert(raw, source=str(path)), geometry
