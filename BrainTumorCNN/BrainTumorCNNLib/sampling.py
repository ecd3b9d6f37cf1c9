"""Training data: preprocessed cases (cached once) and patch sampling.

A sample is an input patch of `receptive_field + output_size - 1` pixels a
side from one axial slice, with the labels of its `output_size x output_size`
centre window (output_size = 1 is the paper's one centre label per patch;
larger windows train the same fully convolutional network on many centre
labels at once, which is what makes CPU training practical).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import io, labels
from .atomic import atomic_path
from .preprocessing import BACKGROUND_VALUE, PREPROCESSING_VERSION, PreprocessingConfig, preprocess


@dataclass
class TrainingCase:
    name: str
    images: np.ndarray  # float32 (4, Z, Y, X) preprocessed, padded in-plane by `pad`
    classes: np.ndarray  # uint8 (Z, Y, X) class indices, padded like images (padding = background)
    brain: np.ndarray  # bool (Z, Y, X), padded
    pad: int


def load_cases(paths: Sequence[Path], num_classes: int, config: PreprocessingConfig, pad: int,
               cache_dir: Optional[Path] = None, progress=None) -> List[TrainingCase]:
    """Read, preprocess (cached in `cache_dir`) and pad every training case."""
    out = []
    for i, path in enumerate(paths):
        if progress:
            progress(i / len(paths), f"preprocessing {Path(path).name}")
        images, brain, truth, name = _preprocessed(Path(path), config, cache_dir)
        classes = labels.labels_to_classes(truth, num_classes)
        widths = ((0, 0), (pad, pad), (pad, pad))
        out.append(TrainingCase(
            name,
            np.pad(images, ((0, 0),) + widths, constant_values=BACKGROUND_VALUE),
            np.pad(classes, widths), np.pad(brain, widths), pad))
    return out


def _preprocessed(path: Path, config: PreprocessingConfig, cache_dir: Optional[Path]):
    key = hashlib.sha256(json.dumps([str(path.resolve()), asdict(config), PREPROCESSING_VERSION],
                                    sort_keys=True).encode()).hexdigest()[:16]
    cached = cache_dir / f"{path.name}-{key}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        with np.load(cached, allow_pickle=False) as data:
            return data["images"].astype(np.float32), data["brain"], data["truth"], str(data["name"])
    case = io.read_case(path)
    if case.truth is None:
        raise ValueError(f"{path}: training needs a ground-truth label map (seg/truth file) in the case folder")
    if "enhancing" not in case.scheme.regions:
        raise ValueError(f"{path}: its labels ({case.scheme.name}) do not separate the tumor classes a network "
                         "learns; use it for evaluation only")
    pre = preprocess(case.images, config, spacing=case.geometry.spacing)
    if cached is not None:
        with atomic_path(cached) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=pre.images.astype(np.float16), brain=pre.brain_mask, truth=case.truth,
                         name=case.name)
    return pre.images, pre.brain_mask, case.truth, case.name


class PatchSampler:
    """Draws (patches, window labels) batches from padded training cases.

    `balanced=True` (phase 1) picks the centre class uniformly among the classes
    present, then a voxel of that class; otherwise (phase 2) centres are drawn
    uniformly from brain voxels, i.e. with the natural label frequencies.
    """

    def __init__(self, cases: List[TrainingCase], receptive_field: int, output_size: int, num_classes: int,
                 rng: np.random.Generator):
        self.cases, self.rf, self.k, self.rng = cases, receptive_field, output_size, rng
        self.size = receptive_field + output_size - 1
        self.before = (receptive_field - 1) // 2 + (output_size - 1) // 2  # input pixels before the centre
        self.k_before = (output_size - 1) // 2
        if cases and cases[0].pad < self.before + 1:
            raise ValueError(f"cases padded by {cases[0].pad}, need at least {self.before + 1}")
        # Voxel indices per case and class (flat, in the padded volume), and of the brain.
        self.by_class = [[np.flatnonzero((c.classes == k) & c.brain) for k in range(num_classes)] for c in cases]
        self.brain = [np.flatnonzero(c.brain) for c in cases]
        present = [k for k in range(num_classes) if any(len(per[k]) for per in self.by_class)]
        self.classes_present = np.array(present)

    def class_frequencies(self, num_classes: int) -> np.ndarray:
        counts = np.array([sum(len(per[k]) for per in self.by_class) for k in range(num_classes)], dtype=np.float64)
        return counts / counts.sum()

    def centres(self, n: int, balanced: bool) -> List[Tuple[int, int]]:
        """(case index, flat voxel index) of n sample centres."""
        out = []
        for _ in range(n):
            if balanced:
                k = self.rng.choice(self.classes_present)
                holders = [i for i, per in enumerate(self.by_class) if len(per[k])]
                i = holders[self.rng.integers(len(holders))]
                pool = self.by_class[i][k]
            else:
                i = int(self.rng.integers(len(self.cases)))
                pool = self.brain[i]
            out.append((i, int(pool[self.rng.integers(len(pool))])))
        return out

    def batch(self, n: int, balanced: bool) -> Tuple[np.ndarray, np.ndarray]:
        """Patches float32 (n, 4, S, S) and window class labels int64 (n, k, k)."""
        x = np.empty((n, 4, self.size, self.size), dtype=np.float32)
        y = np.empty((n, self.k, self.k), dtype=np.int64)
        for j, (i, flat) in enumerate(self.centres(n, balanced)):
            case = self.cases[i]
            z, r, c = np.unravel_index(flat, case.classes.shape)
            r0, c0 = r - self.before, c - self.before
            x[j] = case.images[:, z, r0:r0 + self.size, c0:c0 + self.size]
            y[j] = case.classes[z, r - self.k_before:r - self.k_before + self.k,
                                c - self.k_before:c - self.k_before + self.k]
        return x, y
