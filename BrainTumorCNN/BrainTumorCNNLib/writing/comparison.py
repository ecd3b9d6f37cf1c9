"""A comparison's output files (`braintumorcnn compare`), named after both scans and written all
or none (the report JSON last: its presence marks the comparison written).

`<prior>_to_<current>_difference.nii.gz`: the whole tumor new / resolved / unchanged on the
current grid (scoring/longitudinal.DIFFERENCE_VALUES); `..._prior_labels.nii.gz`: the prior's
labels carried onto the current grid; `..._comparison.png`: the prior's T1c (registered) with its
outlines, the current T1c with its outlines, and the difference, through the largest extent of
either tumor in three planes (the planes and orientation of preview.py); `..._comparison.csv`
and `..._comparison.json`: the report.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from .. import labels as label_table
from ..atomic import atomic_paths
from ..reading import io
from ..reading.geometry import Geometry
from ..scoring import longitudinal
from . import preview

_OVERLAY_ALPHA = 0.45


def comparison_paths(output: Path, prior: str, current: str) -> Dict[str, Path]:
    stem = output / f"{prior}_to_{current}"
    return {"difference": Path(f"{stem}_difference.nii.gz"), "prior_labels": Path(f"{stem}_prior_labels.nii.gz"),
            "preview": Path(f"{stem}_comparison.png"), "csv": Path(f"{stem}_comparison.csv"),
            "json": Path(f"{stem}_comparison.json")}


def write_comparison(output: Path, comparison: longitudinal.Comparison, geometry: Geometry,
                     prior_t1c: np.ndarray, current_t1c: np.ndarray, current_labels: np.ndarray) -> Dict[str, Path]:
    """Write all of a comparison's files into `output`, or none.  `prior_t1c` (carried onto the
    current grid), `current_t1c` and `current_labels` are on `geometry`, the current grid."""
    paths = comparison_paths(output, comparison.prior, comparison.current)
    with atomic_paths(list(paths.values())) as temporaries:
        tmp = dict(zip(paths, temporaries))
        io.write_labels(comparison.difference, geometry, tmp["difference"])
        io.write_labels(comparison.prior_on_current, geometry, tmp["prior_labels"])
        write_preview(prior_t1c, current_t1c, comparison.prior_on_current, current_labels, comparison.difference,
                      tmp["preview"], geometry, f"{comparison.prior} (prior) -> {comparison.current} (current)")
        rows = comparison.rows()
        with open(tmp["csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        tmp["json"].write_text(json.dumps(comparison.as_json(), indent=2) + "\n", encoding="utf-8")
    return paths


def write_preview(prior_image: np.ndarray, current_image: np.ndarray, prior_labels: np.ndarray,
                  current_labels: np.ndarray, difference: np.ndarray, path: Path,
                  geometry: Optional[Geometry] = None, title: str = "") -> Path:
    """Three rows (axial, coronal, sagittal through the largest extent of either tumor), three
    columns: the prior's T1c with its outlines, the current T1c with its outlines, the current T1c
    with the difference filled in.  All arrays (Z, Y, X) on the current grid."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    classes = 4 if not np.isin([3], np.concatenate([np.unique(prior_labels), np.unique(current_labels)])).any() else 5
    tissues = sorted(label_table.class_tissues(classes), key=lambda t: preview._DRAW_ORDER.index(t.key))
    brain = (current_image != 0) | (prior_image != 0)
    cuts = preview.choose_slices(difference, geometry, brain=brain)
    physical, sign = preview._array_axes(geometry)
    spacing = (1.0, 1.0, 1.0) if geometry is None else tuple(geometry.spacing[::-1])
    box = preview._brain_box(brain)
    columns = [("prior T1c (registered)", prior_image, prior_labels, None),
               ("current T1c", current_image, current_labels, None),
               ("change (whole tumor)", current_image, None, difference)]
    shown = np.concatenate([preview._view(current_image, p, c, box, physical, sign)[0].ravel()
                            for p, c in cuts.items()])
    shown = shown[shown != 0] if np.any(shown != 0) else shown
    window = np.percentile(shown, (0.5, 99.5))
    heights = []
    for plane in preview.PLANES:
        view, (rows, cols) = preview._view(brain, plane, cuts[plane], box, physical, sign)
        heights.append(view.shape[0] * spacing[rows] / (view.shape[1] * spacing[cols]))
    fig, axes = plt.subplots(len(preview.PLANES), len(columns), squeeze=False, gridspec_kw={"height_ratios": heights},
                             figsize=(preview._PANEL_INCHES * len(columns), preview._PANEL_INCHES * sum(heights) + 1.8))
    colours = np.zeros((max(longitudinal.DIFFERENCE_VALUES.values()) + 1, 4))
    for key, value in longitudinal.DIFFERENCE_VALUES.items():
        colours[value] = (*longitudinal.DIFFERENCE_COLOURS[key], _OVERLAY_ALPHA)
    for row, plane in enumerate(preview.PLANES):
        cut = cuts[plane]
        for col, (name, image, label_map, change) in enumerate(columns):
            ax = axes[row, col]
            view, (rows, cols) = preview._view(image, plane, cut, box, physical, sign)
            aspect = spacing[rows] / spacing[cols]
            ax.imshow(view, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="nearest")
            if label_map is not None:
                segment_view = preview._view(label_map, plane, cut, box, physical, sign)[0]
                for tissue in tissues:
                    inside = segment_view == tissue.value
                    if inside.any():
                        ax.contour(inside.astype(np.float32), levels=[0.5], colors=[tissue.color], linewidths=1.2)
            else:
                change_view = preview._view(change, plane, cut, box, physical, sign)[0]
                ax.imshow(colours[change_view], aspect=aspect, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"{name} - {plane} {'zyx'[cut.axis]}={cut.index}", fontsize=8)
    handles = [Line2D([0], [0], color=t.color, linewidth=2.5, label=t.name) for t in tissues]
    handles += [Patch(color=longitudinal.DIFFERENCE_COLOURS[k], label=f"{k} tumor")
                for k in longitudinal.DIFFERENCE_VALUES]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96 if title else 1))
    fig.savefig(path, dpi=90, format="png", metadata={"Title": title})
    plt.close(fig)
    return Path(path)
