"""The networks of Havaei et al. (2017): layers and shapes only.

Every model is fully convolutional with valid convolutions: an input of
`receptive_field + n - 1` pixels a side gives `n x n` outputs, so the same
module scores one patch (n = 1) or a whole padded slice (dense inference).
Every `forward` takes `(batch, channels, H, W)` float32 and returns
log-probabilities `(batch, num_classes, H - rf + 1, W - rf + 1)`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from . import spectral

INIT_BOUND = 0.005  # kernels start U(-0.005, 0.005), biases 0 (paper, Training)
LOCAL_CHANNELS = 64
GLOBAL_CHANNELS = 160
OUTPUT_KERNEL = 21


def margins(receptive_field: int) -> Tuple[int, int]:
    """Pixels of context before and after an output pixel, per axis: (left, right); an even field (the
    56 of LocalCascadeCNN) has one more after."""
    left = (receptive_field - 1) // 2
    return left, receptive_field - 1 - left


class MaxoutConv(nn.Module):
    """Valid KxK convolution to `channels * pieces` maps, Maxout over the pieces,
    then max pooling with stride 1 (pooling never subsamples)."""

    def __init__(self, in_channels: int, channels: int, kernel: int, pool: int = 1, pieces: int = 2):
        super().__init__()
        self.channels, self.pieces, self.pool = channels, pieces, pool
        self.conv = nn.Conv2d(in_channels, channels * pieces, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        n, _, h, w = y.shape
        y = _Maxout.apply(y, self.pieces)
        return F.max_pool2d(y, self.pool, stride=1) if self.pool > 1 else y


class _Maxout(torch.autograd.Function):
    """Maximum over the `pieces` consecutive channels of each map, keeping the input's memory layout.

    Why not `amax` over a (n, C, K, h, w) view: the reduction returns the default layout (pooling and
    the next convolution then run several times slower on channels-last tensors) and its backward,
    which splits ties, was the costliest part of a training step.  Here the winning piece (the first
    on ties) is kept as bytes and the gradient is written straight into its strided channels."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, pieces: int) -> torch.Tensor:
        best, winner = y[:, 0::pieces], None
        for k in range(1, pieces):
            piece = y[:, k::pieces]
            if ctx.needs_input_grad[0]:  # the winners only matter to a gradient (not in a frozen network)
                better = piece > best
                winner = better.to(torch.uint8) if winner is None else winner.masked_fill_(better, k)
            best = torch.maximum(best, piece)
        ctx.save_for_backward(winner)
        ctx.pieces = pieces
        return best

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (winner,) = ctx.saved_tensors
        k_all = ctx.pieces
        n, c, h, w = grad.shape
        layout = torch.channels_last if grad.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty((n, c * k_all, h, w), dtype=grad.dtype, device=grad.device, memory_format=layout)
        for k in range(k_all):
            torch.mul(grad, winner == k, out=out[:, k::k_all])
        return out, None


class OutputConv(nn.Conv2d):
    """The 21x21 output convolution; with `spectral = True` (training sets it) it is computed through FFT in
    training mode: the same values, several times faster forward and backward on a training batch's small
    windows (see `spectral`).  Evaluation (validation, a cascade's frozen first network) stays direct: on
    whole slices the kernels' spectra at the slice's size cost more than they save without a cache
    (`fastconv` caches them for inference)."""

    spectral = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spectral and self.training:
            return spectral.conv2d(x, self.weight, self.bias)
        return super().forward(x)


class LocalPath(nn.Module):
    """7x7 conv + Maxout + 4x4 pool, then 3x3 conv + Maxout + 2x2 pool: 33 -> 21.

    `extra_channels` are maps concatenated to the first hidden layer
    (LocalCascadeCNN)."""

    def __init__(self, in_channels: int, pieces: int, extra_channels: int = 0):
        super().__init__()
        self.layer1 = MaxoutConv(in_channels, LOCAL_CHANNELS, 7, pool=4, pieces=pieces)
        self.layer2 = MaxoutConv(LOCAL_CHANNELS + extra_channels, LOCAL_CHANNELS, 3, pool=2, pieces=pieces)

    def forward(self, x: torch.Tensor, extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.layer1(x)
        if extra is not None:
            h = torch.cat([h, extra], dim=1)
        return self.layer2(h)


class GlobalPath(nn.Module):
    """13x13 conv + Maxout, no pooling: 33 -> 21."""

    def __init__(self, in_channels: int, pieces: int):
        super().__init__()
        self.layer1 = MaxoutConv(in_channels, GLOBAL_CHANNELS, 13, pool=1, pieces=pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(x)


class TwoPathCNN(nn.Module):
    """Local and global paths concatenated (224 maps), 21x21 output conv, softmax.

    `paths` selects the ablations of Table 1; `local_extra` / `pre_output_extra`
    are the channels a cascade's first network injects into the local path's
    first hidden layer / right before the output layer.
    """

    receptive_field = 33
    paths: Sequence[str] = ("local", "global")

    def __init__(self, in_channels: int = 4, num_classes: int = 5, pieces: int = 2, dropout: float = 0.0,
                 local_extra: int = 0, pre_output_extra: int = 0):
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.local = LocalPath(in_channels, pieces, local_extra) if "local" in self.paths else None
        self.global_ = GlobalPath(in_channels, pieces) if "global" in self.paths else None
        features = (LOCAL_CHANNELS if self.local else 0) + (GLOBAL_CHANNELS if self.global_ else 0)
        self.dropout = nn.Dropout(dropout)
        self.output = OutputConv(features + pre_output_extra, num_classes, OUTPUT_KERNEL)
        paper_init_(self)

    def features(self, x: torch.Tensor, local_extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        maps = []
        if self.local is not None:
            maps.append(self.local(x, local_extra))
        if self.global_ is not None:
            maps.append(self.global_(x))
        return torch.cat(maps, dim=1) if len(maps) > 1 else maps[0]

    def forward(self, x: torch.Tensor, local_extra: Optional[torch.Tensor] = None,
                pre_output_extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.features(x, local_extra)
        if pre_output_extra is not None:
            h = torch.cat([h, pre_output_extra], dim=1)
        return F.log_softmax(self.output(self.dropout(h)), dim=1)


class LocalPathCNN(TwoPathCNN):
    """The local path alone (Table 1)."""

    paths = ("local",)


class GlobalPathCNN(TwoPathCNN):
    """The global path alone (Table 1)."""

    paths = ("global",)


class SliceStackCNN(TwoPathCNN):
    """Ours (issue 33, item 5): a TwoPathCNN whose local path also reads the slices `slice_offsets` away
    above and below, the global path the centre slice alone.  Why: the misses left are tumor ends on
    thick-slice scans and regions a single axial slice does not tell apart; through-plane context costs
    only the local path's first layer (7 % more multiply-adds than a TwoPathCNN per dense pixel), where
    widening the 13x13 global path as well would cost about 1.6 times.  Its input holds `in_channels`
    modalities per offset, offset by offset (network.slice_stack builds it for training and inference)."""

    slice_offsets: Tuple[int, ...] = (-3, 0, 3)

    def __init__(self, in_channels: int = 4, num_classes: int = 5, pieces: int = 2, dropout: float = 0.0):
        super().__init__(in_channels, num_classes, pieces, dropout)
        self.local = LocalPath(in_channels * len(self.slice_offsets), pieces)
        paper_init_(self.local)

    def features(self, x: torch.Tensor, local_extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        centre = self.slice_offsets.index(0) * self.in_channels
        return torch.cat([self.local(x), self.global_(x[:, centre:centre + self.in_channels])], dim=1)


class AverageCNN(nn.Module):
    """Mean of the probabilities of separately trained LocalPathCNN and GlobalPathCNN."""

    receptive_field = 33

    def __init__(self, in_channels: int = 4, num_classes: int = 5, pieces: int = 2, dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.local_model = LocalPathCNN(in_channels, num_classes, pieces, dropout)
        self.global_model = GlobalPathCNN(in_channels, num_classes, pieces, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = torch.stack([self.local_model(x), self.global_model(x)])
        return torch.logsumexp(both, dim=0) - math.log(2.0)


class EnsembleCNN(nn.Module):
    """Mean of the probabilities of several TwoPathCNNs, each trained on other cases (the folds of a
    cross-validation run, as nnU-Net ships its folds): learning.ensemble assembles it, it is not trained."""

    member_class: type = TwoPathCNN
    receptive_field = TwoPathCNN.receptive_field

    def __init__(self, in_channels: int = 4, num_classes: int = 5, pieces: int = 2, dropout: float = 0.0,
                 members: int = 4):
        super().__init__()
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, not {members}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.members = nn.ModuleList(self.member_class(in_channels, num_classes, pieces, dropout)
                                     for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        each = torch.stack([member(x) for member in self.members])
        return torch.logsumexp(each, dim=0) - math.log(len(self.members))


class CascadeCNN(nn.Module):
    """A frozen TwoPathCNN (`first`) whose probability maps feed a second TwoPathCNN.

    `offset` is where the second network's 33x33 input sits inside the larger
    patch, chosen so both networks are centred on the same pixel (to half a
    pixel for the even-sized LocalCascadeCNN patch).

    An input of `in_channels + num_classes` channels carries the first network's
    maps already computed at every pixel (training: learning/first_stage.py);
    they are used instead of running the first network.
    """

    receptive_field: int
    offset: int

    def __init__(self, in_channels: int = 4, num_classes: int = 5, pieces: int = 2, dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.first = TwoPathCNN(in_channels, num_classes, pieces, dropout)
        self.second = self._second(in_channels, num_classes, pieces, dropout)
        self.first_frozen = False

    def _second(self, in_channels: int, num_classes: int, pieces: int, dropout: float) -> TwoPathCNN:
        raise NotImplementedError

    def freeze_first(self) -> None:
        """Fix the first network (cascade training trains only the second)."""
        self.first_frozen = True
        self.first.requires_grad_(False)
        self.first.eval()

    def train(self, mode: bool = True) -> "CascadeCNN":
        super().train(mode)
        if self.first_frozen:
            self.first.eval()
        return self

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        """The images (given maps left out) where the second network reads them."""
        size = x.shape[-1] - (self.receptive_field - TwoPathCNN.receptive_field)
        height = x.shape[-2] - (self.receptive_field - TwoPathCNN.receptive_field)
        o = self.offset
        return x[:, :self.in_channels, o:o + height, o:o + size]

    def first_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The first network's probabilities at every pixel its 33x33 window fits: computed, or the maps the
        input carries (cut to the same pixels)."""
        if x.shape[1] == self.in_channels:
            return self.first(x).exp()
        left, right = margins(TwoPathCNN.receptive_field)
        return x[:, self.in_channels:, left:x.shape[-2] - right, left:x.shape[-1] - right]


class InputCascadeCNN(CascadeCNN):
    """First CNN's 5x33x33 maps concatenated to the second's 4x33x33 input (65 -> 1)."""

    receptive_field, offset = 65, 16

    def _second(self, in_channels, num_classes, pieces, dropout):
        return TwoPathCNN(in_channels + num_classes, num_classes, pieces, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.cat([self._crop(x), self.first_probabilities(x)], dim=1))


class LocalCascadeCNN(CascadeCNN):
    """First CNN's 5x24x24 maps concatenated to the local path's first hidden layer (56 -> 1)."""

    receptive_field, offset = 56, 11

    def _second(self, in_channels, num_classes, pieces, dropout):
        return TwoPathCNN(in_channels, num_classes, pieces, dropout, local_extra=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self._crop(x), local_extra=self.first_probabilities(x))


class MFCascadeCNN(CascadeCNN):
    """First CNN's 5x21x21 maps concatenated right before the output layer (53 -> 1)."""

    receptive_field, offset = 53, 10

    def _second(self, in_channels, num_classes, pieces, dropout):
        return TwoPathCNN(in_channels, num_classes, pieces, dropout, pre_output_extra=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self._crop(x), pre_output_extra=self.first_probabilities(x))


class CascadeEnsembleCNN(EnsembleCNN):
    """Mean of the probabilities of several InputCascadeCNNs, the folds of a cross-validation run of the
    cascade (each one's first network the TwoPathCNN of the same fold of EnsembleCNN's run)."""

    member_class = InputCascadeCNN
    receptive_field = InputCascadeCNN.receptive_field


def paper_init_(module: nn.Module) -> None:
    """Kernels U(-0.005, 0.005), biases 0 (the paper's initialisation)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.uniform_(m.weight, -INIT_BOUND, INIT_BOUND)
            nn.init.zeros_(m.bias)


def output_layers(model: nn.Module) -> list:
    """The output convolution(s) phase 2 retrains: the second network's for a
    cascade, both single paths' for AverageCNN."""
    if isinstance(model, CascadeCNN):
        return [model.second.output]
    if isinstance(model, AverageCNN):
        return [model.local_model.output, model.global_model.output]
    return [model.output]
