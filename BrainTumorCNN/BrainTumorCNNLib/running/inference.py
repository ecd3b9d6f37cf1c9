"""Dense whole-slice inference of any registry model on a (4, Z, Y, X) volume.

Every network is fully convolutional (valid convolutions, stride-1 pooling),
so a slice padded by the model's margins goes through it at once and yields
the class probabilities of every pixel: the output at pixel (y, x) is exactly
what the patch network gives for the `rf x rf` patch centred there (the
cascades included: their first network sees the slice padded by the larger
margin and feeds the second at every pixel).

Margins: `left = (rf - 1) // 2` before and `right = rf - 1 - left` after, per
axis (a 33 patch is centred; the even 56 patch of LocalCascadeCNN has its
centre pixel at index 27).  Padding, like the outside of the brain after
preprocessing, is `preprocessing.BACKGROUND_VALUE`.

A volume is processed in groups of consecutive brain slices (as many as run in
one batch: one slice on the CPU, where two batches run at once on two threads,
torch's threads shared between them), each cropped to the in-plane bounding box of
its brain pixels plus the margins; slices without
brain are skipped and stay background (probability 1).  Groups run in batches
of slices whose activations fit a memory budget; a slice too large for the
budget runs in bands of rows.  On CUDA an out-of-memory error shrinks the
batch, then the band, then moves the rest of the work to the CPU with a
warning.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .. import labels
from ..network import fastconv, slice_stack
from ..network.networks import margins
from ..preparing.preprocessing import BACKGROUND_VALUE, brain_mask
from . import allocator

log = logging.getLogger(__name__)

#: A progress callback: fraction done (0-1) and what is being done.
Progress = Callable[[float, str], None]

#: Memory the activations of one batch may take (bytes); the volume, the
#: output and the cached FFT spectra of the kernels come on top.
DEFAULT_MEMORY_BUDGET = 1 << 30
#: Most slices per batch on CPU (larger batches gain nothing there, measured,
#: and cost memory).
CPU_MAX_BATCH = 1
#: Slices run at once on the CPU, each on its own thread with torch's threads shared out between them:
#: two slices with one thread each ran 1.33x faster than one slice with two threads on the 2-core CPU
#: (TwoPathCNN, bfloat16; copies, pooling and transforms scale poorly over threads within one slice).
CPU_WORKERS = 2
#: Most slices per batch on CUDA.
CUDA_MAX_BATCH = 32
#: Consecutive brain slices cropped together to their union bounding box.
GROUP_SLICES = 16
#: Fewest output rows of a band before giving up on a device after OOM.
MIN_BAND_ROWS = 8
#: After screening, the unscreened slices between two screened ones run on the in-plane boxes of those two
#: slices' tumor grown by this many pixels (`focus_boxes`), not on the whole brain: the screened run 13 %
#: less CPU on BraTS2021_00000 (docs/speed.md) ...
FOCUS_MARGIN = 20
#: ... and again on the whole brain when their tumor comes within this many pixels of a box's edge
#: (`edge_reached`).  Tumor a box left out can only join the screened slices' tumor by crossing that
#: edge, so with 1 pixel the cleaned labels are those of a whole-brain run; 12 also keeps the ring within
#: uncertainty.NEAR_MM of the gap's own labelled tumor inside the box, at 1 mm pixels.
FOCUS_EDGE = 12
#: Arithmetic of the direct convolutions: "float32" (the reference), "bfloat16" (torch.autocast;
#: native on CPUs with AVX512-BF16 or AMX, emulated and slower elsewhere) or "auto": bfloat16 on a CPU
#: that computes it natively (`native_bfloat16`), float32 elsewhere, CUDA included.  FFT convolutions,
#: Maxout, pooling and the softmax stay float32 either way (docs/speed.md: agreement with float32 measured).
PRECISIONS = ("auto", "float32", "bfloat16")
#: The arithmetic accuracy is scored in (cross-validation, robustness, the cards' Dice, the measuring tools):
#: figures that do not depend on the CPU that measured them.
SCORING_PRECISION = "float32"


class Cancelled(Exception):
    """Raised when the caller's `cancel()` returns true; nothing is returned."""


@dataclass
class InferenceResult:
    """Dense inference output for one volume."""

    probabilities: np.ndarray  # float32 (C, Z, Y, X); background = 1 outside the processed region
    labels: np.ndarray  # uint8 (Z, Y, X), internal label values (labels.class_values)
    slices: np.ndarray  # int (n,), the slices processed (those with brain)
    device: str  # where the work ran ("cpu" after a CUDA fallback)
    seconds: float  # wall time of the inference proper
    prepare_seconds: float = 0.0  # part of `seconds` spent preparing the model (copy, kernel spectra)
    precision: str = "float32"  # the direct convolutions' arithmetic that ran ("auto" resolved)

    @property
    def num_classes(self) -> int:
        return self.probabilities.shape[0]


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX tiles or AVX512-BF16), as torch detects it;
    False where torch cannot tell."""
    checks = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(check() for check in checks if check is not None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The arithmetic `precision` (one of PRECISIONS) means on `device`: "auto" is bfloat16 on a CPU with
    native bfloat16 (faster there, labels as float32's on >= 99.99 % of brain voxels: docs/speed.md) and
    float32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    return "bfloat16" if torch.device(device).type == "cpu" and native_bfloat16() else "float32"


def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without CUDA raises."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {str(device)!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' was requested but CUDA is not available (no NVIDIA GPU, or this PyTorch "
            f"{torch.__version__} was built without CUDA); use device 'cpu' or 'auto'")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {str(device)!r}")
    return device


def activation_bytes_per_pixel(model: nn.Module) -> int:
    """A conservative bound on the activation memory of one input pixel (bytes):
    every convolution's output counted as live at once, times two for FFT
    spectra and the layout copies around them.  An ensemble's members run one after
    another: one member's layers count, plus every member's output."""
    members = getattr(model, "members", None)
    if members is not None:
        return activation_bytes_per_pixel(members[0]) + 4 * len(members) * int(model.num_classes)
    channels = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    return 4 * 2 * channels + 4 * slice_stack.input_channels(model)


def segment_volume(model: nn.Module, volume: np.ndarray, mask: Optional[np.ndarray] = None, *,
                   device: Union[str, torch.device] = "auto", fast: Union[bool, str] = True,
                   memory_budget: int = DEFAULT_MEMORY_BUDGET, max_batch: Optional[int] = None,
                   group_slices: int = GROUP_SLICES, only_slices: Optional[Sequence[int]] = None,
                   precision: str = "float32", flips: bool = False, screen_step: int = 1,
                   progress: Optional[Progress] = None,
                   cancel: Optional[Callable[[], bool]] = None) -> InferenceResult:
    """Class probabilities and labels of every voxel of a preprocessed volume.

    model: a registry network (`num_classes`, `receptive_field`); it is not
        modified (the work runs on a copy prepared for `device`; `Runner` keeps that copy for many
        volumes).
    volume: float32 (4, Z, Y, X), preprocessed (background = BACKGROUND_VALUE).
    mask: bool (Z, Y, X) brain mask; default: voxels not equal to
        BACKGROUND_VALUE in some modality.
    device: "auto" (CUDA if available), "cpu" or "cuda".
    fast: True/"auto" = exact speed-ups (fastconv.prepare: FFT for the large kernels
        fastconv.prefers_fft names, fused Maxout and pooling, channels-last on CPU);
        "fft" = FFT for every large kernel; False = the plain model, direct.
    memory_budget: bytes the activations of one batch may take.
    only_slices: process only these slices (each cropped as in a whole run;
        the others stay background), e.g. to time a sample of slices.
    precision: one of PRECISIONS, for the direct convolutions ("auto": resolve_precision; the result
        says what ran).
    flips: average the probabilities with those of the left-right flipped
        volume (test-time augmentation; one prepared model serves both passes).
    screen_step: k > 1 runs every k-th brain slice first and then only the
        slices next to a screened slice with tumor (`screen_plan`), each on the
        box around its screened neighbours' tumor (`focus_boxes`); the other
        slices, and those slices beyond the box, stay background.  Only a tumor
        component lying wholly in k - 1 unscreened slices can be missed, so with
        k - 1 <= the cleanup's `unseen_span()` the cleaned labels are those of a
        full run.
    progress(fraction, message) is called after every batch; `cancel()` is
        checked before every batch and raises Cancelled when true.
    """
    runner = Runner(model, resolve_device(device), fast, memory_budget, max_batch, precision)
    return runner.segment(volume, mask, group_slices=group_slices, only_slices=only_slices, flips=flips,
                          screen_step=screen_step, progress=progress, cancel=cancel)


def crop_extent(boxes: Sequence[Tuple[int, int, int, int]], receptive_field: int) -> Tuple[int, int]:
    """(H, W) of the padded crops of `boxes` (y0, y1, x0, x1): the largest height and, separately, the
    largest width, which may come from different slices (a tall narrow crop and a short wide one)."""
    return (max(y1 - y0 for y0, y1, _, _ in boxes) + receptive_field - 1,
            max(x1 - x0 for _, _, x0, x1 in boxes) + receptive_field - 1)


def screen_plan(slices: np.ndarray, step: int, positive: np.ndarray) -> np.ndarray:
    """The slices still to run after screening: `slices[::step]` were run and `positive[i]` says
    whether screened slice i showed tumor; the unscreened slices between two screened ones (and
    after the last) run when a screened slice next to them was positive."""
    slices = np.asarray(slices)
    rest = []
    for i, hit in enumerate(np.asarray(positive, dtype=bool)):
        after = positive[i + 1] if i + 1 < len(positive) else False
        if hit or after:
            rest.extend(slices[i * step + 1:(i + 1) * step])
    return np.asarray(rest, dtype=slices.dtype)


def focus_boxes(slices: np.ndarray, step: int, tumor: np.ndarray, margin: Optional[int] = None
                ) -> Dict[int, Tuple[int, List[Tuple[int, int, int, int]]]]:
    """For each unscreened slice of `screen_plan`, its run between screened slices i and i + 1 (i) and the
    (y0, y1, x0, x1) boxes of their tumor (`tumor`: bool (len(slices[::step]), Y, X)): each connected
    piece's box grown by `margin` pixels within the plane, overlapping boxes merged into one (a false
    positive at the brain's edge gets a box of its own, not one stretched over the brain).  Only slices
    next to a screened slice with tumor are named.  `margin`: FOCUS_MARGIN, read when called."""
    margin = FOCUS_MARGIN if margin is None else margin
    slices = np.asarray(slices)
    height, width = tumor.shape[1:]
    found = {}
    for i in range(len(tumor)):
        both = tumor[i] | tumor[i + 1] if i + 1 < len(tumor) else tumor[i]
        if not both.any():
            continue
        pieces, _ = ndimage.label(both, structure=np.ones((3, 3), bool))
        boxes = [(max(0, rows.start - margin), min(height, rows.stop + margin),
                  max(0, cols.start - margin), min(width, cols.stop + margin))
                 for rows, cols in ndimage.find_objects(pieces)]
        for z in slices[i * step + 1:(i + 1) * step]:
            found[int(z)] = (i, _merged(boxes))
    return found


def _merged(boxes: List[Tuple[int, int, int, int]]) -> List[Tuple[int, int, int, int]]:
    """`boxes` with every group that overlaps replaced by its bounding box, until none overlap."""
    out: List[Tuple[int, int, int, int]] = []
    for box in boxes:
        overlapping = [other for other in out if _intersection(other, box) is not None]
        while overlapping:  # the grown box may now overlap others
            out = [other for other in out if other not in overlapping]
            box = (min(b[0] for b in overlapping + [box]), max(b[1] for b in overlapping + [box]),
                   min(b[2] for b in overlapping + [box]), max(b[3] for b in overlapping + [box]))
            overlapping = [other for other in out if _intersection(other, box) is not None]
        out.append(box)
    return sorted(out)


def edge_reached(tumor: np.ndarray, box: Tuple[int, int, int, int], edge: int = FOCUS_EDGE) -> bool:
    """Whether a slice's tumor (bool (Y, X), background beyond `box`) comes within `edge` pixels of a
    side of `box` that is not the plane's own."""
    height, width = tumor.shape
    y0, y1, x0, x1 = box
    inner = tumor[y0:y1, x0:x1].copy()
    inner[edge if y0 > 0 else 0:(y1 - y0 - edge) if y1 < height else None,
          edge if x0 > 0 else 0:(x1 - x0 - edge) if x1 < width else None] = False
    return bool(inner.any())


def _intersection(a: Tuple[int, int, int, int], b: Tuple[int, int, int, int]) -> Optional[Tuple[int, int, int, int]]:
    box = (max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] < box[1] and box[2] < box[3] else None


def _average(sums: Sequence[np.ndarray], zs: np.ndarray) -> np.ndarray:
    """Averaged probabilities (C, len(zs), Y, X) of slices `zs` over the views (the second mirrored)."""
    out = sums[0][:, zs].copy()
    if len(sums) > 1:
        out += sums[1][:, zs, :, ::-1]
        out /= len(sums)
    return out


def argmax_classes(probabilities: np.ndarray) -> np.ndarray:
    """argmax over axis 0 of (C, Z, Y, X), first class on ties, as C-1 whole-volume
    comparisons (argmax along a strided first axis is several times slower)."""
    best = np.zeros(probabilities.shape[1:], dtype=np.uint8)
    highest = probabilities[0].copy()
    for c in range(1, probabilities.shape[0]):
        better = probabilities[c] > highest
        best[better] = c
        np.maximum(highest, probabilities[c], out=highest)
    return best


def _batches(zs: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for b0 in range(0, len(zs), size):
        yield zs[b0:b0 + size]


def _check(cancel: Optional[Callable[[], bool]]) -> None:
    if cancel is not None and cancel():
        raise Cancelled("inference cancelled")


def _groups(mask: np.ndarray, slices: np.ndarray, size: int) -> Iterator[Tuple[np.ndarray, Tuple[int, int, int, int]]]:
    """Runs of up to `size` consecutive brain slices with the (y0, y1, x0, x1)
    bounding box of their brain pixels (end-exclusive)."""
    for i in range(0, len(slices), size):
        zs = slices[i:i + size]
        plane = mask[zs].any(axis=0)
        rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        yield zs, (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def _padded_crop(volume: np.ndarray, zs: Sequence[int], y0: int, y1: int, x0: int, x1: int,
                 receptive_field: int, fill=BACKGROUND_VALUE, offsets: Tuple[int, ...] = (0,)) -> np.ndarray:
    """float32 (len(zs), C * len(offsets), y1-y0+rf-1, x1-x0+rf-1): the slices' output region
    plus margins, `fill` beyond the volume's edges (one value, or one per channel of one slice); with
    `offsets` (slice_stack) each slice's neighbours follow as further channels, `fill` beyond Z as well."""
    left, right = margins(receptive_field)
    C, _, Y, X = volume.shape
    out = np.empty((len(zs), len(offsets), C, y1 - y0 + left + right, x1 - x0 + left + right), np.float32)
    out[:] = np.reshape(np.asarray(fill, np.float32), (1, 1, -1, 1, 1))
    out = out.reshape(len(zs), len(offsets) * C, out.shape[-2], out.shape[-1])
    sy0, sy1, sx0, sx1 = max(0, y0 - left), min(Y, y1 + right), max(0, x0 - left), min(X, x1 + right)
    src = slice_stack.stacked(volume[:, :, sy0:sy1, sx0:sx1], zs, offsets, fill)
    out[:, :, sy0 - (y0 - left):sy1 - (y0 - left), sx0 - (x0 - left):sx1 - (x0 - left)] = src.transpose(1, 0, 2, 3)
    return out


@contextlib.contextmanager
def _exact_float32(device: torch.device):
    """No TF32 on CUDA while inferring: results stay float32-accurate."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _is_oom(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError (torch 1.13+), not torch.OutOfMemoryError, which torch < 2.5 lacks
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc))


class _Pass:
    """One `Runner.segment` call's running state: its views (the volume and, with flips, its left-right mirror,
    whose crops are its own and whose sums are mirrored back at the end), each view's groups of slices with
    their crops, the probability sums being filled, and the progress told (`planned`: the fraction's
    denominator, every brain slice until screening has said which run; a message names a total only once
    it is known; a run again on the whole brain holds the fraction, never lowers it)."""

    def __init__(self, runner: "Runner", volume: np.ndarray, mask: np.ndarray, flips: bool, size: int,
                 num_classes: int, slices: int, progress: Optional[Progress], cancel: Optional[Callable[[], bool]]):
        self.runner, self.cancel = runner, cancel
        self.report = progress or (lambda fraction, message: None)
        mirrored = [(np.ascontiguousarray(volume[..., ::-1]), np.ascontiguousarray(mask[..., ::-1]))] if flips else []
        self.views = [(volume, mask)] + mirrored
        self.groups = [list(_groups(m, np.flatnonzero(m.any(axis=(1, 2))), size)) for _, m in self.views]
        self.sums = [np.zeros((num_classes,) + mask.shape, dtype=np.float32) for _ in self.views]
        for total in self.sums:
            total[0] = 1.0
        self.width = volume.shape[-1]
        self.planned, self.done, self.shown = slices * len(self.views), 0, 0.0

    def work_of(self, chosen: np.ndarray, focus: Optional[dict] = None) -> list:
        """(data, total, flipped, batch, box) of each batch that runs `chosen`: on its group's box, or with
        `focus` (focus_boxes) on that box within its group's; a slice whose box misses the brain's does not run."""
        work = []
        for (data, _), view_groups, total, flipped in zip(self.views, self.groups, self.sums, (False, True)):
            for zs, box in view_groups:
                picked = np.intersect1d(zs, chosen)
                parts = {None: (picked, box)} if focus is None else {}
                for z in (picked if focus is not None else ()):
                    run_index, boxes = focus[int(z)]
                    for (y0, y1, x0, x1) in boxes:
                        inside = _intersection(box, (y0, y1, self.width - x1, self.width - x0) if flipped
                                               else (y0, y1, x0, x1))
                        if inside is not None:
                            members, _ = parts.setdefault((run_index, inside), ([], inside))
                            members.append(z)
                work += [(data, total, flipped, batch, part) for members, part in parts.values()
                         for batch in _batches(np.asarray(members, dtype=int), self.runner.max_batch)]
        return work

    def plan(self, work: list) -> int:
        """The fraction's denominator once `work` is known to be all that is left: returned, to name it."""
        self.planned = self.done + sum(len(w[3]) for w in work)
        return self.planned

    def run(self, work: list, stage: str, named_total: int) -> None:
        runner = self.runner
        for i in range(0, len(work), runner.workers):  # `workers` batches at once, in order
            _check(self.cancel)
            turn = work[i:i + runner.workers]
            crops = [_padded_crop(data, batch, *box, runner.receptive_field, runner.pad_values, runner.offsets)
                     for data, _, _, batch, box in turn]
            for (_, total, flipped, batch, (y0, y1, x0, x1)), out in zip(turn, runner.run_all(crops, self.cancel)):
                total[:, batch, y0:y1, x0:x1] = out.transpose(1, 0, 2, 3)
                self.done += len(batch)
                self.shown = max(self.shown, self.done / self.planned)
                self.report(self.shown, f"{stage} {self.done}/{named_total} ({runner.device.type}, {runner.precision})"
                            + (" (flipped)" if flipped else ""))

    def average(self, zs: np.ndarray) -> np.ndarray:
        return _average(self.sums, zs)

    def probabilities(self) -> np.ndarray:
        """The views' probabilities averaged (the mirror's mirrored back); the first view's sums, reused."""
        probabilities = self.sums[0]
        if len(self.sums) > 1:
            probabilities += self.sums[1][..., ::-1]
            probabilities /= 2
        return probabilities


class Runner:
    """Runs volumes (`segment`) as padded slice batches through a copy of a model prepared for one
    device, kept for every volume it runs; shrinks batches / row bands on out-of-memory and falls
    back from CUDA to the CPU when even one band does not fit."""

    def __init__(self, model: nn.Module, device: torch.device, fast: Union[bool, str],
                 memory_budget: int, max_batch: Optional[int], precision: str = "float32"):
        if fast not in (True, False, "auto", "fft"):
            raise ValueError(f"fast must be True, False, 'auto' or 'fft', not {fast!r}")
        self.model, self.fast, self.memory_budget = model, fast, int(memory_budget)
        self.asked = precision  # checked and resolved by _set_device (resolve_precision)
        self.receptive_field = int(model.receptive_field)
        # beyond the volume's edges: the images' background, or what the model names per input channel
        self.pad_values = getattr(model, "pad_values", BACKGROUND_VALUE)
        self.offsets = slice_stack.offsets_of(model)  # neighbouring slices read as channels (SliceStackCNN)
        self.bytes_per_pixel = activation_bytes_per_pixel(model)
        self.user_max_batch = max_batch
        self._pool: Optional[ThreadPoolExecutor] = None
        allocator.keep_freed_memory()  # slices' temporary tensors reuse freed memory, no page-fault churn
        self._set_device(device)

    def _set_device(self, device: torch.device) -> None:
        self.device = device
        self.precision = resolve_precision(self.asked, device)  # resolved again after a fallback to the CPU
        self.lower = self.precision == "bfloat16"
        default = CUDA_MAX_BATCH if device.type == "cuda" else CPU_MAX_BATCH
        self.max_batch = max(1, self.user_max_batch or default)
        self.band_rows: Optional[int] = None  # output rows per band after an OOM
        self.prepared: Optional[nn.Module] = None
        self.workers = min(CPU_WORKERS, torch.get_num_threads()) if device.type == "cpu" else 1

    def segment(self, volume: np.ndarray, mask: Optional[np.ndarray] = None, *, group_slices: int = GROUP_SLICES,
                only_slices: Optional[Sequence[int]] = None, flips: bool = False, screen_step: int = 1,
                progress: Optional[Progress] = None,
                cancel: Optional[Callable[[], bool]] = None) -> InferenceResult:
        """`segment_volume` with this runner's model, device and prepared copy (arguments as there); the
        copy is made on the first volume and only fitted to each later one's largest crop."""
        start = time.perf_counter()
        volume = np.asarray(volume)
        if volume.ndim != 4:
            raise ValueError(f"volume must be (channels, Z, Y, X), got shape {volume.shape}")
        in_channels = getattr(self.model, "in_channels", volume.shape[0])
        if volume.shape[0] != in_channels:
            raise ValueError(f"the model takes {in_channels} modalities, the volume has {volume.shape[0]}")
        mask = brain_mask(volume, BACKGROUND_VALUE) if mask is None else np.asarray(mask, dtype=bool)
        if mask.shape != volume.shape[1:]:
            raise ValueError(f"brain mask shape {mask.shape} does not match the volume {volume.shape[1:]}")
        if int(screen_step) != screen_step or screen_step < 1:
            raise ValueError(f"screen_step must be a whole number >= 1, not {screen_step}")
        if screen_step > 1 and only_slices is not None:
            raise ValueError("screen_step and only_slices cannot be combined: screening needs every brain slice")
        num_classes = int(self.model.num_classes)
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        if only_slices is not None:
            slices = np.intersect1d(slices, np.asarray(only_slices, dtype=int))
        # slices share a crop only to run as one batch: on the CPU (one slice per batch) each slice gets its
        # own bounding box, 12 % fewer pixels than a group's union on a real brain
        size = max(1, min(group_slices, self.max_batch))
        state = _Pass(self, volume, mask, flips, size, num_classes, len(slices), progress, cancel)
        prepare_seconds = 0.0
        with _exact_float32(self.device), self.sharing_threads(), self.holding_spectra():
            if len(slices):
                # every crop either view will run (flipped boxes are mirrored: same heights and widths)
                boxes = [box for zs, box in state.groups[0] if len(np.intersect1d(zs, slices))]
                shape = (size, volume.shape[0] * len(self.offsets)) + crop_extent(boxes, self.receptive_field)
                prepare_start = time.perf_counter()
                self.prepare((self.batch_for(shape),) + shape[1:])
                prepare_seconds = time.perf_counter() - prepare_start
            if screen_step > 1:
                slices = self._screened(state, slices, screen_step)
            else:
                state.run(state.work_of(slices), "slice", state.planned)
        if not len(slices):
            state.report(1.0, "no brain voxels: nothing to segment")
        probabilities = state.probabilities()
        values = labels.class_values(num_classes)
        best = argmax_classes(probabilities)
        return InferenceResult(probabilities, values[best], slices,
                               self.device.type, time.perf_counter() - start, prepare_seconds, self.precision)

    def _screened(self, state: "_Pass", slices: np.ndarray, step: int) -> np.ndarray:
        """Screening (screen_plan): one brain slice in `step` on its whole brain, then the slices between
        screened ones that may hold tumor on their screened neighbours' boxes (focus_boxes) at a transform size
        of their own, and again on the whole brain where their tumor reaches a box's edge.  Returns the slices
        that ran."""
        screens = slices[::step]
        state.run(state.work_of(screens), f"screening one brain slice in {step}: slice",
                  len(screens) * len(state.views))
        tumor = argmax_classes(state.average(screens)) > 0
        rest = screen_plan(slices, step, tumor.reshape(len(screens), -1).any(axis=1))
        focus = focus_boxes(slices, step, tumor)
        work = state.work_of(rest, focus)
        if work:  # the smaller crops get a transform size of their own
            self.prepare((1, state.views[0][0].shape[0] * len(self.offsets))
                         + crop_extent([w[-1] for w in work], self.receptive_field),
                         add=True)
        state.run(work, "slice", state.plan(work))
        # a run whose tumor reaches its box's edge again on the whole brain (FOCUS_EDGE)
        found = argmax_classes(state.average(rest)) > 0
        again = {focus[int(z)][0] for z, t in zip(rest, found) if any(edge_reached(t, box) for box in focus[int(z)][1])}
        redo = np.asarray([z for z in rest if focus[int(z)][0] in again], dtype=int)
        if len(redo):
            log.info("%d of %d unscreened slices run again on the whole brain: tumor at their box's edge",
                     len(redo), len(rest))
            work = state.work_of(redo)
            state.run(work, "again on the whole brain, tumor at the box's edge: slice", state.plan(work))
        return np.union1d(screens, rest)

    @contextlib.contextmanager
    def holding_spectra(self):
        """The prepared copy's kernel spectra are dropped when the volume is done (up to a few hundred
        MB; the next volume reserves its own size)."""
        try:
            yield
        finally:
            if self.prepared is not None:
                fastconv.release(self.prepared)

    @contextlib.contextmanager
    def sharing_threads(self):
        """While inside: `workers` threads run batches at once (run_all), torch's threads shared out
        between them; torch's thread count is restored after."""
        threads = torch.get_num_threads()
        if self.workers < 2:
            yield
            return
        torch.set_num_threads(max(1, threads // self.workers))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="inference")
        try:
            yield
        finally:
            self._pool.shutdown(wait=True)
            self._pool = None
            torch.set_num_threads(threads)

    def run_all(self, crops: Sequence[np.ndarray], cancel: Optional[Callable[[], bool]] = None) -> list:
        """`run` of each crop, on the worker threads when sharing them (each batch's activations then
        get an equal part of the memory budget)."""
        if self._pool is None:
            return [self.run(crop, cancel) for crop in crops]
        return list(self._pool.map(lambda crop: self.run(crop, cancel), crops))

    def prepare(self, shape: Tuple[int, ...], add: bool = False) -> None:
        """Set up the model for this device, for padded crops of up to `shape` (n, C, H, W): the copy
        is made once (fastconv.prepare), later volumes only fit its FFT layers to their H and W (with
        `add`, a second size for the volume's smaller crops, beside the first)."""
        if self.prepared is not None:
            fastconv.fit(self.prepared, shape[-2], shape[-1], add=add)
            return
        if self.fast is False:
            self.prepared = copy.deepcopy(self.model).to(self.device).eval()
        else:
            conv = "fft" if self.fast == "fft" else "auto"
            self.prepared = fastconv.prepare(self.model, shape, self.device, conv=conv)
        if self.lower:  # autocast would cast the direct convolutions' weights on every call (5 % of a slice)
            for module in self.prepared.modules():
                if isinstance(module, nn.Conv2d):
                    module.to(torch.bfloat16)

    @property
    def budget(self) -> int:
        """Activation memory of one batch: the budget, shared between the batches that run at once."""
        return self.memory_budget // (self.workers if self._pool is not None else 1)

    def batch_for(self, shape: Tuple[int, ...]) -> int:
        """Slices per batch for padded crops of `shape` (n, C, H, W)."""
        fit = self.budget // max(self.bytes_per_pixel * shape[-2] * shape[-1], 1)
        return int(max(1, min(shape[0], self.max_batch, fit)))

    def rows_per_band(self, batch: int, height: int, width: int) -> int:
        """Output rows per band so that the batch's activations fit the budget."""
        rf = self.receptive_field
        per_row = self.bytes_per_pixel * batch * (width + rf - 1)
        rows = self.budget // max(per_row, 1) - (rf - 1)
        if self.band_rows is not None:
            rows = min(rows, self.band_rows)
        return int(max(1, min(height, rows)))

    def run(self, crop: np.ndarray, cancel: Optional[Callable[[], bool]] = None) -> np.ndarray:
        """Probabilities float32 (n, C, h, w) of a padded crop (n, 4, h+rf-1, w+rf-1)."""
        rf = self.receptive_field
        n, _, hp, wp = crop.shape
        h, w = hp - rf + 1, wp - rf + 1
        batch = self.batch_for(crop.shape)
        out = np.empty((n, self.model.num_classes, h, w), dtype=np.float32)
        i = 0
        while i < n:
            try:
                rows = self.rows_per_band(batch, h, w)
                for r0 in range(0, h, rows):
                    _check(cancel)
                    r1 = min(h, r0 + rows)
                    out[i:i + batch, :, r0:r1] = self._forward(crop[i:i + batch, :, r0:r1 + rf - 1])
                i += batch
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
                if not _is_oom(exc):
                    raise
                batch = self._shrink(batch, h, w, exc)
        return out

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if self.prepared is None:
            self.prepare(x.shape)
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.lower):
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            return self.prepared(fastconv.prepared_input(self.prepared, t)).float().exp().cpu().numpy()

    def _shrink(self, batch: int, h: int, w: int, exc: BaseException) -> int:
        """After an out-of-memory error: halve the batch, then the band, then
        leave CUDA for the CPU.  Returns the batch to retry with."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if batch > 1:
            self.max_batch = max(1, batch // 2)
            log.info("out of memory on %s with %d slices per batch; retrying with %d",
                     self.device, batch, self.max_batch)
            return self.max_batch
        rows = self.rows_per_band(1, h, w)
        if rows > MIN_BAND_ROWS:
            self.band_rows = max(MIN_BAND_ROWS, rows // 2)
            log.info("out of memory on %s with bands of %d rows; retrying with %d", self.device, rows,
                     self.band_rows)
            return 1
        if self.device.type == "cuda":
            message = (f"CUDA ran out of memory even for one slice in bands of {rows} rows ({exc}); "
                       "continuing on the CPU, which is slower")
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            log.warning(message)
            self._set_device(torch.device("cpu"))
            return 1
        raise MemoryError(f"out of memory on the CPU even for one slice in bands of {rows} rows; "
                          "close other programs or use a machine with more memory") from exc
