"""Neighbouring slices as input channels (SliceStackCNN): the one rule training's patches and inference's
crops are stacked by, so that a network sees at inference what it learned from.

A network declares `slice_offsets` (slices above and below, 0 the slice itself; networks without it read
one slice).  Its input holds the volume's channels at each offset, offset by offset; a slice beyond the
volume reads as background, as the scanner's outside does.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from torch import nn


def offsets_of(model: nn.Module) -> Tuple[int, ...]:
    """The slices a network reads around each slice it labels: (0,) for the paper's networks."""
    return tuple(int(o) for o in getattr(model, "slice_offsets", (0,)))


def input_channels(model: nn.Module) -> int:
    """Channels of one input slice: the volume's channels (`in_channels`) times the slices read."""
    return int(getattr(model, "in_channels", 4)) * len(offsets_of(model))


def indices(zs: np.ndarray, offsets: Tuple[int, ...], depth: int) -> Tuple[np.ndarray, np.ndarray]:
    """(len(zs), len(offsets)) slice indices clipped into the volume, and which lie inside it (the others
    read as background)."""
    wanted = np.asarray(zs, dtype=np.int64)[:, None] + np.asarray(offsets, dtype=np.int64)[None, :]
    return np.clip(wanted, 0, depth - 1), (wanted >= 0) & (wanted < depth)


def stacked(volume: np.ndarray, zs: np.ndarray, offsets: Tuple[int, ...], fill,
            rows: Optional[np.ndarray] = None, columns: Optional[np.ndarray] = None) -> np.ndarray:
    """(C * len(offsets), len(zs), Y, X) of a (C, Z, Y, X) volume: slices zs with their neighbours as
    channels, offset by offset, `fill` (one value, or one per channel C) for those beyond the volume (the
    volume's own array for one offset).  With `rows` and `columns` ((len(zs), S) each) every slice gives
    its own S x S patch instead: (C * len(offsets), len(zs), S, S)."""
    zs = np.asarray(zs, dtype=np.int64)
    if tuple(offsets) == (0,) and rows is None:
        return volume[:, zs]
    read, inside = indices(zs, offsets, volume.shape[1])
    if rows is None:
        picked = volume[:, read]
    else:
        picked = volume[:, read[:, :, None, None], np.asarray(rows)[:, None, :, None],
                        np.asarray(columns)[:, None, None, :]]
    out = picked
    if not inside.all():  # a single slice's patches (training's common case) never leave the volume
        fill = np.reshape(np.asarray(fill, volume.dtype), (-1, 1, 1, 1, 1))
        out = np.where(inside[None, :, :, None, None], picked, fill)
    return out.transpose(2, 0, 1, 3, 4).reshape((-1, len(zs)) + out.shape[3:])
