"""A cascade in two stages (issue 33's "screening on the first stage"): its first network over the brain,
screened as any model is, then its second network only near the tumor the first found, given the first's
probabilities as the input channels it was trained with (networks.CascadeCNN takes them instead of running
its first network; learning/first_stage.py made them so in training).  Elsewhere the first network's
probabilities stand.

Not exact: the second network could call tumor farther than REGION_MARGIN pixels (or REGION_SLICES slices)
from the first's.  Measured with the converged InputCascadeCNN of fold 0 on its five held-out cases, the
cleaned labels differed from the whole cascade's by 0 to 679 voxels (at most 0.4 % of the tumor), Dice
unchanged, for up to a third less CPU (docs/speed.md, Testing/Tools/measure_cascade_focus.py).  The maps say background beyond
each slice's brain box and beyond the volume, as in training.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .. import labels
from ..network import networks
from ..preparing.preprocessing import BACKGROUND_VALUE
from . import inference
from .inference import InferenceResult, Progress

REGION_MARGIN = 16  # pixels the first network's tumor is grown by, in-plane, where the second network runs
REGION_SLICES = 3  # slices either side of the first network's tumor where the second network runs too


class GivenMaps(nn.Module):
    """A cascade whose input carries its first network's probabilities after the images: the second
    network alone runs.  `pad_values`: what the engine puts beyond the volume's edges, per channel (images'
    background, maps' certain background)."""

    def __init__(self, cascade: networks.CascadeCNN):
        super().__init__()
        self.cascade = cascade
        self.in_channels = cascade.in_channels + cascade.num_classes
        self.num_classes, self.receptive_field = cascade.num_classes, cascade.receptive_field
        background = [1.0] + [0.0] * (cascade.num_classes - 1)
        self.pad_values = tuple([BACKGROUND_VALUE] * cascade.in_channels + background)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cascade(x)


def near_tumor(tumor: np.ndarray, brain: np.ndarray, margin: Optional[int] = None,
               slices: Optional[int] = None) -> np.ndarray:
    """bool (Z, Y, X): the brain within `margin` pixels in-plane (4-connected steps; default REGION_MARGIN)
    of `tumor` on its slices, and on `slices` slices either side (default REGION_SLICES) the union of those
    regions."""
    margin = REGION_MARGIN if margin is None else margin
    slices = REGION_SLICES if slices is None else slices
    near = np.zeros(tumor.shape, bool)
    cross = ndimage.generate_binary_structure(2, 1)
    for z in np.flatnonzero(tumor.any(axis=(1, 2))):
        near[z] = ndimage.binary_dilation(tumor[z], cross, iterations=margin)
    if slices:
        near = ndimage.maximum_filter1d(near.view(np.uint8), 2 * slices + 1, axis=0).astype(bool)
    return near & brain


class TwoStage:
    """A Runner's `segment` for a cascade, in two stages: a Runner of its first network and one of the
    cascade given the first's maps (GivenMaps), each with its own prepared copy."""

    def __init__(self, cascade: networks.CascadeCNN, device: torch.device, fast, memory_budget: int,
                 max_batch: Optional[int], precision: str = "float32"):
        self.model = cascade
        self.first = inference.Runner(cascade.first, device, fast, memory_budget, max_batch, precision)
        self.second = inference.Runner(GivenMaps(cascade), device, fast, memory_budget, max_batch, precision)

    @property
    def device(self) -> torch.device:
        return self.first.device

    @property
    def precision(self) -> str:
        return self.first.precision

    def segment(self, volume: np.ndarray, mask: Optional[np.ndarray] = None, *, flips: bool = False,
                screen_step: int = 1, progress: Optional[Progress] = None,
                cancel: Optional[Callable[[], bool]] = None) -> InferenceResult:
        """As Runner.segment: the first network over the brain (screened by `screen_step`), then the second
        network near its tumor (near_tumor); the probabilities and labels of both stages joined."""
        report = progress or (lambda fraction, message: None)
        volume = np.asarray(volume, np.float32)
        mask = inference.brain_mask(volume, BACKGROUND_VALUE) if mask is None else np.asarray(mask, bool)
        first = self.first.segment(volume, mask, flips=flips, screen_step=screen_step, cancel=cancel,
                                   progress=lambda f, m: report(0.6 * f, f"first network: {m}"))
        probabilities = first.probabilities
        near = near_tumor(inference.argmax_classes(probabilities) > 0, mask)
        seconds, preparing, ran = first.seconds, first.prepare_seconds, first.slices
        if near.any():
            given = np.concatenate([volume, probabilities])
            second = self.second.segment(given, near, flips=flips, cancel=cancel,
                                         progress=lambda f, m: report(0.6 + 0.4 * f,
                                                                      f"second network near the tumor: {m}"))
            probabilities[:, near] = second.probabilities[:, near]
            seconds, preparing = seconds + second.seconds, preparing + second.prepare_seconds
            ran = np.union1d(ran, second.slices)
        report(1.0, "both networks done")
        values = labels.class_values(int(self.model.num_classes))
        return InferenceResult(probabilities, values[inference.argmax_classes(probabilities)], ran,
                               self.device.type, seconds, preparing, self.precision)


class EnsembleTwoStage:
    """A Runner's `segment` for an ensemble of cascades (networks.CascadeEnsembleCNN): each member in two stages
    (TwoStage, near its own first network's tumor), one after the other, their probabilities averaged as the
    ensemble's forward averages them.  Each member's labels are what that cascade alone gives in two stages."""

    def __init__(self, ensemble: networks.CascadeEnsembleCNN, device: torch.device, fast, memory_budget: int,
                 max_batch: Optional[int], precision: str = "float32"):
        self.model = ensemble
        self.members = [TwoStage(member, device, fast, memory_budget, max_batch, precision)
                        for member in ensemble.members]

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def precision(self) -> str:
        return self.members[0].precision

    def segment(self, volume: np.ndarray, mask: Optional[np.ndarray] = None, *, flips: bool = False,
                screen_step: int = 1, progress: Optional[Progress] = None,
                cancel: Optional[Callable[[], bool]] = None) -> InferenceResult:
        """As Runner.segment: the mean of the members' TwoStage.segment."""
        report = progress or (lambda fraction, message: None)
        volume = np.asarray(volume, np.float32)
        mask = inference.brain_mask(volume, BACKGROUND_VALUE) if mask is None else np.asarray(mask, bool)
        count = len(self.members)
        total, seconds, preparing, ran = None, 0.0, 0.0, np.zeros(0, int)
        for k, member in enumerate(self.members):
            def say(fraction: float, message: str, k: int = k) -> None:
                report((k + fraction) / count, f"member {k + 1} of {count}, {message}")

            result = member.segment(volume, mask, flips=flips, screen_step=screen_step, progress=say, cancel=cancel)
            if total is None:
                total = result.probabilities
            else:
                total += result.probabilities
            seconds, preparing = seconds + result.seconds, preparing + result.prepare_seconds
            ran = np.union1d(ran, result.slices)
        total /= count
        values = labels.class_values(int(self.model.num_classes))
        return InferenceResult(total, values[inference.argmax_classes(total)], ran, self.device.type, seconds,
                               preparing, self.precision)


#: What segments a preprocessed volume: a Runner, or a cascade's (or an ensemble of cascades') two stages.
Engine = Union[inference.Runner, TwoStage, EnsembleTwoStage]


def runs_two_stages(engine: Engine) -> bool:
    return isinstance(engine, (TwoStage, EnsembleTwoStage))


def runner_for(model: nn.Module, device: torch.device, fast, memory_budget: int, max_batch: Optional[int],
               precision: str, two_stage: bool) -> Engine:
    """The engine that segments with `model`: TwoStage for a cascade, EnsembleTwoStage for an ensemble of
    cascades when `two_stage`, else a Runner."""
    if two_stage and isinstance(model, networks.CascadeCNN):
        return TwoStage(model, device, fast, memory_budget, max_batch, precision)
    if two_stage and isinstance(model, networks.CascadeEnsembleCNN):
        return EnsembleTwoStage(model, device, fast, memory_budget, max_batch, precision)
    return inference.Runner(model, device, fast, memory_budget, max_batch, precision)
