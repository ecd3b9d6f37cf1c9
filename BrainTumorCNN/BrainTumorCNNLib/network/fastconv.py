"""Exact speed-ups for dense inference: FFT convolution for large kernels.

`FFTConv2d` computes what a valid, stride-1 `nn.Conv2d` computes, through
`torch.fft`: the spectrum of the kernels is computed once per FFT size and
device and cached, so a volume's slices (all cropped to one size) pay for it
once.  Results are float32 and equal the direct convolution to float32
rounding of the FFT (about 1e-6 relative to the output's scale).

`prepare(model, input_shape)` returns a copy of a model in which every large
kernel convolution is replaced by its FFT form where that is faster *on the
device at the size it will actually see*: both forms of each candidate layer
are timed once (on one row band of one slice at the layer's real width) and the
faster is kept.  The decision is cached per layer shape, input size and
device.  The original model is never modified.

Why: a 21x21 output convolution over 224 maps costs 224*5*441 multiply-adds
per pixel directly; through FFT it is a few transforms plus 224*5 complex
multiply-adds per frequency, and the weights' spectra are shared by every
slice of the batch.  On a 2-core CPU this takes the output layer from about
two thirds of a TwoPathCNN slice to a small part of it.  The 13x13 global-path
convolution over 4 input channels is usually faster direct (its 320 inverse
transforms cost as much as the convolution) but over the 9 input channels of
the InputCascadeCNN's second network FFT wins; the timing decides.
"""
from __future__ import annotations

import copy
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from . import networks
from .spectral import correlate_channels_last, fft_length, kernel_spectrum

#: Kernels smaller than this are always left direct (3x3 and 7x7 never win by FFT).
MIN_FFT_KERNEL = 9
#: Output rows of the band on which direct and FFT forms are timed.
TIMING_ROWS = 32
#: Spectra kept per layer (one per input size): a volume is processed group by
#: group, each group at one size, so one is enough and keeps memory low.
SPECTRUM_CACHE = 1
#: FFT is chosen only when it takes at most this fraction of the direct time:
#: its cached spectra cost memory (up to a few hundred MB per layer), so a
#: marginal gain is not worth it.
FFT_ADVANTAGE = 0.85


class FFTConv2d(nn.Module):
    """A valid, stride-1, dilation-1, ungrouped `nn.Conv2d`, computed through FFT.

    Input `(batch, in_channels, H, W)` float32, output
    `(batch, out_channels, H - k + 1, W - k + 1)` float32, equal to the direct
    convolution up to FFT rounding.  The conjugate spectrum of the kernels is
    cached per (FFT size, device) as `(frequencies, in_channels, out_channels)`
    complex64, so the per-frequency channel mixing of a whole batch is one
    batched matrix product.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if (conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1
                or conv.padding not in ((0, 0), "valid")):
            raise ValueError("FFTConv2d replaces valid, stride-1, dilation-1, ungrouped convolutions only")
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = (nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
                     if conv.bias is not None else None)
        self.out_channels, self.in_channels, self.kh, self.kw = self.weight.shape
        self._spectra: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=({self.kh}, {self.kw}), fft=True"

    def spectrum(self, fh: int, fw: int, device: torch.device) -> torch.Tensor:
        """Conjugate kernel spectrum for an `fh x fw` transform, `(fh*(fw//2+1), in, out)` complex64."""
        key = (fh, fw, str(device))
        cached = self._spectra.get(key)
        if cached is not None:
            self._spectra.move_to_end(key)
            return cached
        spec = kernel_spectrum(self.weight.to(device=device, dtype=torch.float32), fh, fw)
        self._spectra[key] = spec
        while len(self._spectra) > SPECTRUM_CACHE:
            self._spectra.popitem(last=False)
        return spec

    def _transform_size(self, h: int, w: int, device: torch.device) -> Tuple[int, int]:
        """A cached transform size that holds an h x w input (more zero padding
        leaves the valid outputs unchanged), else the smallest fast one: the
        slices of a volume come in crops of several sizes, and recomputing the
        kernel spectra for each would cost more than the larger transforms."""
        for fh, fw, where in self._spectra:
            if fh >= h and fw >= w and where == str(device):
                return fh, fw
        return fft_length(h), fft_length(w)

    def clear_cache(self) -> None:
        self._spectra.clear()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 even under a bfloat16 autocast (inference's precision option): the transforms and the
        # complex channel mixing have no bfloat16 form, and they are not where bfloat16 gains
        with torch.autocast(x.device.type, enabled=False):
            return self._forward(x.float())

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {c}")
        oh, ow = h - self.kh + 1, w - self.kw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"input {h}x{w} is smaller than the {self.kh}x{self.kw} kernel")
        fh, fw = self._transform_size(h, w, x.device)
        spec = self.spectrum(fh, fw, x.device)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return self._forward_channels_last(x, fh, fw, spec)
        freqs = spec.shape[0]
        # Correlation theorem: valid cross-correlation = irfft(X * conj(K)), read at [0:oh, 0:ow]
        # (indices below fh - kh + 1 never wrap around).
        # One copy pads to the transform size and makes the layout contiguous
        # (rfft2's own padding would copy twice for a channels-last input).
        padded = torch.empty((n, c, fh, fw), dtype=torch.float32, device=x.device)
        padded[..., :h, :w] = x
        padded[..., h:, :] = 0
        padded[..., :h, w:] = 0
        xs = torch.fft.rfft2(padded)  # (n, c, fh, fw//2+1)
        del padded
        xs = xs.reshape(n * c, freqs).t().contiguous().view(freqs, n, c)
        ys = torch.bmm(xs, spec)  # (freqs, n, out)
        del xs
        if self.bias is not None:
            # A constant added everywhere is fh*fw times itself at frequency (0, 0).
            ys[0] += self.bias.to(ys.dtype) * (fh * fw)
        ys = ys.view(freqs, n * self.out_channels).t().reshape(n, self.out_channels, fh, fw // 2 + 1)
        return torch.fft.irfft2(ys, s=(fh, fw))[..., :oh, :ow]

    def _forward_channels_last(self, x: torch.Tensor, fh: int, fw: int, spec: torch.Tensor) -> torch.Tensor:
        """The same on a channels-last input, none of the layout copies around the channel mixing needed
        (TwoPathCNN's output layer measured 15-35 % faster on the CPU)."""
        return correlate_channels_last(x, spec, self.bias, (self.kh, self.kw), (fh, fw))


class FastMaxoutConv(nn.Module):
    """`networks.MaxoutConv` rearranged for inference, computing the same values.

    The convolution's output channels are reordered piece-major (all first
    pieces, then all second pieces, ...), so Maxout is an element-wise maximum
    of contiguous channel blocks instead of a strided reduction; pooling uses
    the native kernel on channels-last tensors and separable shifted maxima
    otherwise (max is exact, so both equal `F.max_pool2d`).  `conv` may later
    be swapped for an `FFTConv2d`.
    """

    def __init__(self, layer: networks.MaxoutConv):
        super().__init__()
        self.channels, self.pieces, self.pool = layer.channels, layer.pieces, layer.pool
        src = layer.conv
        conv = nn.Conv2d(src.in_channels, src.out_channels, src.kernel_size, bias=src.bias is not None)
        order = torch.arange(src.out_channels).view(self.channels, self.pieces).t().reshape(-1)
        with torch.no_grad():
            conv.weight.copy_(src.weight[order])
            if src.bias is not None:
                conv.bias.copy_(src.bias[order])
        self.conv = conv.to(src.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        c = self.channels
        out = y[:, :c]
        for k in range(1, self.pieces):
            out = torch.maximum(out, y[:, k * c:(k + 1) * c])
        if self.pool > 1:
            if out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous():
                out = F.max_pool2d(out, self.pool, stride=1)
            else:
                out = max_pool_stride1(out, self.pool)
        return out


def max_pool_stride1(x: torch.Tensor, size: int) -> torch.Tensor:
    """`F.max_pool2d(x, size, stride=1)` as separable maxima of shifted views
    (log2(size) element-wise maxima per axis; exact)."""
    for dim in (-2, -1):
        width = 1
        while width < size:
            shift = min(width, size - width)
            n = x.shape[dim] - shift
            x = torch.maximum(x.narrow(dim, 0, n), x.narrow(dim, shift, n))
            width += shift
    return x


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    """Seconds of one run after one warm-up run (which also fills caches)."""
    fn()
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - start


@dataclass(frozen=True)
class LayerChoice:
    """What `prepare` decided for one convolution."""

    name: str
    kernel: int
    in_channels: int
    out_channels: int
    input_size: Tuple[int, int]
    direct_s: Optional[float]  # one timed run on a band of TIMING_ROWS output rows
    fft_s: Optional[float]
    use_fft: bool


#: Decisions already timed: (in, out, kernel, H, W, batch, channels_last, device) -> (use FFT, times).
_DECISIONS: Dict[tuple, Tuple[bool, Optional[float], Optional[float]]] = {}


def fft_eligible(conv: nn.Conv2d) -> bool:
    """Valid, stride-1, ungrouped convolutions with kernels of at least MIN_FFT_KERNEL."""
    return (min(conv.kernel_size) >= MIN_FFT_KERNEL and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding in ((0, 0), "valid") and conv.padding_mode == "zeros")


def choose(conv: nn.Conv2d, input_shape: Sequence[int], device="cpu",
           channels_last: bool = False) -> Tuple[bool, Optional[float], Optional[float]]:
    """Whether FFT beats direct for `conv` on inputs `(batch, C, H, W)` on `device`.

    Both forms are timed once, on one slice of the real width and a band of
    TIMING_ROWS output rows (direct time is linear in rows and slices; FFT
    time a little more than linear in rows and a little less in slices, which
    share the kernels' spectrum), with random input; returns
    (use_fft, direct_s, fft_s).  Cached per layer shape, size and device."""
    device = torch.device(device)
    batch, _, h, w = (int(v) for v in input_shape)
    batch = 1
    k = conv.kernel_size[0]
    key = (conv.in_channels, conv.out_channels, tuple(conv.kernel_size), h, w, batch, channels_last, str(device))
    if key not in _DECISIONS:
        if not fft_eligible(conv):
            _DECISIONS[key] = (False, None, None)
        else:
            x = torch.randn(batch, conv.in_channels, min(h, TIMING_ROWS + k - 1), w, device=device)
            direct = copy.deepcopy(conv).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
                direct = direct.to(memory_format=torch.channels_last)
            fft = FFTConv2d(conv).to(device)
            with torch.inference_mode():
                direct_s = _time(lambda: direct(x), device)
                fft_s = _time(lambda: fft(x), device)
            _DECISIONS[key] = (fft_s < FFT_ADVANTAGE * direct_s, direct_s, fft_s)
    return _DECISIONS[key]


def conv_input_shapes(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, Tuple[int, int, int, int]]:
    """Input shape `(batch, C, H, W)` of every `nn.Conv2d` of `model` (by
    qualified name) for an input of `input_shape`.

    The networks use only valid convolutions and stride-1 pooling, so each
    layer's input is the model's input less a fixed number of rows and
    columns: one forward pass on a small input finds those numbers."""
    batch, channels, h, w = (int(v) for v in input_shape)
    rf = int(getattr(model, "receptive_field", 1))
    small_h, small_w = rf + 1, rf + 2
    seen: Dict[str, torch.Size] = {}
    hooks = [module.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0].shape))
             for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            model(torch.zeros(1, channels, small_h, small_w, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: (batch, int(s[1]), h - (small_h - int(s[2])), w - (small_w - int(s[3])))
            for name, s in seen.items()}


def default_channels_last(device) -> bool:
    """Channels-last tensors on CPU (oneDNN's direct convolutions and pooling are
    faster there, measured); the default layout elsewhere."""
    return torch.device(device).type == "cpu"


def prepare(model: nn.Module, input_shape: Sequence[int], device="cpu", conv: str = "auto",
            channels_last: Optional[bool] = None, report: Optional[List[LayerChoice]] = None) -> nn.Module:
    """A copy of `model`, in eval mode on `device`, set up for fast dense inference
    on inputs of `input_shape` `(batch, C, H, W)`; `model` itself is untouched.

    Maxout layers become `FastMaxoutConv`; `conv` = "auto" replaces each
    large-kernel convolution by `FFTConv2d` where timing on the device says it
    is faster at its real input size, "fft" every eligible one, "direct" none.
    With `channels_last` (default: on CPU) the copy's weights are channels-last
    and the caller should pass channels-last input (`prepared_input`).  Each
    convolution's choice is appended to `report` when given.
    """
    if conv not in ("auto", "fft", "direct"):
        raise ValueError(f"conv must be 'auto', 'fft' or 'direct', not {conv!r}")
    device = torch.device(device)
    channels_last = default_channels_last(device) if channels_last is None else channels_last
    fast = copy.deepcopy(model).eval()
    for name, module in list(fast.named_modules()):
        if isinstance(module, networks.MaxoutConv):
            _set_submodule(fast, name, FastMaxoutConv(module))
    fast = fast.to(device)
    fast.requires_grad_(False)
    shapes = conv_input_shapes(fast, input_shape)
    for name, module in list(fast.named_modules()):
        if not isinstance(module, nn.Conv2d) or name not in shapes:
            continue
        direct_s = fft_s = None
        if conv == "auto":
            use_fft, direct_s, fft_s = choose(module, shapes[name], device, channels_last)
        else:
            use_fft = conv == "fft" and fft_eligible(module)
        if report is not None:
            report.append(LayerChoice(name, module.kernel_size[0], module.in_channels, module.out_channels,
                                      tuple(shapes[name][-2:]), direct_s, fft_s, use_fft))
        if use_fft:
            layer = FFTConv2d(module).to(device)
            height, width = shapes[name][-2:]
            layer.spectrum(fft_length(height), fft_length(width), device)  # the largest input's: all smaller fit
            _set_submodule(fast, name, layer)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    fast.channels_last = channels_last
    return fast


def prepared_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`x` in the memory layout `model` (from `prepare`, or a plain model) expects."""
    if getattr(model, "channels_last", False):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
