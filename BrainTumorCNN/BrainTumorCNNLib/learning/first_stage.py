"""A cascade's frozen first network, run once per training case instead of once per step.

The paper trains a cascade's second network on top of a trained, frozen TwoPathCNN.  Running that first
network on every batch costs more than the second network's step (InputCascadeCNN: 2.1 s a step against
TwoPathCNN's 0.67 s, docs/training.md).  Its output at a voxel depends only on the 33 x 33 window there,
so its dense probability maps over each training case (its brain's bounding box; beyond it, where only
windows at the brain's edge reach, background) are computed once, by the inference engine, kept
in the case cache (8 bits per class, keyed by the first network's weights), and carried as extra image
channels: the sampler and the warps move them with the images, and `networks.CascadeCNN` takes them from
the patch instead of running its first network.  What this gives up: intensity augmentation reaches the
second network's view of the images but not the first network's maps (a live first network would see the
augmented patch).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch

from ..atomic import atomic_path
from ..network import networks
from ..preparing.preprocessing import PREPROCESSING_VERSION
from .sampling import CachedCase

MAPS_LEVELS = 255  # probabilities stored as uint8 codes: error at most 1 / 510


def maps_path(case: CachedCase, weights_sha256: str, precision: str, cache_dir: Path) -> Path:
    """Where one case's first-stage maps under one set of first-network weights are cached: keyed by the
    preprocessed images themselves too, so another preprocessing (an N4 setting, the statistics) never
    reuses the maps of the old one."""
    images = hashlib.sha256(np.ascontiguousarray(case.images).tobytes()).hexdigest()
    key = hashlib.sha256(json.dumps([case.name, list(case.box), list(case.full_shape), weights_sha256, precision,
                                     PREPROCESSING_VERSION, images]).encode()).hexdigest()[:16]
    return cache_dir / f"{case.name}-first-{key}.npz"


def first_stage_maps(case: CachedCase, first: torch.nn.Module, weights_sha256: str, cache_dir: Path,
                     device: torch.device, precision: str) -> np.ndarray:
    """float16 (classes, Z, Y, X) probabilities of the first network over the cropped case, from the cache
    or computed densely and cached."""
    path = maps_path(case, weights_sha256, precision, cache_dir)
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            codes = data["codes"]
    else:
        from ..running.inference import segment_volume
        # every voxel of the crop, outside the brain too: the second network reads the maps there as well
        result = segment_volume(first, case.images.astype(np.float32), np.ones_like(case.brain), device=device,
                                precision=precision)
        codes = np.rint(result.probabilities * MAPS_LEVELS).astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, codes=codes)
    return (codes.astype(np.float32) / MAPS_LEVELS).astype(np.float16)


def with_first_stage(cases: List[CachedCase], model: networks.CascadeCNN, weights_sha256: str, cache_dir: Path,
                     device: torch.device, precision: str,
                     progress: Optional[Callable[[float, str], None]] = None) -> List[CachedCase]:
    """The cases with the first network's maps appended to their images as channels (4 + classes)."""
    out = []
    for i, case in enumerate(cases):
        if progress:
            progress(i / len(cases), f"first-stage maps of {case.name}")
        maps = first_stage_maps(case, model.first, weights_sha256, cache_dir, device, precision)
        out.append(replace(case, images=np.concatenate([case.images, maps])))
    return out
