"""Valid 2-D cross-correlation through FFT: the arithmetic shared by inference's cached `FFTConv2d`
and training's differentiable output layer.

Why: the output layer's 21x21 kernel over 224 maps to 4 classes is the costliest part of a
TwoPathCNN step done directly (oneDNN has no efficient form for 4 output channels, and bfloat16
does not help it), while through FFT it is a few transforms and a per-frequency channel mix.
Results are float32, equal to the direct convolution up to FFT rounding.
"""
from __future__ import annotations

from typing import Optional

import torch


def fft_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c 7^d >= n (transform lengths the FFT libraries do fastest)."""
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def kernel_spectrum(weight: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """Conjugate spectrum of kernels (out, in, kh, kw) for an `fh x fw` transform,
    `(in, out, fh*(fw//2+1))` complex64 (`mix_channels`' layout).  The kernels are zero-padded in that
    order and transformed in place of layout: the spectrum (up to a few hundred MB) is never transposed
    (an axis-by-axis transform of the kernels alone copied it three times, most of a case's preparation)."""
    out_channels, in_channels, kh, kw = weight.shape
    padded = torch.zeros((in_channels, out_channels, fh, fw), dtype=torch.float32, device=weight.device)
    padded[..., :kh, :kw] = weight.transpose(0, 1)
    spec = torch.fft.rfft2(padded)  # (in, out, fh, fw//2+1)
    del padded
    return spec.conj_physical_().view(in_channels, out_channels, -1)


def mix_channels(xs: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
    """Per frequency, the (n, in) spectra `xs` (n, in, freqs) times the (in, out) matrix of `spec`
    (in, out, freqs), summed over the input channels: (n, out, freqs).

    One multiply-add per input channel over contiguous rows, in a fixed order: the spectrum (up to a few
    hundred MB) is read once, in order.  A batched matrix product per frequency of one slice's (1, in)
    rows needs both operands transposed first and ran 1.6x slower on the CPU (docs/speed.md)."""
    n, in_channels, freqs = xs.shape
    out = torch.zeros((n, spec.shape[1], freqs), dtype=spec.dtype, device=xs.device)
    for c in range(in_channels):
        out.addcmul_(xs[:, c:c + 1], spec[c])
    return out


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`F.conv2d(x, weight, bias)` (valid, stride 1) through FFT, differentiable in all three; float32
    even under a bfloat16 autocast (the transforms have no bfloat16 form)."""
    kh, kw = weight.shape[-2:]
    h, w = x.shape[-2:]
    if h < kh or w < kw:
        raise ValueError(f"input {h}x{w} is smaller than the {kh}x{kw} kernel")
    with torch.autocast(x.device.type, enabled=False):
        zero = torch.zeros(weight.shape[0], device=x.device)
        return _Correlation.apply(x.float(), weight.float(), zero if bias is None else bias.float())


class _Correlation(torch.autograd.Function):
    """Valid cross-correlation with hand-written gradients, all in the frequency domain (autograd's
    own gradient of rfft pads to complex transforms and copies, several times slower).  With X, W, G
    the real transforms of input, kernels and output gradient on one `fh x fw` grid (no index wraps
    around: every correlation and convolution here is shorter than the grid):
    y = irfft(X conj(W)), dx = irfft(G W) (a full convolution), dW = irfft(X conj(G)) at lags < k."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        n, c, h, w = x.shape
        out, _, kh, kw = weight.shape
        grid = (fft_length(h), fft_length(w))
        xf = torch.fft.rfft2(x.permute(0, 2, 3, 1), s=grid, dim=(1, 2))  # (n, fh, fw//2+1, c)
        half = xf.shape[1:3]
        xf = xf.reshape(n, -1, c).transpose(0, 1).contiguous()  # (freqs, n, c)
        wf = torch.fft.rfft2(weight.permute(2, 3, 1, 0), s=grid, dim=(0, 1)).reshape(-1, c, out)  # (freqs, c, out)
        y = _inverse(torch.bmm(xf, wf.conj().resolve_conj()), n, half, grid)[:, :h - kh + 1, :w - kw + 1] + bias
        ctx.save_for_backward(xf, wf)
        ctx.sizes = (h, w, kh, kw, half, grid)
        return y.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        xf, wf = ctx.saved_tensors
        h, w, kh, kw, half, grid = ctx.sizes
        n, out = grad.shape[:2]
        gf = torch.fft.rfft2(grad.permute(0, 2, 3, 1), s=grid, dim=(1, 2)).reshape(n, -1, out).transpose(0, 1)
        gf = gf.contiguous()  # (freqs, n, out): bmm of strided complex operands falls back to a slow loop
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _inverse(torch.bmm(gf, wf.transpose(1, 2).contiguous()), n, half, grid)[:, :h, :w].permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            dwf = torch.bmm(xf.transpose(1, 2).contiguous(), gf.conj().resolve_conj())  # (freqs, c, out)
            dw = torch.fft.irfft2(dwf.reshape(*half, *dwf.shape[1:]), s=grid, dim=(0, 1))[:kh, :kw]
            dw = dw.permute(3, 2, 0, 1)
        if ctx.needs_input_grad[2]:
            db = grad.sum(dim=(0, 2, 3))
        return dx, dw, db


def _inverse(spectrum: torch.Tensor, n: int, half: tuple, grid: tuple) -> torch.Tensor:
    """(freqs, n, channels) spectra back to (n, fh, fw, channels) images."""
    return torch.fft.irfft2(spectrum.transpose(0, 1).reshape(n, *half, spectrum.shape[-1]), s=grid, dim=(1, 2))
