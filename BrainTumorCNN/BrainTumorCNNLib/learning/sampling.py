"""Training data: a compact cache of preprocessed cases, and vectorised window sampling.

A sample is an input patch of `receptive_field + output_size - 1` pixels a
side from one axial slice, with the labels of its `output_size x output_size`
centre window (output_size = 1 is the paper's one centre label per patch;
larger windows train the same fully convolutional network on many centre
labels at once, which is what makes CPU training practical).

The cache holds each case preprocessed, cropped to the brain's bounding box,
in one compressed `.npz`: float16 (about 11 MB a BraTS case), or with
`bits=8` each modality quantised to 256 levels between its brain minimum and
maximum (about 5 MB; error at most half a level, about 0.02 sd of a z-scored
modality), half the size to carry to another machine.
Training and cross-validation run from it with numpy and torch only, so the
cache can be built where the image files are (SimpleITK, N4) and carried to a
GPU machine that has neither.  SimpleITK is imported only when a case is read
from files.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import labels
from ..network import slice_stack
from ..preparing.preprocessing import BACKGROUND_VALUE, PREPROCESSING_VERSION, PreprocessingConfig

CACHE_SUFFIX = ".npz"
CACHE_BITS = (16, 8)  # float16 images, or 8-bit codes (write_cache)


@dataclass
class CachedCase:
    """One preprocessed case, cropped to its brain's bounding box."""

    name: str
    images: np.ndarray  # float16 (4, Z, Y, X) preprocessed, background = BACKGROUND_VALUE
    brain: np.ndarray  # bool (Z, Y, X)
    truth: np.ndarray  # uint8 (Z, Y, X) internal label values
    regions: Tuple[str, ...]  # regions the truth separates (BRATS 2012: complete, core)
    spacing: Tuple[float, float, float]  # mm, x y z
    box: Tuple[int, ...]  # z0, z1, y0, y1, x0, x1 of the crop in the full volume
    full_shape: Tuple[int, int, int]
    # per modality the normalised value of a raw 0 (Preprocessed.zero); None in caches made before it
    zero: Optional[Tuple[float, ...]] = None

    @property
    def trainable(self) -> bool:
        """Truth that separates every tumor class a network learns."""
        return "enhancing" in self.regions

    def uncrop(self, volume: np.ndarray) -> np.ndarray:
        """A (Z, Y, X) array of the crop put back on the full grid (zeros outside)."""
        full = np.zeros(self.full_shape, dtype=volume.dtype)
        z0, z1, y0, y1, x0, x1 = self.box
        full[z0:z1, y0:y1, x0:x1] = volume
        return full


def case_name(path) -> str:
    """The case a path names: a case folder's name, or the name inside a cache file's `<case>-<key>.npz`."""
    name = Path(path).name
    return re.sub(r"-[0-9a-f]{16}\.npz$", "", name) if name.endswith(CACHE_SUFFIX) else name


def cache_path(path: Path, config: PreprocessingConfig, cache_dir: Path) -> Path:
    key = hashlib.sha256(json.dumps([str(path.resolve()), asdict(config), PREPROCESSING_VERSION],
                                    sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"{path.name}-{key}{CACHE_SUFFIX}"


def load_case(path: Path, config: PreprocessingConfig, cache_dir: Optional[Path] = None) -> CachedCase:
    """A case from its cache file (`path` ending in .npz), or read, preprocessed and cached."""
    path = Path(path)
    if path.name.endswith(CACHE_SUFFIX):
        return _read_cache(path)
    cached = cache_path(path, config, cache_dir) if cache_dir else None
    if cached is not None and cached.is_file():
        return _read_cache(cached)
    case = _preprocess_files(path, config)
    if cached is not None:
        write_cache(case, cached)
    return case


def _preprocess_files(path: Path, config: PreprocessingConfig) -> CachedCase:
    from ..preparing.preprocessing import preprocess
    from ..running.cases import read_case  # SimpleITK: only where files are read
    case = read_case(path)
    if case.truth is None:
        raise ValueError(f"{path}: training and cross-validation need a ground-truth label map "
                         "(seg/truth file) in the case folder")
    pre = preprocess(case.images, config, spacing=case.geometry.spacing)
    where = np.nonzero(pre.brain_mask)
    box = tuple(int(v) for axis in where for v in (axis.min(), axis.max() + 1))
    crop = tuple(slice(box[2 * a], box[2 * a + 1]) for a in range(3))
    outside = int(np.count_nonzero(case.truth)) - int(np.count_nonzero(case.truth[crop]))
    if outside:
        raise ValueError(f"{path}: {outside} tumor voxels of the truth lie outside the brain's bounding box")
    return CachedCase(case.name, pre.images[(slice(None),) + crop].astype(np.float16), pre.brain_mask[crop],
                      case.truth[crop].astype(np.uint8), tuple(case.scheme.regions),
                      tuple(float(s) for s in case.geometry.spacing), box, tuple(pre.brain_mask.shape),
                      tuple(float(v) for v in pre.zero))


def write_cache(case: CachedCase, path: Path, bits: int = 16) -> Path:
    """Write `case` atomically; `bits=8` stores the images quantised (see the module's docstring)."""
    from ..atomic import atomic_path
    if bits not in CACHE_BITS:
        raise ValueError(f"cache bits must be one of {CACHE_BITS}, not {bits}")
    arrays = {"images": case.images} if bits == 16 else _quantise(case.images, case.brain)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays, brain=case.brain, truth=case.truth,
                            meta=json.dumps({"name": case.name, "regions": list(case.regions),
                                             "spacing": list(case.spacing), "box": list(case.box),
                                             "full_shape": list(case.full_shape),
                                             **({"zero": list(case.zero)} if case.zero is not None else {}),
                                             "preprocessing_version": PREPROCESSING_VERSION}))
    return path


def _quantise(images: np.ndarray, brain: np.ndarray) -> Dict[str, np.ndarray]:
    """Each modality's brain voxels as uint8 codes between its brain minimum and maximum."""
    inside = images[:, brain].astype(np.float32)
    low, high = inside.min(axis=1), inside.max(axis=1)
    step = np.maximum(high - low, 1e-6) / 255.0
    codes = np.zeros(images.shape, dtype=np.uint8)
    codes[:, brain] = np.rint((inside - low[:, None]) / step[:, None]).astype(np.uint8)
    return {"codes": codes, "low": low, "step": step}


def _dequantise(codes: np.ndarray, low: np.ndarray, step: np.ndarray, brain: np.ndarray) -> np.ndarray:
    images = np.full(codes.shape, BACKGROUND_VALUE, dtype=np.float16)
    images[:, brain] = (low[:, None] + codes[:, brain] * step[:, None]).astype(np.float16)
    return images


def _read_cache(path: Path) -> CachedCase:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("preprocessing_version") != PREPROCESSING_VERSION:
            raise ValueError(f"{path} was made by preprocessing version {meta.get('preprocessing_version')}, "
                             f"this code is version {PREPROCESSING_VERSION}: rebuild the cache")
        brain = data["brain"].astype(bool)
        images = (data["images"] if "images" in data.files
                  else _dequantise(data["codes"], data["low"], data["step"], brain))
        return CachedCase(meta["name"], images, brain, data["truth"],
                          tuple(meta["regions"]), tuple(meta["spacing"]), tuple(meta["box"]),
                          tuple(meta["full_shape"]), tuple(meta["zero"]) if "zero" in meta else None)


def case_sources(path) -> List[Path]:
    """Cases named by a command-line argument: a cache file, a folder of cache files, or a case folder /
    folder of case folders in any layout the reader knows."""
    path = Path(path)
    if path.name.endswith(CACHE_SUFFIX):
        return [path]
    cached = sorted(path.glob(f"*{CACHE_SUFFIX}")) if path.is_dir() else []
    if cached:
        return cached
    from ..reading.io import find_cases  # SimpleITK: only where files are read
    return list(find_cases(path))


def load_cases(paths: Sequence[Path], config: PreprocessingConfig, cache_dir: Optional[Path] = None,
               progress=None) -> List[CachedCase]:
    out = []
    for i, path in enumerate(paths):
        if progress:
            verb = "reading" if Path(path).name.endswith(CACHE_SUFFIX) else "preprocessing"
            progress(i / len(paths), f"{verb} {Path(path).name}")
        out.append(load_case(Path(path), config, cache_dir))
    return out


@dataclass(frozen=True)
class SamplingConfig:
    """Where phase-1 window centres come from, besides the classes drawn equally (paper).

    The two extra sources aim at the failures measured on unseen sites:
    under-segmented edema / core (their borders) and distant false positives
    (healthy tissue as bright as tumor on FLAIR or T2)."""

    border_fraction: float = 0.0  # centres within `border_width` voxels of a tumor boundary
    border_width: int = 3
    hard_negative_fraction: float = 0.0  # healthy voxels with FLAIR or T2 z-score above the threshold
    hard_negative_z: float = 1.5
    # share of patches (both phases) whose FLAIR and T2 are remade as thick axial slices would show them
    # (`thick_slice_kernel`), thickness drawn from thick_slice_min .. thick_slice_max slices: sites acquire them so
    thick_slice_fraction: float = 0.0
    thick_slice_min: int = 2
    thick_slice_max: int = 5
    # the thick slices made as a scanner makes them, before the preprocessing: the slab mixes the brain's
    # edges with the dark outside, and the whole thick volume's own clipping and z-score (a smaller spread
    # than the thin slices') are applied (`ThickStatistics`); without it the z-scored thin slices are averaged
    thick_slice_renormalise: bool = False


class PatchSampler:
    """Draws (patches, window labels) batches from cached cases, vectorised per case.

    `balanced=True` (phase 1) picks the centre class uniformly among the classes
    present, then a voxel of that class (with `SamplingConfig`'s shares from
    tumor borders and bright healthy tissue); otherwise (phase 2) centres are
    drawn uniformly from brain voxels, i.e. with the natural label frequencies.
    `margin` extra pixels on each side are returned for augmentation's warps
    (labels then cover the whole patch; `augmentation.crop` takes the centre).
    """

    def __init__(self, cases: List[CachedCase], receptive_field: int, output_size: int, num_classes: int,
                 rng: np.random.Generator, sampling: SamplingConfig = SamplingConfig(), margin: int = 0,
                 slice_offsets: Tuple[int, ...] = (0,)):
        self.rng, self.k, self.margin, self.config = rng, output_size, margin, sampling
        self.offsets = tuple(slice_offsets)  # neighbouring slices as channels (slice_stack)
        if self.offsets != (0,) and cases and cases[0].images.shape[0] != IMAGE_CHANNELS:
            raise ValueError("neighbouring slices are stacked from the images alone, not a cascade's maps")
        self.size = receptive_field + output_size - 1
        self.before = (receptive_field - 1) // 2 + (output_size - 1) // 2 + margin  # pixels before the centre
        after = self.size + 2 * margin - self.before - 1  # pixels after it: one more than before for an even field
        self.pad = max(self.before + 1, after)
        self.images = [_pad_channels(c.images, self.pad) for c in cases]
        self.classes = [np.pad(labels.labels_to_classes(c.truth, num_classes), ((0, 0), (self.pad,) * 2,
                                                                                 (self.pad,) * 2)) for c in cases]
        self.shapes = [c.shape for c in self.classes]
        brains = [np.pad(c.brain, ((0, 0), (self.pad,) * 2, (self.pad,) * 2)) for c in cases]
        pools = {f"class{k}": [np.flatnonzero((cl == k) & b) for cl, b in zip(self.classes, brains)]
                 for k in range(num_classes)}
        pools["brain"] = [np.flatnonzero(b) for b in brains]
        pools["border"] = [np.flatnonzero(_borders(cl, b, sampling.border_width))
                           for cl, b in zip(self.classes, brains)]
        pools["hard"] = [np.flatnonzero(b & (cl == 0) & (np.maximum(im[2], im[3]) > sampling.hard_negative_z))
                         for im, cl, b in zip(self.images, self.classes, brains)]
        self.pools = {name: _Pool(per_case) for name, per_case in pools.items()}
        self.classes_present = [k for k in range(num_classes) if self.pools[f"class{k}"].total]
        self.num_classes = num_classes
        self.thick_range = range(max(2, sampling.thick_slice_min), max(2, sampling.thick_slice_max) + 1)
        self.thick_statistics = ([ThickStatistics.of(c, self.thick_range) for c in cases]
                                 if sampling.thick_slice_fraction > 0 and sampling.thick_slice_renormalise else None)

    def class_frequencies(self) -> np.ndarray:
        counts = np.array([self.pools[f"class{k}"].total for k in range(self.num_classes)], dtype=np.float64)
        return counts / counts.sum()

    def centres(self, n: int, balanced: bool) -> Tuple[np.ndarray, np.ndarray]:
        """(case index, flat voxel index in the padded case) of n sample centres."""
        if not balanced:
            return self.pools["brain"].draw(n, self.rng)
        source = self.rng.random(n)
        borders = source < self.config.border_fraction
        hard = ~borders & (source < self.config.border_fraction + self.config.hard_negative_fraction)
        chosen = self.rng.choice(self.classes_present, size=n)
        case = np.empty(n, dtype=np.int64)
        flat = np.empty(n, dtype=np.int64)
        for pick, pool in [(borders, self.pools["border"]), (hard, self.pools["hard"])] + [
                (~borders & ~hard & (chosen == k), self.pools[f"class{k}"]) for k in self.classes_present]:
            if pool.total == 0:
                pool = self.pools[f"class{self.classes_present[0]}"]
            case[pick], flat[pick] = pool.draw(int(pick.sum()), self.rng)
        return case, flat

    def batch(self, n: int, balanced: bool) -> Tuple[np.ndarray, np.ndarray]:
        """Patches float32 (n, 4, S + 2m, S + 2m) and class labels int64: (n, k, k) windows, or
        (n, S + 2m, S + 2m) over the whole patch when `margin` m > 0."""
        cases, flats = self.centres(n, balanced)
        size = self.size + 2 * self.margin
        offsets = np.arange(size) - self.before
        label_size = size if self.margin else self.k
        label_offsets = offsets if self.margin else np.arange(self.k) - (self.k - 1) // 2
        channels = self.images[0].shape[0]
        x = np.empty((n, len(self.offsets), channels, size, size), dtype=np.float32)
        y = np.empty((n, label_size, label_size), dtype=np.int64)
        for i in np.unique(cases):
            rows = np.flatnonzero(cases == i)
            z, r, c = np.unravel_index(flats[rows], self.shapes[i])
            x[rows] = slice_stack.stacked(self.images[i], z, self.offsets, BACKGROUND_VALUE,
                                          r[:, None] + offsets, c[:, None] + offsets
                                          ).transpose(1, 0, 2, 3).reshape(len(rows), *x.shape[1:])
            _, inside = slice_stack.indices(z, self.offsets, self.shapes[i][0])
            zz = z[:, None, None]
            y[rows] = self.classes[i][zz, r[:, None, None] + label_offsets[None, :, None],
                                      c[:, None, None] + label_offsets[None, None, :]]
            thick = self.rng.random(len(rows)) < self.config.thick_slice_fraction
            for j in np.flatnonzero(thick):
                thickness = int(self.rng.integers(self.thick_range.start, self.thick_range.stop))
                phase = int(self.rng.integers(thickness))  # one acquisition for every slice the patch reads
                for s in np.flatnonzero(inside[j]):
                    x[rows[j], s, THICK_CHANNELS] = self.thick_patch(
                        i, int(z[j] + self.offsets[s]), r[j] + offsets, c[j] + offsets, x[rows[j], s], thickness, phase)
        return x.reshape(n, len(self.offsets) * channels, size, size), y

    def thick_patch(self, case: int, z: int, rows: np.ndarray, columns: np.ndarray, patch: np.ndarray,
                    thickness: int, phase: int) -> np.ndarray:
        """(2, S, S) FLAIR and T2 of the patch at slice z, `rows` x `columns` of the padded case, acquired as
        slices `thickness` thin slices thick starting at `phase`."""
        slices, weights = thick_slice_kernel(z, thickness, phase)
        depth = self.shapes[case][0]
        stack = self.images[case][np.array(THICK_CHANNELS)[:, None, None, None],
                                  np.clip(slices, 0, depth - 1)[None, :, None, None],
                                  rows[None, None, :, None], columns[None, None, None, :]].astype(np.float32)
        brain = (patch[:IMAGE_CHANNELS] != BACKGROUND_VALUE).any(axis=0)
        if self.thick_statistics is not None:
            stats = self.thick_statistics[case]
            outside = (stack == BACKGROUND_VALUE) | ((slices < 0) | (slices >= depth))[None, :, None, None]
            stack = np.where(outside, stats.floor[:, None, None, None], stack)
            mixed = stats.normalise(np.tensordot(weights.astype(np.float32), stack, axes=([0], [1])), thickness)
        else:
            mixed = np.tensordot(weights.astype(np.float32), stack, axes=([0], [1]))
        return np.where(brain, mixed, BACKGROUND_VALUE)


@dataclass
class ThickStatistics:
    """What the preprocessing would make of one case's FLAIR and T2 had they been acquired in thick slices.

    A cached case holds the thin slices clipped and z-scored; a thick acquisition happens before that:
    the slab averages the brain's edge slices with the dark outside (raw 0, `floor`: `CachedCase.zero`, or
    in older caches the brain's lowest value), and the preprocessing then clips and z-scores the thick
    volume by its own statistics, whose spread is smaller.  Per thickness (slices), the clip range and the centre and
    spread of the whole thick volume (phase 0; the phase moves them by little), in the thin z-score's units,
    so a thick patch becomes (clip(mix) - centre) / spread."""

    floor: np.ndarray  # (2,) float32: THICK_CHANNELS' value of the outside
    per_thickness: Dict[int, np.ndarray]  # thickness: (2, 4) float32 rows of low, high, centre, spread

    @classmethod
    def of(cls, case: CachedCase, thicknesses: Sequence[int],
           percentiles: Tuple[float, float] = PreprocessingConfig.clip_percentiles) -> "ThickStatistics":
        brain = case.brain
        channels = case.images[np.array(THICK_CHANNELS)].astype(np.float32)
        floor = np.array([case.zero[t] if case.zero is not None else c[brain].min()
                          for t, c in zip(THICK_CHANNELS, channels)], dtype=np.float32)
        filled = np.where(brain[None], channels, floor[:, None, None, None])
        per_thickness = {}
        for thickness in thicknesses:
            thick = _thick_volume(filled, thickness, floor)
            rows = []
            for c in range(len(THICK_CHANNELS)):
                values = thick[c][brain].astype(np.float64)
                low, high = np.percentile(values, percentiles)
                clipped = np.clip(values, low, high)
                rows.append((low, high, clipped.mean(), max(clipped.std(), 1e-6)))
            per_thickness[thickness] = np.array(rows, dtype=np.float32)
        return cls(floor, per_thickness)

    def normalise(self, mixed: np.ndarray, thickness: int) -> np.ndarray:
        """(2, ...) thick-slice mixes of the thin z-scores -> the thick volume's own z-scores."""
        low, high, centre, spread = (v.reshape((2,) + (1,) * (mixed.ndim - 1))
                                     for v in self.per_thickness[thickness].T)
        return (np.clip(mixed, low, high) - centre) / spread


def _thick_volume(channels: np.ndarray, thickness: int, floor: np.ndarray) -> np.ndarray:
    """(C, Z, Y, X) volumes as `thickness`-slice slabs (phase 0) interpolated back along Z, beyond the
    ends the outside value `floor` (C,): `thick_slice_kernel` applied to every slice."""
    depth = channels.shape[1]
    out = np.empty_like(channels)
    for z in range(depth):
        slices, weights = thick_slice_kernel(z, thickness, 0)
        inside = (slices >= 0) & (slices < depth)
        mix = np.tensordot(weights[inside].astype(np.float32), channels[:, slices[inside]], axes=([0], [1]))
        out[:, z] = mix + (weights[~inside].sum() * floor)[:, None, None]
    return out


class Prefetcher:
    """Batches of a `PatchSampler`, each drawn in a background thread while the previous step runs.

    `state()` is the sampler's random state before the batch not yet handed out, so a checkpoint that
    stores it resumes with the very batch an uninterrupted run would draw next.  A batch drawn for the
    other phase (the step after phase 1 ends) is drawn again, from its state, for the phase asked for."""

    def __init__(self, sampler: PatchSampler, n: int):
        self.sampler, self.n = sampler, n
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patches")
        self.pending = None  # (balanced, state before drawing, future)

    def _submit(self, balanced: bool) -> None:
        before = copy.deepcopy(self.sampler.rng.bit_generator.state)
        self.pending = (balanced, before, self.pool.submit(self.sampler.batch, self.n, balanced))

    def next(self, balanced: bool) -> Tuple[np.ndarray, np.ndarray]:
        if self.pending is None:
            self._submit(balanced)
        kind, before, future = self.pending
        batch = future.result()
        if kind != balanced:
            self.sampler.rng.bit_generator.state = before
            batch = self.sampler.batch(self.n, balanced)
        self._submit(balanced)
        return batch

    def state(self) -> dict:
        return copy.deepcopy(self.pending[1] if self.pending else self.sampler.rng.bit_generator.state)

    def restore(self, state: dict) -> None:
        if self.pending:
            self.pending[2].result()  # the thread must not draw while the state is replaced
            self.pending = None
        self.sampler.rng.bit_generator.state = state

    def close(self) -> None:
        self.pool.shutdown(wait=True)


THICK_CHANNELS = (2, 3)  # T2, FLAIR: the sequences sites acquire with thick slices
IMAGE_CHANNELS = 4  # T1, T1c, T2, FLAIR; channels after them carry a cascade's first-stage maps (first_stage.py)


def _pad_channels(images: np.ndarray, pad: int) -> np.ndarray:
    """(C, Z, Y, X) padded in plane by `pad`: images with BACKGROUND_VALUE, first-stage maps (channels after
    IMAGE_CHANNELS, class 0 first) with what the first network gives outside the brain, background only."""
    width = ((0, 0), (pad, pad), (pad, pad))
    return np.stack([np.pad(channel, width, constant_values=BACKGROUND_VALUE if c < IMAGE_CHANNELS
                            else float(c == IMAGE_CHANNELS)) for c, channel in enumerate(images)])


def thick_slice_kernel(z: int, thickness: int, phase: int) -> Tuple[np.ndarray, np.ndarray]:
    """Thin slices and weights that give slice `z` of a stack acquired as slices `thickness` thin slices
    thick (a box profile; the first starting at `phase`) and interpolated back linearly: the mean of the
    two thick slices whose centres bracket z, weighted by distance (site_shifts.resample_thick does the
    same to whole volumes)."""
    first_centre = phase + (thickness - 1) / 2.0
    k = int(np.floor((z - first_centre) / thickness))
    alpha = (z - (first_centre + k * thickness)) / thickness
    start = phase + k * thickness
    weights = np.concatenate([np.full(thickness, (1.0 - alpha) / thickness), np.full(thickness, alpha / thickness)])
    return np.arange(start, start + 2 * thickness), weights


class _Pool:
    """Flat voxel indices of one kind over all cases, drawn uniformly over voxels."""

    def __init__(self, per_case: List[np.ndarray]):
        self.per_case = per_case
        self.starts = np.cumsum([0] + [len(p) for p in per_case])
        self.total = int(self.starts[-1])

    def draw(self, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        picks = rng.integers(self.total, size=n)
        case = np.searchsorted(self.starts, picks, side="right") - 1
        flat = np.array([self.per_case[c][p - self.starts[c]] for c, p in zip(case, picks)], dtype=np.int64)
        return case, flat


def _borders(classes: np.ndarray, brain: np.ndarray, width: int) -> np.ndarray:
    """Brain voxels with two classes (so some tumor) within `width` voxels in-plane: tumor edges and
    the boundaries between tumor classes."""
    if width <= 0:
        return np.zeros_like(brain)
    onehot = F.one_hot(torch.from_numpy(classes.astype(np.int64))).permute(3, 0, 1, 2).float()  # (C, Z, Y, X)
    near = F.max_pool2d(onehot, 2 * width + 1, stride=1, padding=width)  # classes in each neighbourhood
    return (near.sum(0).numpy() > 1) & brain


#: Two cases on the same grid whose images correlate at least this much inside both brains, in every
#: modality, are one patient's scan (measured on the 18 shared cases: 1.000 for the one such pair, at most
#: 0.19 for any two different patients).
SAME_SCAN_CORRELATION = 0.9


def same_patient_groups(cases: Sequence[CachedCase]) -> List[List[str]]:
    """Groups (two or more names) of cases holding the same scan: on the same full grid, with brains
    of sizes within 10 % overlapping by half or more, and intensities inside both brains (every 4th
    voxel) correlating >= SAME_SCAN_CORRELATION in every modality.  Cases on different grids (other
    releases' resampling) are not compared."""
    samples = {}
    for case in cases:
        images = _full_grid_sample(case.images, case.box, case.full_shape, 4)
        brain = _full_grid_sample(case.brain, case.box, case.full_shape, 4).ravel()
        samples[case.name] = (images.reshape(len(images), -1), brain, int(brain.sum()))
    parent = {name: name for name in samples}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    def same(a: str, b: str) -> bool:
        (x, brain_a, size_a), (y, brain_b, size_b) = samples[a], samples[b]
        # cheap tests first (a run over many cases compares every pair): one scan's brains match in size
        if x.shape != y.shape or abs(size_a - size_b) > 0.1 * max(size_a, 1):
            return False
        both = brain_a & brain_b
        overlap = int(both.sum())
        if overlap < 0.5 * min(size_a, size_b) or overlap < 3:
            return False
        return all(np.corrcoef(u[both], v[both])[0, 1] >= SAME_SCAN_CORRELATION for u, v in zip(x, y))

    names = sorted(samples)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if root(a) != root(b) and same(a, b):
                parent[root(b)] = root(a)
    groups: Dict[str, List[str]] = {}
    for name in names:
        groups.setdefault(root(name), []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def _full_grid_sample(volume: np.ndarray, box: Sequence[int], full_shape: Sequence[int], step: int) -> np.ndarray:
    """Every `step`-th voxel of the full grid (zeros outside the crop) of a volume (..., Z, Y, X) cropped
    at `box`, without building the full grid."""
    out = np.zeros(volume.shape[:-3] + tuple(-(-n // step) for n in full_shape), dtype=volume.dtype)
    source, target = [], []
    for lo, hi in zip(box[::2], box[1::2]):
        first = -(-lo // step) * step  # the first full-grid index in the crop that the sampling keeps
        source.append(slice(first - lo, hi - lo, step))
        target.append(slice(first // step, -(-hi // step)))
    out[(...,) + tuple(target)] = volume[(...,) + tuple(source)]
    return out
