"""The site-shift benchmark's scores read back: per case and shift the Dice change from clean, the worst
realistic shift, and the summary a model card carries (learning/ensemble.py) so that the default is chosen
on the worst site as well as on cross-validation (network/registry.ranked).  One row per case, shift and
model, as `braintumorcnn robustness` writes robustness.csv (frontends/robustness.py)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..labels import REGIONS
from .metrics import as_float
from .site_shifts import REALISTIC

CSV_NAME = "robustness.csv"


def read_rows(path: Path) -> List[dict]:
    """The rows of a robustness.csv (scores as floats); none when the file is absent."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (as_float(v) if k.startswith(("dice_", "sensitivity_", "precision_", "tumor_share")) else v)
                 for k, v in row.items()} for row in csv.DictReader(f)]


def value(row: Optional[dict], region: str) -> Optional[float]:
    """A row's Dice of `region`; None without a row or where the region was not scored."""
    found = as_float(row.get(f"dice_{region}")) if row else None
    return None if found is None or np.isnan(found) else found


def by_case(rows: Sequence[dict]) -> Dict[str, Dict[str, dict]]:
    """{case: {shift: row}}, cases in the order of the rows."""
    out: Dict[str, Dict[str, dict]] = {}
    for row in rows:
        out.setdefault(row["case"], {})[row["shift"]] = row
    return out


def case_changes(shifts: Dict[str, dict]) -> Dict[str, Dict[str, float]]:
    """{shift: {region: Dice under the shift - clean Dice}} of one case's rows by shift (regions both score)."""
    out: Dict[str, Dict[str, float]] = {}
    for shift, row in shifts.items():
        for region in REGIONS:
            clean, shifted = value(shifts.get("clean"), region), value(row, region)
            if clean is not None and shifted is not None:
                out.setdefault(shift, {})[region] = shifted - clean
    return out


def drops(rows: Sequence[dict]) -> Dict[str, Dict[str, List[float]]]:
    """{shift: {region: [Dice under the shift - clean Dice, per case that has both]}}."""
    out: Dict[str, Dict[str, List[float]]] = {}
    for shifts in by_case(rows).values():
        for shift, regions in case_changes(shifts).items():
            for region, change in regions.items():
                out.setdefault(shift, {}).setdefault(region, []).append(change)
    return out


def worst_shift(change: Dict[str, Dict[str, List[float]]], region: str) -> Optional[str]:
    """The realistic shift with the largest mean loss of `region`'s Dice."""
    candidates = [s for s in REALISTIC if change.get(s, {}).get(region)]
    return min(candidates, key=lambda s: np.mean(change[s][region]), default=None)


def card_summary(rows: Sequence[dict]) -> dict:
    """What a model card carries of its benchmark: per realistic shift measured, the mean change from clean
    per region (paired per case); the worst of them by the mean over the regions (the change of the mean
    Dice a site with that shift would see); the cases.  ValueError without clean and shifted rows."""
    change = drops(rows)
    means = {shift: {region: round(float(np.mean(values)), 4) for region, values in regions.items()}
             for shift, regions in change.items() if shift in REALISTIC}
    if not means:
        raise ValueError("no realistic shift scored beside clean")
    of_mean = {shift: round(float(np.mean(list(regions.values()))), 4) for shift, regions in means.items()}
    worst = min(of_mean, key=of_mean.get)
    return {"cases": list(by_case(rows)), "change": means, "worst": {"shift": worst, "mean_dice_change": of_mean[worst]}}
