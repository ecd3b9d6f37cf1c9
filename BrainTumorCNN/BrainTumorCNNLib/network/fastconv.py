"""Exact speed-ups for dense inference: FFT convolution for large kernels.

`FFTConv2d` computes what a valid, stride-1 `nn.Conv2d` computes, through
`torch.fft`: the spectrum of the kernels is computed once per FFT size and
device and cached, so a volume's slices (all cropped to one size) pay for it
once.  Results are float32 and equal the direct convolution to float32
rounding of the FFT (about 1e-6 relative to the output's scale).

`prepare(model, input_shape)` returns a copy of a model in which every large
kernel convolution with enough taps per output channel (`in_channels * kh * kw
>= FFT_MIN_TAPS`) is replaced by its FFT form.  The choice is a fixed rule, not
a timing: a choice timed at preparation differs from run to run on a loaded
machine (the 13x13 global-path convolution is within 15 % either way in
float32), and each flip changes the arithmetic and so a few labels
(docs/speed.md, "Same input, same labels").  The original model is never
modified.

Why: a 21x21 output convolution over 224 maps costs 224*4*441 multiply-adds
per pixel directly; through FFT it is a few transforms plus 224*4 complex
multiply-adds per frequency, and the weights' spectra are shared by every
slice.  On a 2-core CPU this takes the output layer from about two thirds of
a TwoPathCNN slice to a small part of it (2.3 s direct, 0.3 s by FFT on a
whole slice).  The 13x13 global-path convolution over 4 or 8 input channels
is faster direct in bfloat16 (0.07 s against 0.23 s) and about even in
float32 (0.27 s against 0.23 s), so it stays direct.

Every FFT layer transforms at one size, `reserve`d for the largest input it
will see (the largest crop's height and, separately, its width): each slice's
result then depends on the slice alone, not on which crops came before it or
on the other worker thread; the spectrum cache is locked, as the CPU's two
worker threads share the layers.
"""
from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from . import networks
from .spectral import fft_length, kernel_spectrum, mix_channels

#: Kernels smaller than this are always left direct (3x3 and 7x7 never win by FFT).
MIN_FFT_KERNEL = 9
#: Kernel taps per output channel (in_channels * kh * kw) from which FFT is used: the output layers'
#: 21x21 over 224 maps (98,784) are, the global paths' 13x13 over 4 or 8 (676, 1,352) are not
#: (module docstring; timings in docs/speed.md).
FFT_MIN_TAPS = 4096
#: Rows copied at once into an FFT layer's padded input: a channels-last slice's 224 maps, 190x153,
#: converted and transposed in bands of 16 rows took 18 ms against 31 ms at once (one thread).
COPY_ROWS = 16
#: Spectra kept per layer beside the reserved ones, for inputs larger than every reservation (a
#: caller outside `segment_volume`); each costs up to a few hundred MB.
SPECTRUM_CACHE = 1


class FFTConv2d(nn.Module):
    """A valid, stride-1, dilation-1, ungrouped `nn.Conv2d`, computed through FFT.

    Input `(batch, in_channels, H, W)` (any float type and layout), output
    `(batch, out_channels, H - k + 1, W - k + 1)` float32, equal to the direct
    convolution up to FFT rounding.  The conjugate spectrum of the kernels is
    cached per (FFT size, device) as `(in_channels, out_channels, frequencies)`
    complex64, the layout `spectral.mix_channels` reads in one pass.
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
        self.shrink = (0, 0)  # rows and columns the model's layers before this one take off its input (prepare)
        # (fh, fw, device) keys: an input is transformed at the smallest one that holds it
        self._reserved: List[tuple] = []
        self._spectra: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()  # guarded by _lock
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        # a copy gets its own lock and an empty cache (a lock cannot be copied; spectra are rebuilt)
        copied = FFTConv2d.__new__(FFTConv2d)
        nn.Module.__init__(copied)
        copied.weight = nn.Parameter(self.weight.detach().clone(), requires_grad=False)
        copied.bias = nn.Parameter(self.bias.detach().clone(), requires_grad=False) if self.bias is not None else None
        copied.out_channels, copied.in_channels, copied.kh, copied.kw = self.weight.shape
        copied.shrink = self.shrink
        copied._reserved, copied._spectra, copied._lock = [], OrderedDict(), threading.Lock()
        copied.train(self.training)
        memo[id(self)] = copied
        return copied

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=({self.kh}, {self.kw}), fft=True"

    def spectrum(self, fh: int, fw: int, device: torch.device) -> torch.Tensor:
        """Conjugate kernel spectrum for an `fh x fw` transform, `(in, out, fh*(fw//2+1))` complex64;
        computed once per size and device (the reserved ones are kept, SPECTRUM_CACHE others)."""
        key = (fh, fw, str(device))
        with self._lock:  # the worker threads share this layer: one computes, the other waits for it
            cached = self._spectra.get(key)
            if cached is not None:
                self._spectra.move_to_end(key)
                return cached
            spec = kernel_spectrum(self.weight.to(device=device, dtype=torch.float32), fh, fw)
            self._spectra[key] = spec
            others = [k for k in self._spectra if k not in self._reserved]
            for old in others[:max(0, len(others) - SPECTRUM_CACHE)]:
                del self._spectra[old]
            return spec

    def reserve(self, h: int, w: int, device: torch.device, add: bool = False) -> Tuple[int, int]:
        """Transform every later input of at most h x w at the size that holds h x w (more zero padding
        leaves the valid outputs unchanged), so a slice's result does not depend on the crops before
        it; the spectrum is computed now.  The previous reservations are dropped, or with `add` kept:
        an input then takes the smallest reserved size that holds it (smaller crops, cheaper transforms).
        Returns the size."""
        fh, fw = fft_length(h), fft_length(w)
        key = (fh, fw, str(device))
        with self._lock:
            if not add and self._reserved != [key]:
                self._spectra.clear()
                self._reserved = []
            if key not in self._reserved:
                self._reserved.append(key)
        self.spectrum(fh, fw, device)
        return fh, fw

    def _transform_size(self, h: int, w: int, device: torch.device) -> Tuple[int, int]:
        """The smallest reserved transform size that holds an h x w input, else the smallest fast one for
        it; without a reservation the first input's size is reserved (crops come in several sizes, and
        recomputing the kernel spectra for each would cost more than the larger transforms)."""
        with self._lock:
            if not self._reserved:
                self._reserved = [(fft_length(h), fft_length(w), str(device))]
            holding = [(fh * fw, fh, fw) for fh, fw, where in self._reserved
                       if fh >= h and fw >= w and where == str(device)]
        if holding:
            return min(holding)[1:]
        return fft_length(h), fft_length(w)

    def clear_cache(self) -> None:
        """Drop every spectrum and the reservation (memory between cases)."""
        with self._lock:
            self._spectra.clear()
            self._reserved = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 even under a bfloat16 autocast (inference's precision option): the transforms and the
        # complex channel mixing have no bfloat16 form, and they are not where bfloat16 gains
        with torch.autocast(x.device.type, enabled=False):
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {c}")
        oh, ow = h - self.kh + 1, w - self.kw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"input {h}x{w} is smaller than the {self.kh}x{self.kw} kernel")
        fh, fw = self._transform_size(h, w, x.device)
        spec = self.spectrum(fh, fw, x.device)
        # Correlation theorem: valid cross-correlation = irfft(X * conj(K)), read at [0:oh, 0:ow]
        # (indices below fh - kh + 1 never wrap around).  One copy pads to the transform size, makes the
        # layout contiguous and float32 (rfft2 over a channels-last view's strided axes ran 4x slower), in
        # bands of rows whose transposes stay in cache (COPY_ROWS).
        padded = torch.empty((n, c, fh, fw), dtype=torch.float32, device=x.device)
        for r0 in range(0, h, COPY_ROWS):
            r1 = min(h, r0 + COPY_ROWS)
            padded[..., r0:r1, :w] = x[..., r0:r1, :]
        padded[..., h:, :] = 0
        padded[..., :h, w:] = 0
        xs = torch.fft.rfft2(padded).view(n, c, -1)  # (n, c, freqs)
        del padded
        ys = mix_channels(xs, spec)  # (n, out, freqs)
        del xs
        if self.bias is not None:
            # A constant added everywhere is fh*fw times itself at frequency (0, 0).
            ys[:, :, 0] += self.bias.to(ys.dtype) * (fh * fw)
        return torch.fft.irfft2(ys.view(n, self.out_channels, fh, fw // 2 + 1), s=(fh, fw))[..., :oh, :ow]


class FastMaxoutConv(nn.Module):
    """`networks.MaxoutConv` rearranged for inference, computing the same values.

    The convolution's output channels are reordered piece-major (all first
    pieces, then all second pieces, ...), so Maxout is an element-wise maximum
    of contiguous channel blocks instead of a strided reduction; pooling is
    separable shifted maxima (exact, so equal to `F.max_pool2d`; on channels-last
    bfloat16 maps 3-5x faster than its native kernel, which pools each window
    whole).  `conv` may later be swapped for an `FFTConv2d`.
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


@dataclass(frozen=True)
class LayerChoice:
    """What `prepare` decided for one convolution."""

    name: str
    kernel: int
    in_channels: int
    out_channels: int
    input_size: Tuple[int, int]  # at the input_shape `prepare` was given
    use_fft: bool


def fft_eligible(conv: nn.Conv2d) -> bool:
    """Valid, stride-1, ungrouped convolutions with kernels of at least MIN_FFT_KERNEL."""
    return (min(conv.kernel_size) >= MIN_FFT_KERNEL and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding in ((0, 0), "valid") and conv.padding_mode == "zeros")


def prefers_fft(conv: nn.Conv2d) -> bool:
    """The fixed rule of conv="auto": FFT for an eligible convolution of at least FFT_MIN_TAPS taps
    per output channel (the same answer on every run, unlike a timing)."""
    return fft_eligible(conv) and conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] >= FFT_MIN_TAPS


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
    on inputs of up to `input_shape` `(batch, C, H, W)` (H the largest height, W the largest width
    it will see, which may come from different crops); `model` itself is untouched.

    Maxout layers become `FastMaxoutConv`; `conv` = "auto" replaces each large-kernel convolution
    that `prefers_fft` by `FFTConv2d`, "fft" every eligible one, "direct" none; each FFT layer is
    `reserve`d for its input at `input_shape` (`fit` reserves another size later).
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
    batch, _, height, width = (int(v) for v in input_shape)
    shapes = conv_input_shapes(fast, input_shape)
    for name, module in list(fast.named_modules()):
        if not isinstance(module, nn.Conv2d) or name not in shapes:
            continue
        use_fft = prefers_fft(module) if conv == "auto" else conv == "fft" and fft_eligible(module)
        if report is not None:
            report.append(LayerChoice(name, module.kernel_size[0], module.in_channels, module.out_channels,
                                      tuple(shapes[name][-2:]), use_fft))
        if use_fft:
            layer = FFTConv2d(module).to(device)
            h, w = shapes[name][-2:]
            layer.shrink = (height - h, width - w)  # rows and columns the layers before it take off
            layer.reserve(h, w, device)
            _set_submodule(fast, name, layer)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    fast.channels_last = channels_last
    return fast


def fit(prepared: nn.Module, height: int, width: int, add: bool = False) -> None:
    """Reserve every FFT layer of a `prepare`d model for model inputs of up to height x width (the
    next volume's largest crop), so that each slice's result depends on that volume alone; with `add`
    beside the sizes reserved before (a volume's smaller crops, FFTConv2d.reserve)."""
    for module in prepared.modules():
        if isinstance(module, FFTConv2d):
            dh, dw = module.shrink
            module.reserve(height - dh, width - dw, module.weight.device, add=add)


def release(prepared: nn.Module) -> None:
    """Drop the kernel spectra of a `prepare`d model (up to a few hundred MB a layer) until `fit`."""
    for module in prepared.modules():
        if isinstance(module, FFTConv2d):
            module.clear_cache()


def prepared_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`x` in the memory layout `model` (from `prepare`, or a plain model) expects."""
    if getattr(model, "channels_last", False):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
