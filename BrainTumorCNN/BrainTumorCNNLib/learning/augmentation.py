"""Training augmentation that imitates other scanners and protocols, on batches of patches (torch, any device).

Works on preprocessed (z-scored) patches.  Intensity changes act on brain
pixels only (background stays BACKGROUND_VALUE).  A multiplicative bias field
is applied about BACKGROUND_VALUE, which stands in for zero signal: with
brain z-scores of mean 0 and sd 1 and raw intensities whose mean is about
four sd above zero, z -> b (z - BACKGROUND_VALUE) + BACKGROUND_VALUE is what
multiplying the raw image by b does after the z-score.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F

from ..preparing.preprocessing import BACKGROUND_VALUE


@dataclass(frozen=True)
class AugmentationConfig:
    enabled: bool = False
    scale: float = 0.15  # per-modality contrast factor in [1 - scale, 1 + scale]
    shift: float = 0.2  # per-modality offset (z-score units) in [-shift, shift]
    gamma: float = 0.3  # per-modality gamma in [1/(1+gamma), 1+gamma], on the patch's brain range
    bias: float = 0.25  # amplitude of a smooth multiplicative field (linear + quadratic over the patch)
    noise: float = 0.1  # Gaussian noise sd (z-score units), drawn in [0, noise]
    blur: float = 1.0  # in-plane Gaussian blur sd (pixels), drawn in [0, blur], with probability 0.3
    flip: bool = True  # left-right
    rotation_deg: float = 10.0  # in-plane rotation in [-rotation_deg, rotation_deg]
    zoom: float = 0.1  # in-plane scaling in [1 - zoom, 1 + zoom]
    # FLAIR and T2 tumor-to-brain contrast times a factor in [1 - lesion_contrast, 1] (the labels place it):
    # on unseen sites the edema's FLAIR stood less above the brain than in training
    lesion_contrast: float = 0.0

    def margin(self, size: int) -> int:
        """Extra pixels per side a patch of `size` needs so that a warp never brings in unknown pixels
        (at least 1 when enabled, so the labels cover the whole patch and follow flips)."""
        if not self.enabled:
            return 0
        a = math.radians(self.rotation_deg)
        reach = size / 2 * (abs(math.cos(a)) + abs(math.sin(a))) * (1 + self.zoom)
        return int(math.ceil(reach - size / 2)) + 1


def augment(x: torch.Tensor, y: torch.Tensor, config: AugmentationConfig, size: int, window: int,
            generator: torch.Generator, images: int = 4, slices: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Augment patches x (N, C, S+2m, S+2m) with labels y (N, S+2m, S+2m) (or (N, k, k) when m = 0);
    returns x (N, C, size, size) and window labels (N, window, window).  The warps move every channel, the
    intensity changes only the first `images` * `slices` (the others: a cascade's first-stage maps); with
    `slices` > 1 (neighbouring slices stacked, slice_stack) each modality changes alike on every slice, as one
    scanner's would."""
    if config.enabled:
        x, y = _warp(x, y, config, generator)
        x, maps = x[:, :images * slices], x[:, images * slices:]
        if config.lesion_contrast > 0:
            x = _lesion_contrast(x, y, config.lesion_contrast, generator, slices)
        x = _intensities(x, config, generator, slices)
        if maps.shape[1]:
            x = torch.cat([x, maps], dim=1)
    return crop(x, y, size, window)


def crop(x: torch.Tensor, y: torch.Tensor, size: int, window: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The centre `size` pixels of the patches and the centre `window` labels."""
    m = (x.shape[-1] - size) // 2
    x = x[..., m:m + size, m:m + size]
    if y.shape[-1] != window:
        left = m + (size - window) // 2
        y = y[..., left:left + window, left:left + window]
    return x, y


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator).to(device)


def _warp(x: torch.Tensor, y: torch.Tensor, config: AugmentationConfig, generator: torch.Generator):
    n, device = x.shape[0], x.device
    angle = torch.deg2rad(_uniform(n, -config.rotation_deg, config.rotation_deg, generator, device))
    zoom = _uniform(n, 1 - config.zoom, 1 + config.zoom, generator, device)
    flip = torch.where(torch.rand(n, generator=generator).to(device) < 0.5, -1.0, 1.0) if config.flip \
        else torch.ones(n, device=device)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin  # output x (columns) <- input, flipped left-right
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if y.shape[-1] == x.shape[-1]:
        y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="border",
                          align_corners=False)[:, 0].round().long()
    return x, y


LESION_CHANNELS = (2, 3)  # T2, FLAIR


def _lesion_contrast(x: torch.Tensor, y: torch.Tensor, amount: float, generator: torch.Generator,
                     slices: int = 1) -> torch.Tensor:
    """FLAIR and T2 of tumor pixels (labels y > 0 over the whole patch, edges softened over 3 pixels)
    moved towards the brain's centre (0 after normalisation) by a share in [0, amount] per patch; stacked
    neighbouring slices are placed by the labelled slice's tumor."""
    n = x.shape[0]
    tumor = F.avg_pool2d((y > 0).float()[:, None], 3, stride=1, padding=1, count_include_pad=False)
    keep = 1.0 - _uniform(n, 0.0, amount, generator, x.device).view(n, 1, 1, 1) * tumor
    brain = x != BACKGROUND_VALUE
    out = x.clone()
    per_slice = x.shape[1] // slices
    channels = [s * per_slice + c for s in range(slices) for c in LESION_CHANNELS]
    out[:, channels] = torch.where(brain[:, channels], x[:, channels] * keep, x[:, channels])
    return out


def _intensities(x: torch.Tensor, config: AugmentationConfig, generator: torch.Generator,
                 slices: int = 1) -> torch.Tensor:
    n, c, h, w = x.shape
    device = x.device
    m = c // slices  # modalities: one draw each, the same on every stacked slice
    brain = (x.reshape(n, slices, m, h, w) != BACKGROUND_VALUE).any(dim=2, keepdim=True).expand(n, slices, m, h, w)
    brain = brain.reshape(n, c, h, w)
    per = (n, c, 1, 1)

    def draw(low: float, high: float, k: int = 1) -> torch.Tensor:
        """(n, c, k) uniform draws, one per patch, modality and term, repeated over the stacked slices."""
        values = _uniform(n * m * k, low, high, generator, device).view(n, 1, m, k)
        return values.expand(n, slices, m, k).reshape(n, c, k)

    # gamma on the patch's brain range of each modality
    low = torch.where(brain, x, torch.full_like(x, float("inf"))).amin(dim=(2, 3), keepdim=True)
    high = torch.where(brain, x, torch.full_like(x, float("-inf"))).amax(dim=(2, 3), keepdim=True)
    span = (high - low).clamp(min=1e-3)
    log_gamma = draw(-1, 1).view(per) * math.log1p(config.gamma)
    unit = ((x - low) / span).clamp(0, 1)
    x = torch.where(brain, low + span * unit ** torch.exp(log_gamma), x)
    # smooth bias field: 1 + a.r + b.r^2 terms over the patch, |field - 1| <= about `bias`
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=device), torch.linspace(-1, 1, w, device=device),
                            indexing="ij")
    basis = torch.stack([xs, ys, xs * ys, xs ** 2 - 0.5, ys ** 2 - 0.5])  # (5, H, W)
    coefficients = draw(-1, 1, 5) * config.bias / 2
    field = torch.exp(torch.einsum("nck,khw->nchw", coefficients, basis))
    x = torch.where(brain, (x - BACKGROUND_VALUE) * field + BACKGROUND_VALUE, x)
    # contrast and offset per modality
    scale = draw(1 - config.scale, 1 + config.scale).view(per)
    shift = draw(-config.shift, config.shift).view(per)
    x = torch.where(brain, x * scale + shift, x)
    # blur (thicker slices, other reconstruction) on some patches, then noise
    if config.blur > 0:
        sigma = _uniform(n, 0.0, config.blur, generator, device)
        blurred = torch.rand(n, generator=generator).to(device) < 0.3
        if blurred.any():
            x[blurred] = _gaussian_blur(x[blurred], sigma[blurred])
    noise = _uniform(n, 0.0, config.noise, generator, device).view(n, 1, 1, 1)
    x = x + noise * torch.randn(x.shape, generator=generator).to(device)
    return torch.where(brain, x, torch.full_like(x, BACKGROUND_VALUE))


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur, one sd per patch (N, C, H, W)."""
    radius = 3
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernels = torch.exp(-0.5 * (taps[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # (N, 2r+1)
    n, c, h, w = x.shape
    flat = x.reshape(1, n * c, h, w)
    k = kernels.repeat_interleave(c, dim=0)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), k.view(n * c, 1, 1, -1), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), k.view(n * c, 1, -1, 1), groups=n * c)
    return flat.view(n, c, h, w)
