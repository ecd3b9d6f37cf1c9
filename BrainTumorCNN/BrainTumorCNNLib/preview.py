"""A PNG preview of a segmentation: axial slices of T1c and FLAIR with the segment colours."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from . import labels as label_table
from .atomic import atomic_path


def write_preview(images: np.ndarray, label_map: np.ndarray, path: Union[str, Path], num_classes: int,
                  columns: int = 6, title: str = "") -> Path:
    """Write a montage of `columns` axial slices through the tumor (rows: T1c, FLAIR,
    each with the segment colours at 45% opacity).  images: (4, Z, Y, X) raw; label_map: (Z, Y, X) internal."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tumor_slices = np.flatnonzero(label_map.any(axis=(1, 2)))
    brain_slices = np.flatnonzero(images.any(axis=(0, 2, 3)))
    pool = tumor_slices if tumor_slices.size else (brain_slices if brain_slices.size else np.arange(label_map.shape[0]))
    picks = pool[np.linspace(0, pool.size - 1, min(columns, pool.size)).round().astype(int)]
    colours = np.zeros((256, 4))
    for tissue in label_table.class_tissues(num_classes):
        colours[tissue.value] = (*tissue.color, 0.45)

    fig, axes = plt.subplots(2, len(picks), figsize=(2.2 * len(picks), 4.8), squeeze=False)
    for row, (channel, name) in enumerate(((1, "T1c"), (3, "FLAIR"))):
        for col, z in enumerate(picks):
            ax = axes[row, col]
            ax.imshow(images[channel, z], cmap="gray", interpolation="nearest")
            ax.imshow(colours[label_map[z]], interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"{name} z={z}", fontsize=8)
    handles = [matplotlib.patches.Patch(color=t.color, label=t.name) for t in label_table.class_tissues(num_classes)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
