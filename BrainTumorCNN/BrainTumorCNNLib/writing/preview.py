"""A PNG preview of a segmentation: the tumor's largest cross-sections in three planes.

Rows: the axial, coronal and sagittal slice with the most tumor voxels of its
plane: the result's largest cross-sections, as the page shows them after a run
(of the truth when the result has no tumor; of the brain when neither has a
voxel), each titled with its 1-based slice number, as the page numbers them.  Columns: T1c and FLAIR with the segments outlined in their colours
(labels.py), and, when ground truth is given, the same slices with the truth's
outlines.  Planes follow the image direction, not the array order, in the
radiological view (patient's right on the left, anterior and superior up), and
pixels keep the voxel spacing's aspect.  The title and the slices shown are
also stored as PNG text (Title, Description).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from .. import labels as label_table
from ..atomic import atomic_path
from ..reading.geometry import Geometry

PLANES = ("axial", "coronal", "sagittal")
#: Per plane, the physical LPS axis (0 x: toward the patient's left, 1 y: posterior, 2 z: superior) it
#: cuts, and those its rows and columns run along.  Rows run posterior-down in axial views and
#: superior-up in the others; columns toward the patient's left (axial, coronal) or posterior (sagittal).
_CUT_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
_ROW_AXIS = {"axial": 1, "coronal": 2, "sagittal": 2}
_ROW_SIGN = {"axial": 1, "coronal": -1, "sagittal": -1}
#: The patient's directions at each panel's edges (left, right, top, bottom) in the radiological view.
EDGES = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
#: Outlines drawn outermost first, so each segment's outer edge shows its own colour.
_DRAW_ORDER = ("edema", "non_enhancing", "enhancing", "ncr_net", "necrosis")
_CHANNELS = ((1, "T1c"), (3, "FLAIR"))  # of the (T1, T1c, T2, FLAIR) images
_PANEL_INCHES = 2.8
_MARGIN = 3  # voxels kept around the brain's bounding box


@dataclass(frozen=True)
class Cut:
    """A slice of a (Z, Y, X) array: the array axis it cuts (0 Z, 1 Y, 2 X) and its index there."""

    axis: int
    index: int


def slice_name(plane: str, cut: Cut, shape: Tuple[int, ...]) -> str:
    """"axial slice 78/155": a cut named by its 1-based number on the case's grid, as the page's views."""
    return f"{plane} slice {cut.index + 1}/{shape[cut.axis]}"


def _array_axes(geometry: Optional[Geometry]) -> Tuple[List[int], List[int]]:
    """Per array axis (Z, Y, X): the physical axis it runs along most closely, and the sign."""
    if geometry is None:
        return [2, 1, 0], [1, 1, 1]
    direction = np.asarray(geometry.direction, float).reshape(3, 3)  # column i: index axis i (x, y, z)
    physical, sign = [], []
    for array_axis in range(3):
        column = direction[:, 2 - array_axis]
        nearest = int(np.abs(column).argmax())
        physical.append(nearest)
        sign.append(1 if column[nearest] > 0 else -1)
    if sorted(physical) != [0, 1, 2]:  # axes at 45 degrees: keep the array order
        return [2, 1, 0], [1, 1, 1]
    return physical, sign


def choose_slices(label_map: np.ndarray, geometry: Optional[Geometry] = None, truth: Optional[np.ndarray] = None,
                  brain: Optional[np.ndarray] = None) -> Dict[str, Cut]:
    """Per plane, the slice with the most tumor voxels (the middle one of equal maxima): of `label_map`
    when it has any (the result, as the page shows it), else of `truth`, else of `brain`."""
    masks = [m > 0 for m in (label_map, truth, brain) if m is not None]
    mask = next((m for m in masks if m.any()), masks[-1])
    physical, _ = _array_axes(geometry)
    cuts = {}
    for plane in PLANES:
        axis = physical.index(_CUT_AXIS[plane])
        counts = mask.sum(axis=tuple(a for a in range(3) if a != axis))
        largest = np.flatnonzero(counts == counts.max())
        cuts[plane] = Cut(axis, int(largest[len(largest) // 2]))
    return cuts


def _view(volume: np.ndarray, plane: str, cut: Cut, box: Tuple[slice, ...], physical: List[int],
          sign: List[int]) -> Tuple[np.ndarray, Tuple[int, int]]:
    """The slice of `volume` (Z, Y, X) as displayed (rows top to bottom, columns left to right), cropped
    to `box`, and the array axes its rows and columns come from."""
    rows, columns = [a for a in range(3) if a != cut.axis]
    view = np.take(volume, cut.index, axis=cut.axis)[box[rows], box[columns]]
    if physical[rows] != _ROW_AXIS[plane]:
        view, rows, columns = view.T, columns, rows
    if sign[rows] != _ROW_SIGN[plane]:
        view = view[::-1]
    if sign[columns] != 1:
        view = view[:, ::-1]
    return view, (rows, columns)


def _brain_box(brain: np.ndarray) -> Tuple[slice, ...]:
    if not brain.any():
        return tuple(slice(None) for _ in range(3))
    box = []
    for axis in range(3):
        present = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(present[0] - _MARGIN, 0), present[-1] + _MARGIN + 1))
    return tuple(box)


def write_preview(images: np.ndarray, label_map: np.ndarray, path: Union[str, Path], num_classes: int,
                  title: str = "", geometry: Optional[Geometry] = None, truth: Optional[np.ndarray] = None) -> Path:
    """Write the preview PNG atomically.  images: (4, Z, Y, X) raw T1, T1c, T2, FLAIR; label_map and
    truth: (Z, Y, X) internal label values; geometry: for the planes' orientation and aspect (None: an
    LPS grid of 1 mm voxels)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    tissues = label_table.class_tissues(num_classes)
    brain = images.any(axis=0)
    cuts = choose_slices(label_map, geometry, truth=truth, brain=brain)
    physical, sign = _array_axes(geometry)
    spacing = (1.0, 1.0, 1.0) if geometry is None else tuple(geometry.spacing[::-1])  # per array axis
    box = _brain_box(brain)
    outlines = [("", label_map)]
    if truth is not None:  # in the model's tissues (BRATS 2013 non-enhancing tumor is NCR/NET for 4 classes)
        outlines.append(("truth", label_table.class_values(num_classes)[label_table.labels_to_classes(truth, num_classes)]))
    columns = [(channel, name, kind, labels) for kind, labels in outlines for channel, name in _CHANNELS]

    windows = {}
    for channel, _ in _CHANNELS:
        shown = np.concatenate([_view(images[channel], p, c, box, physical, sign)[0].ravel() for p, c in cuts.items()])
        shown = shown[shown != 0] if np.any(shown != 0) else shown
        windows[channel] = np.percentile(shown, (0.5, 99.5))

    heights = []  # of each row's panels, in panel widths
    for plane in PLANES:
        shown, (rows, cols) = _view(brain, plane, cuts[plane], box, physical, sign)
        heights.append(shown.shape[0] * spacing[rows] / (shown.shape[1] * spacing[cols]))
    fig, axes = plt.subplots(len(PLANES), len(columns), squeeze=False, gridspec_kw={"height_ratios": heights},
                             figsize=(_PANEL_INCHES * len(columns), _PANEL_INCHES * sum(heights) + 1.8))
    for row, plane in enumerate(PLANES):
        cut = cuts[plane]
        for col, (channel, name, kind, labels) in enumerate(columns):
            ax = axes[row, col]
            image, (rows, cols) = _view(images[channel], plane, cut, box, physical, sign)
            ax.imshow(image, cmap="gray", vmin=windows[channel][0], vmax=windows[channel][1],
                      aspect=spacing[rows] / spacing[cols], interpolation="nearest")
            segment_view = _view(labels, plane, cut, box, physical, sign)[0]
            for tissue in sorted(tissues, key=lambda t: _DRAW_ORDER.index(t.key)):
                inside = segment_view == tissue.value
                if inside.any():
                    ax.contour(inside.astype(np.float32), levels=[0.5], colors=[tissue.color], linewidths=1.2)
            ax.set_axis_off()
            for letter, (x, y, ha, va) in zip(EDGES[plane], ((0.01, 0.5, "left", "center"), (0.99, 0.5, "right", "center"),
                                                             (0.5, 0.99, "center", "top"), (0.5, 0.01, "center", "bottom"))):
                ax.text(x, y, letter, transform=ax.transAxes, ha=ha, va=va, color="#ffd54f", fontsize=8,
                        fontweight="bold")
            ax.set_title(f"{name}{' ' + kind if kind else ''} - {slice_name(plane, cut, label_map.shape)}",
                         fontsize=8)
    handles = [Line2D([0], [0], color=t.color, linewidth=2.5, label=t.name) for t in tissues]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    through = "result's" if label_map.any() else "truth's" if truth is not None and truth.any() else "brain's"
    fig.suptitle(f"{title}\nslices through the {through} largest sections".lstrip(), fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.94))
    description = (f"the {through} largest sections: " + ", ".join(
        f"{slice_name(p, c, label_map.shape)} ({'zyx'[c.axis]}={c.index}, {' '.join(EDGES[p][:2])} marked)"
        for p, c in cuts.items()) + "; columns: "
                   + ", ".join(f"{name}{' ' + kind if kind else ''}" for _, name, kind, _ in columns))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png", metadata={"Title": title, "Description": description})
    plt.close(fig)
    return path
