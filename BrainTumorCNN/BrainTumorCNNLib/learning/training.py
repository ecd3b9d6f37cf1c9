"""Two-phase training of the registry's models (paper, Training), resumable and distributable.

Phase 1 samples patch centres with all classes equiprobable and trains every
layer; phase 2 freezes all but the output layer and retrains it with the
natural label frequencies.  A cascade trains its second network on top of a
frozen, trained TwoPathCNN.  Runs under `torchrun` with DistributedDataParallel
(gloo on CPU, NCCL on CUDA): each process draws its own patches, rank 0 writes.

A run is bounded by a deadline and resumes exactly: the checkpoint holds the
weights, the optimiser, the random states of sampling, augmentation and
dropout, and the position within the epoch, so stopping and rerunning the same
command gives the weights an uninterrupted run gives (one process).  The
learning-rate and momentum schedules are defined over the planned epochs, so a
run cut into pieces follows the same schedule.  An epoch is
`batches_per_epoch` steps; validation, the log row and the curves come at its
end.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .. import labels
from ..atomic import atomic_path, write_text
from ..network import networks, registry, slice_stack, weights
from ..preparing.preprocessing import BACKGROUND_VALUE, PreprocessingConfig
from ..scoring import metrics
from . import first_stage, plots
from .augmentation import AugmentationConfig, augment
from .sampling import CachedCase, PatchSampler, Prefetcher, SamplingConfig, case_name, load_cases, same_patient_groups


PRECISIONS = ("float32", "bfloat16", "auto")


@dataclass
class TrainingConfig:
    """Every training choice; defaults from the paper where it gives them."""

    model: str = "TwoPathCNN"
    num_classes: int = 4  # 4: BraTS 2017+ labels; 5: the paper's BRATS 2013 labels
    train_cases: List[str] = field(default_factory=list)
    validation_cases: List[str] = field(default_factory=list)
    first_weights: Optional[str] = None  # trained TwoPathCNN for a cascade's first network
    # a cascade's first network run once per training case and its maps carried with the images
    # (first_stage.py), not run on every batch
    first_stage_maps: bool = True
    local_weights: Optional[str] = None  # trained LocalPathCNN and GlobalPathCNN that AverageCNN averages
    global_weights: Optional[str] = None
    # trained weights of the same model the run starts from instead of random ones: a further training stage
    # with another recipe (e.g. a wider augmentation), its schedules set anew by this config
    start_weights: Optional[str] = None
    phase1_epochs: int = 10
    phase2_epochs: int = 2  # 0 = one-phase training (TwoPathCNN-1phase)
    batches_per_epoch: int = 100
    batch_size: int = 128
    output_size: int = 1  # labels per patch side; 1 = the paper's single centre label
    learning_rate: float = 0.005  # 0 = found by a learning-rate range test before training
    lr_decay: float = 0.1  # the rate falls by this factor over phase 1 (geometric, per epoch)
    momentum_start: float = 0.5
    momentum_end: float = 0.9  # reached at the end of phase 1
    l1: float = 1e-6
    l2: float = 1e-4
    weight_bound: float = 0.2  # |kernel weight| <= bound after every step
    dropout: float = 0.2  # on the features feeding the output layer
    pieces: int = 2  # Maxout K
    # weight of a soft-Dice loss on the nested regions BraTS scores (whole tumor, core, enhancing) beside the
    # labels' NLL: 0 = the paper's loss alone.  Why: the NLL weighs edema called necrosis as much as tumor
    # called background, and the misses left are under-called regions (issue 33, item 5)
    region_loss: float = 0.0
    patience: int = 4  # epochs without validation improvement before stopping (0 = never)
    validation_slice_step: int = 4  # score every n-th brain slice of the validation cases
    seed: int = 0
    threads: int = 0  # torch CPU threads (0 = torch's default)
    device: str = "auto"  # "auto" (CUDA when present) | "cpu" | "cuda"
    # "bfloat16": convolutions under bfloat16 autocast (the CPU's matrix units, a GPU's tensor cores); weights,
    # optimiser, loss and the FFT output layer stay float32; "auto": bfloat16 where the CPU multiplies it
    # natively, float32 elsewhere (inference.resolve_precision), decided by each piece of a run
    precision: str = "float32"
    # the weights the run keeps (phase 2 starts from them, cross-validation scores them): "best" validation
    # epoch, or "last" (validation then only draws the curve: nothing is chosen on the validation cases)
    keep: str = "best"
    cache_dir: Optional[str] = None  # preprocessed-case cache (default: beside the run folder)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', not {self.keep!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingConfig":
        data = dict(data)
        for name, kind in (("preprocessing", PreprocessingConfig), ("augmentation", AugmentationConfig),
                           ("sampling", SamplingConfig)):
            data[name] = kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.get(name, {}).items()})
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "TrainingConfig":
        return cls.from_dict(json.loads(text))


class TrainingDiverged(RuntimeError):
    pass


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision (float32: none)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def spectral_output(model: nn.Module) -> nn.Module:
    """Every output layer of `model` computed through FFT (the same values; the step's costliest layer done
    directly on a CPU)."""
    for module in model.modules():
        if isinstance(module, networks.OutputConv):
            module.spectral = True
    return model


class DiceTally:
    """Dice per region of the training windows over an epoch (argmax of the outputs against the labels)."""

    def __init__(self, num_classes: int, counts: Optional[dict] = None):
        self.values = torch.from_numpy(labels.class_values(num_classes).astype(np.int64))
        self.counts = counts or {r: [0, 0] for r in labels.REGIONS}  # region: [intersection, sizes]

    def add(self, log_probs: torch.Tensor, targets: torch.Tensor) -> None:
        pred = self.values[log_probs.detach().argmax(1).cpu()].numpy()
        truth = self.values[targets.cpu()].numpy()
        for region, count in self.counts.items():
            intersection, sizes = metrics.overlap(labels.region_mask(pred, region), labels.region_mask(truth, region))
            count[0] += intersection
            count[1] += sizes

    def dice(self) -> dict:
        return {r: metrics.dice_of(i, s) for r, (i, s) in self.counts.items() if s}


def _world() -> tuple:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_model(config: TrainingConfig) -> nn.Module:
    spec = registry.get(config.model)
    if issubclass(spec.cls, networks.EnsembleCNN):
        raise ValueError(f"{config.model} is not trained: it is assembled from the folds of a cross-validation "
                         "run (braintumorcnn ensemble RUN_DIR)")
    model = spec.build(config.num_classes, pieces=config.pieces, dropout=config.dropout)
    if config.start_weights:
        _start_from(model, config)
    if isinstance(model, networks.CascadeCNN):
        if not config.first_weights:
            raise ValueError(f"{config.model} needs a trained TwoPathCNN: pass --first-weights FILE.safetensors")
        first, card = weights.load("TwoPathCNN", config.first_weights)
        if card["num_classes"] != config.num_classes:
            raise ValueError(f"{config.first_weights} has {card['num_classes']} classes, not {config.num_classes}")
        model.first.load_state_dict(first.state_dict())
        model.freeze_first()
    if isinstance(model, networks.AverageCNN):
        if not (config.local_weights and config.global_weights):
            raise ValueError("AverageCNN averages trained path networks: pass --local-weights and --global-weights")
        for part, name, path in ((model.local_model, "LocalPathCNN", config.local_weights),
                                 (model.global_model, "GlobalPathCNN", config.global_weights)):
            trained, card = weights.load(name, path)
            if card["num_classes"] != config.num_classes:
                raise ValueError(f"{path} has {card['num_classes']} classes, not {config.num_classes}")
            part.load_state_dict(trained.state_dict())
    return model


def _start_from(model: nn.Module, config: TrainingConfig) -> None:
    """Load `config.start_weights` into `model`: the same model, classes and preprocessing, or a clear refusal."""
    trained, card = weights.load(config.model, config.start_weights)
    if card["num_classes"] != config.num_classes:
        raise ValueError(f"{config.start_weights} has {card['num_classes']} classes, not {config.num_classes}")
    theirs = card.get("config", {}).get("preprocessing")
    ours = json.loads(json.dumps(asdict(config.preprocessing)))
    if theirs != ours:
        raise ValueError(f"{config.start_weights} was trained with preprocessing {theirs}, not {ours}: a run "
                         "continues weights only on the images they were trained on")
    model.load_state_dict(trained.state_dict())


def trainable_kernels(model: nn.Module) -> List[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad]


def set_output_bias(model: nn.Module, frequencies: np.ndarray) -> None:
    """Softmax biases start at the log label frequencies (paper)."""
    log_freq = torch.tensor(np.log(np.maximum(frequencies, 1e-6)), dtype=torch.float32)
    with torch.no_grad():
        for layer in networks.output_layers(model):
            layer.bias.copy_(log_freq)


def window_loss(log_probs: torch.Tensor, targets: torch.Tensor, balanced: bool, num_classes: int) -> torch.Tensor:
    """Mean NLL of the window labels; in phase 1 each class present weighs equally."""
    if not balanced:
        return F.nll_loss(log_probs, targets)
    counts = torch.bincount(targets.flatten(), minlength=num_classes).float()
    present = counts > 0
    class_weight = torch.where(present, 1.0 / counts.clamp(min=1) / present.sum(), torch.zeros_like(counts))
    per_label = F.nll_loss(log_probs, targets, reduction="none")
    return (per_label * class_weight[targets]).sum()


def region_dice_loss(log_probs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """1 - soft Dice of each nested region (probabilities summed over its classes) over the batch's labels,
    averaged over the regions; a region absent from the labels scores how little the network calls it."""
    member = torch.from_numpy(labels.class_regions(num_classes)).to(log_probs.device, log_probs.dtype)
    called = torch.einsum("nc...,rc->rn...", log_probs.exp(), member).flatten(1)
    truth = member[:, targets].flatten(1)
    overlap = (called * truth).sum(dim=1)
    dice = (2 * overlap + 1.0) / (called.sum(dim=1) + truth.sum(dim=1) + 1.0)
    return (1 - dice).mean()


def objective(config: TrainingConfig, log_probs: torch.Tensor, targets: torch.Tensor, balanced: bool) -> torch.Tensor:
    """What a step minimises: the labels' NLL, plus `region_loss` times the nested regions' soft-Dice loss."""
    loss = window_loss(log_probs, targets, balanced, config.num_classes)
    if config.region_loss:
        loss = loss + config.region_loss * region_dice_loss(log_probs, targets, config.num_classes)
    return loss


def validation_dice(model: nn.Module, cases: List[CachedCase], slice_step: int, device: torch.device,
                    precision: str = "float32") -> dict:
    """Mean Dice per region over every `slice_step`-th brain slice of the validation cases."""
    model.eval()
    left, right = networks.margins(model.receptive_field)
    offsets = slice_stack.offsets_of(model)  # neighbouring slices as channels (SliceStackCNN)
    values = torch.tensor(labels.class_values(model.num_classes))
    per_case = []
    with torch.inference_mode():
        for case in cases:
            zs = np.flatnonzero(case.brain.any(axis=(1, 2)))[::slice_step]
            crop = np.pad(slice_stack.stacked(case.images, zs, offsets, BACKGROUND_VALUE),
                          ((0, 0), (0, 0), (left, right), (left, right)), constant_values=BACKGROUND_VALUE)
            pred = []
            for z0 in range(0, len(zs), 4):
                x = torch.from_numpy(np.ascontiguousarray(crop[:, z0:z0 + 4].transpose(1, 0, 2, 3)))
                x = x.contiguous(memory_format=torch.channels_last)
                with autocast(device, precision):
                    pred.append(values[model(x.to(device, torch.float32)).argmax(1).cpu()])
            pred = torch.cat(pred).numpy()
            truth, brain = case.truth[zs], case.brain[zs]
            pred[~brain] = 0
            per_case.append({r: metrics.dice_of(*metrics.overlap(labels.region_mask(pred, r),
                                                                   labels.region_mask(truth, r)))
                             for r in case.regions})
    return {r: float(np.mean([d[r] for d in per_case if r in d])) for r in labels.REGIONS
            if any(r in d for d in per_case)}


def training_device(name: str) -> torch.device:
    """The device of this process: under torchrun each process takes the GPU of its local rank."""
    from ..running.inference import resolve_device
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def lr_range_test(model: nn.Module, config: TrainingConfig, next_batch, steps: int = 60,
                  low: float = 1e-5, high: float = 0.5) -> tuple:
    """Learning-rate range test (rates rising geometrically, one batch each, on a copy of the model):
    returns (suggested rate, [(rate, smoothed loss)]).  The suggestion is a third of the rate at the
    lowest smoothed loss: the minimum is where steps start to overshoot (TwoPathCNN on 12 BraTS cases:
    lowest loss at 0.0035, rising from 0.0042, diverging at the paper's 0.005), a third of it still
    lies on the steep, stable part of the curve."""
    trial = copy.deepcopy(model)
    trial.train()
    params = [p for p in trial.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=low, momentum=config.momentum_start)
    curve, smooth = [], None
    for step in range(steps):
        rate = low * (high / low) ** (step / max(steps - 1, 1))
        for group in optimizer.param_groups:
            group["lr"] = rate
        x, y = next_batch()
        loss = objective(config, trial(x), y, True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value) or (smooth is not None and value > 4 * min(v for _, v in curve)):
            break
        smooth = value if smooth is None else 0.8 * smooth + 0.2 * value
        curve.append((rate, smooth))
    if not curve:
        raise TrainingDiverged(f"learning-rate range test: the first loss is {value} (rate {low:.3g}), so no rate "
                               "can be chosen; check the start weights and the inputs, or give --learning-rate")
    best = min(curve, key=lambda point: point[1])[0]
    return best / 3, curve


def _refuse_twins(train_cases: List[CachedCase], val_cases: List[CachedCase]) -> None:
    """A validation case that is a training case's scan under another name (releases re-publish cases)
    would make early stopping score what the network trained on."""
    if not val_cases:
        return
    validation = {c.name for c in val_cases}
    for group in same_patient_groups(train_cases + val_cases):
        trained = [n for n in group if n not in validation]
        validated = [n for n in group if n in validation]
        if trained and validated:
            raise ValueError(f"validation case {validated[0]} is the same scan as training case {trained[0]}; "
                             "validate on other patients")


@dataclass
class RunState:
    """Where a run stands; its checkpoint holds it as JSON, so a rerun continues from it."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps finished within the current epoch
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    stale: int = 0  # epochs since the validation score last improved
    wall_s: float = 0.0
    phase1_done: bool = False
    learning_rate: float = 0.0  # the rate phase 1 starts from (found by the range test when configured 0)
    device: str = "cpu"
    losses: List[float] = field(default_factory=list)  # this epoch's, so far
    tally: Optional[dict] = None  # this epoch's DiceTally counts, so far
    sampler: Optional[dict] = None  # the sampler's random state before the next batch
    precisions: List[str] = field(default_factory=list)  # the arithmetic each piece of the run trained in

    def summary(self) -> dict:
        """The state without the epoch's running lists (what summary.json and the return value hold)."""
        return {k: v for k, v in asdict(self).items() if k not in ("losses", "tally", "sampler")}


#: Fields a run may continue under other values of: where it runs, the plan's length (a run lengthened
#: by more epochs; log.csv keeps each epoch's rate and momentum), and the arithmetic, which the machine a
#: piece runs on decides (bfloat16 emulated where the CPU lacks it costs about 5 times float32's step; the
#: state keeps each piece's, `RunState.precisions`).
RESUMABLE_CHANGES = ("threads", "device", "cache_dir", "phase1_epochs", "phase2_epochs", "precision")


def check_same_config(saved: TrainingConfig, given: TrainingConfig) -> None:
    """Refuse to continue a run under a config that trains otherwise (weights would then come from two
    configs and the card name one).  Cases are compared by name (a case folder and its cache file are the
    same case); RESUMABLE_CHANGES may differ."""
    def comparable(config: TrainingConfig) -> dict:
        out = json.loads(json.dumps(asdict(config)))
        for name in RESUMABLE_CHANGES:
            out.pop(name)
        for name in ("train_cases", "validation_cases"):
            out[name] = sorted(case_name(p) for p in out[name])
        return out

    before, now = comparable(saved), comparable(given)
    changed = [f"{k}: {before[k]!r} -> {now[k]!r}" for k in before if before[k] != now.get(k)]
    if changed:
        raise ValueError("this run was started with other settings; continue it with the same ones or start "
                         "a new run folder. Changed: " + "; ".join(changed))


def train(config: TrainingConfig, run_dir: Path, progress: bool = True, deadline: Optional[float] = None) -> dict:
    """Train (or resume) in `run_dir`; returns the summary written to `run_dir/summary.json`.

    `deadline` (a `time.time()` value): after the first step past it the run stops with a checkpoint
    (summary "stopped": "deadline"); the same call continues it.  SIGTERM or SIGINT (Ctrl-C) stops it
    the same way.  A run continues only under the config it started with (`check_same_config`)."""
    run = _Run(config, run_dir, progress)
    if isinstance(run.model, networks.AverageCNN):
        return _compose(run.model, config, run_dir) if run.rank == 0 else {}
    interrupted: List[int] = []  # SIGTERM / SIGINT: stop at the end of the step, as at the deadline
    handlers = {}
    try:  # the prefetch thread is closed on any error
        run.load_data()
        run.start_or_resume()
        handlers = _catch_signals(interrupted)
        late = lambda: run.agreed(deadline is not None and time.time() >= deadline or bool(interrupted))  # noqa: E731
        total_epochs = config.phase1_epochs + config.phase2_epochs
        for epoch in range(run.state.epoch, total_epochs):
            phase = 1 if epoch < config.phase1_epochs else 2
            if phase == 1 and run.state.phase1_done:
                continue
            if not run.train_epoch(epoch, phase, late):
                return _stopped(run_dir, run.state, config, run.rank, progress)
            if run.state.epoch < total_epochs and late():
                return _stopped(run_dir, run.state, config, run.rank, progress)
    finally:
        if run.batches is not None:
            run.batches.close()
        for number, handler in handlers.items():
            signal.signal(number, handler)
    summary = dict(run.state.summary(), model=config.model, run_dir=str(run_dir), stopped=None)
    if run.rank == 0:
        write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        plots.plot_run(run_dir)
    return summary


class _Run:
    """One training run's model, data, optimiser and state between steps; `train` drives it."""

    def __init__(self, config: TrainingConfig, run_dir: Path, progress: bool):
        self.config, self.run_dir, self.progress = config, run_dir, progress
        self.rank, self.world = _world()
        self.device = training_device(config.device)
        from ..running.inference import resolve_precision
        self.precision = resolve_precision(config.precision, self.device)  # this piece's arithmetic
        run_dir.mkdir(parents=True, exist_ok=True)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng([config.seed, self.rank])
        self.generator = torch.Generator().manual_seed(1000 * config.seed + self.rank)
        # channels-last: oneDNN's faster convolution layout on CPU (about 1.5x per training step here)
        self.layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model = spectral_output(build_model(config)).to(self.device, memory_format=self.layout)
        self.state = RunState(learning_rate=config.learning_rate, device=self.device.type)
        self.batches: Optional[Prefetcher] = None
        self.saved: Optional[dict] = None  # the checkpoint resumed, until its optimiser state is loaded
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.ddp, self.phase2_started = self.model, False
        self.checkpoint_path = run_dir / "checkpoint.pt"

    def load_data(self) -> None:
        """The cached cases, the cascade's first-stage maps, the window sampler and its prefetch thread."""
        config, say = self.config, _printer(self.rank, self.progress)
        cache = Path(config.cache_dir) if config.cache_dir else self.run_dir.parent / "preprocessed-cache"
        train_cases = load_cases([Path(p) for p in config.train_cases], config.preprocessing, cache, say)
        untrainable = [c.name for c in train_cases if not c.trainable]
        if untrainable:
            raise ValueError(f"{', '.join(untrainable)}: the truth does not separate the tumor classes a network "
                             "learns (e.g. BRATS 2012's complete/core labels); use such cases for evaluation only")
        self.val_cases = load_cases([Path(p) for p in config.validation_cases], config.preprocessing, cache, say)
        _refuse_twins(train_cases, self.val_cases)
        if isinstance(self.model, networks.CascadeCNN) and config.first_stage_maps:
            train_cases = first_stage.with_first_stage(train_cases, self.model, weights.sha256(config.first_weights),
                                                       cache, self.device, self.precision, say)
        self.size = self.model.receptive_field + config.output_size - 1
        self.sampler = PatchSampler(train_cases, self.model.receptive_field, config.output_size,
                                    config.num_classes, self.rng, config.sampling,
                                    margin=config.augmentation.margin(self.size),
                                    slice_offsets=slice_stack.offsets_of(self.model))
        self.batches = Prefetcher(self.sampler, config.batch_size // self.world)

    def next_batch(self, phase: int = 1) -> tuple:
        x, y = self.batches.next(balanced=(phase == 1))
        x, y = augment(torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device),
                       self.config.augmentation, self.size, self.config.output_size, self.generator,
                       images=self.model.in_channels, slices=len(self.sampler.offsets))
        return x.contiguous(memory_format=self.layout), y

    def start_or_resume(self) -> None:
        """Continue from the checkpoint (same config only), or start: output biases, learning-rate test."""
        config, model = self.config, self.model
        if self.checkpoint_path.is_file():
            config_path = self.run_dir / "config.json"
            started = TrainingConfig.from_json(config_path.read_text()) if config_path.is_file() else None
            if started is not None:
                check_same_config(started, config)
            self.saved = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            model.load_state_dict(self.saved["model"])
            self.state = RunState(**json.loads(self.saved["state"]))
            if not self.state.precisions and started is not None:  # its pieces before the record began
                self.state.precisions.append(started.precision)
            if "torch_rng" in self.saved:  # checkpoints before exact resumption hold no random states
                torch.set_rng_state(self.saved["torch_rng"])
                self.generator.set_state(self.saved["augment_rng"])
            if "cuda_rng" in self.saved and self.device.type == "cuda":  # dropout draws from the GPU's there
                torch.cuda.set_rng_state(self.saved["cuda_rng"], self.device)
            if self.state.sampler:
                self.batches.restore(self.state.sampler)
        else:
            if not config.start_weights:  # trained weights keep their own output biases
                set_output_bias(model, self.sampler.class_frequencies())
            if config.learning_rate <= 0:
                self._find_learning_rate()
        self.state.precisions.append(self.precision)
        self.ddp = _wrap(model, self.world, self.device)
        if self.rank == 0:
            write_text(self.run_dir / "config.json", json.dumps(asdict(config), indent=2))

    def _find_learning_rate(self) -> None:
        rate, curve = lr_range_test(self.model, self.config, self.next_batch)
        self.state.learning_rate = _from_rank0(rate) if self.world > 1 else rate
        if self.rank == 0:
            _write_rows(self.run_dir / "lr_range.csv", [{"learning_rate": f"{r:.3g}", "smoothed_loss": f"{v:.5f}"}
                                                       for r, v in curve])
            print(f"learning-rate range test: {self.state.learning_rate:.3g}", flush=True)

    def agreed(self, late: bool) -> bool:
        """Whether to stop: rank 0's answer for every process."""
        return _from_rank0(late) if self.world > 1 else late

    def _optimizer_for(self, epoch: int, phase: int) -> Tuple[float, float]:
        """Phase 2 freezes all but the output layer (once); one optimiser per phase, so its momentum
        carries across epochs; this epoch's rate and momentum set on it."""
        if phase == 2 and not self.phase2_started:
            _freeze_all_but_output(self.model)
            self.ddp, self.phase2_started = _wrap(self.model, self.world, self.device), True  # DDP: new parameters
            self.optimizer = None
        rate, momentum = _lr(self.state.learning_rate, self.config, epoch), _momentum(self.config, epoch)
        if self.optimizer is None:
            self.optimizer = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad], lr=rate,
                                             momentum=momentum)
            if self.saved is not None and self.saved["phase"] == phase:
                self.optimizer.load_state_dict(self.saved["optimizer"])
                self.saved = None
        for group in self.optimizer.param_groups:
            group["lr"], group["momentum"] = rate, momentum
        return rate, momentum

    def train_epoch(self, epoch: int, phase: int, late: Callable[[], bool]) -> bool:
        """The epoch's remaining steps, then (rank 0) validation, weights, log and checkpoint; False when it
        stopped part-way (deadline or signal) with a checkpoint."""
        config, state = self.config, self.state
        rate, momentum = self._optimizer_for(epoch, phase)
        self.model.train()
        start, tally = time.time(), DiceTally(config.num_classes, state.tally)
        for step in range(state.step, config.batches_per_epoch):
            out, y = self._step(phase, epoch, step)
            tally.add(out, y)
            state.global_step += 1
            if self.progress and self.rank == 0:
                _bar(epoch, config.phase1_epochs + config.phase2_epochs, phase, step + 1, config.batches_per_epoch,
                     float(np.mean(state.losses[-10:])))
            if step + 1 < config.batches_per_epoch and late():
                state.step, state.tally = step + 1, tally.counts
                state.wall_s += time.time() - start
                if self.rank == 0:
                    self.save_checkpoint(phase)
                return False
        state.wall_s += time.time() - start
        if self.rank == 0:
            _end_epoch(self.model, config, state, self.run_dir, self.val_cases, self.device, self.precision, epoch,
                       phase, rate, momentum, state.losses, tally, time.time() - start, self.progress)
            state.step, state.losses, state.tally = 0, [], None
            self.save_checkpoint(phase)
        state.step, state.losses, state.tally = 0, [], None
        if self.world > 1:
            self.state = _from_rank0(state)  # rank 0 alone decides early stopping: everyone follows
            _broadcast_model(self.model)
        return True

    def _step(self, phase: int, epoch: int, step: int) -> tuple:
        """One SGD step on a batch; the outputs and labels for the epoch's Dice tally."""
        config = self.config
        x, y = self.next_batch(phase)
        with autocast(self.device, self.precision):
            out = self.ddp(x)
        loss = objective(config, out.float(), y, phase == 1)
        penalty = sum(config.l1 * w.abs().sum() + config.l2 * (w ** 2).sum() for w in trainable_kernels(self.model))
        self.optimizer.zero_grad(set_to_none=True)
        (loss + penalty).backward()
        self.optimizer.step()
        with torch.no_grad():
            for w in trainable_kernels(self.model):
                w.clamp_(-config.weight_bound, config.weight_bound)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                   "lower --learning-rate (or 0 to find one) or --weight-bound")
        self.state.losses.append(loss.item())
        return out, y

    def save_checkpoint(self, phase: int) -> None:
        self.state.sampler = self.batches.state()
        randomness = {"torch_rng": torch.get_rng_state(), "augment_rng": self.generator.get_state()}
        if self.device.type == "cuda":
            randomness["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "phase": phase,
                        "state": json.dumps(asdict(self.state)), **randomness}, tmp)


def _catch_signals(caught: List[int]) -> dict:
    """Record SIGTERM and SIGINT in `caught` instead of dying mid-step (main thread only); returns the
    handlers to put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for number in (signal.SIGTERM, signal.SIGINT):
        previous[number] = signal.signal(number, lambda signum, frame: caught.append(signum))
    return previous


def _end_epoch(model, config, state, run_dir, val_cases, device, precision, epoch, phase, rate, momentum, losses,
               tally, seconds, progress) -> None:
    """Validation, the kept weights, the log row and the curves at the end of an epoch (rank 0)."""
    score = (validation_dice(model, val_cases, config.validation_slice_step, device, precision)
             if val_cases else {})
    mean = float(np.mean(list(score.values()))) if score else -float(np.mean(losses))
    improved = mean > state.best_score
    state.epoch = epoch + 1
    if improved:
        state.best_score, state.best_epoch, state.stale = mean, epoch + 1, 0
        weights.save(model, config.model, run_dir / "best.safetensors", _card(config, state, score))
    else:
        state.stale += 1
    weights.save(model, config.model, run_dir / "last.safetensors", _card(config, state, score))
    row = {"epoch": epoch + 1, "step": state.global_step, "phase": phase, "lr": rate, "momentum": momentum,
           "train_loss": float(np.mean(losses)), **{f"train_dice_{r}": round(v, 4) for r, v in tally.dice().items()},
           "seconds": round(seconds, 1), "wall_s": round(state.wall_s, 1),
           **{f"val_dice_{r}": round(v, 4) for r, v in score.items()}}
    _log(run_dir, row)
    plots.plot_run(run_dir)
    if progress:
        print(f"epoch {epoch + 1}/{config.phase1_epochs + config.phase2_epochs} phase {phase} (step "
              f"{state.global_step}): loss {row['train_loss']:.4f} val dice {score} ({row['seconds']} s)"
              f"{' *best*' if improved else ''}", flush=True)
    if phase == 1 and (epoch + 1 == config.phase1_epochs or config.patience and state.stale >= config.patience):
        _end_phase1(model, run_dir, state, config.keep)


def _stopped(run_dir: Path, state: RunState, config: TrainingConfig, rank: int, progress: bool) -> dict:
    if rank == 0 and progress:
        print(f"deadline reached at step {state.global_step} (epoch {state.epoch + 1}, step {state.step}): "
              f"checkpoint in {run_dir}; run the same command to continue", flush=True)
    return {"model": config.model, "run_dir": str(run_dir), "stopped": "deadline",
            **{k: getattr(state, k) for k in ("epoch", "step", "global_step", "best_epoch", "best_score", "wall_s",
                                             "precisions")}}


def _compose(model: nn.Module, config: TrainingConfig, run_dir: Path) -> dict:
    """AverageCNN is not trained (the paper averages separately trained networks): its run holds the two
    path networks put together, with the epochs counted as done so that a rerun does nothing."""
    weights.save(model, config.model, run_dir / "best.safetensors", _card(config, RunState(best_epoch=0), {}))
    write_text(run_dir / "config.json", json.dumps(asdict(config), indent=2))
    summary = {"epoch": config.phase1_epochs + config.phase2_epochs, "best_epoch": 0, "best_score": None,
               "learning_rate": None, "wall_s": 0.0, "model": config.model, "run_dir": str(run_dir),
               "composed_from": [config.local_weights, config.global_weights]}
    write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _lr(base: float, config: TrainingConfig, epoch: int) -> float:
    span = max(config.phase1_epochs - 1, 1)
    return base * config.lr_decay ** (min(epoch, span) / span)


def _momentum(config: TrainingConfig, epoch: int) -> float:
    t = min(epoch / max(config.phase1_epochs - 1, 1), 1.0)
    return config.momentum_start + t * (config.momentum_end - config.momentum_start)


def _freeze_all_but_output(model: nn.Module) -> None:
    model.requires_grad_(False)
    for layer in networks.output_layers(model):
        layer.requires_grad_(True)


def _end_phase1(model: nn.Module, run_dir: Path, state: RunState, keep: str) -> None:
    """Keep the best (or last) phase-1 model as the one-phase result and start phase 2 from it."""
    kept = run_dir / f"{keep}.safetensors"
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(kept.with_suffix(suffix), run_dir / f"phase1{suffix}")
    model.load_state_dict(load_file(str(run_dir / "phase1.safetensors")))
    state.phase1_done, state.best_score, state.stale = True, -math.inf, 0


def _card(config: TrainingConfig, state: RunState, score: dict) -> dict:
    return {
        "label_scheme": labels.output_scheme(config.num_classes).name,
        "classes": [t.name for t in labels.class_tissues(config.num_classes)],
        "receptive_field": registry.get(config.model).receptive_field,
        "train_cases": [case_name(p) for p in config.train_cases],
        "validation_cases": [case_name(p) for p in config.validation_cases],
        "epochs": state.epoch, "steps": state.global_step, "best_epoch": state.best_epoch,
        "training_wall_s": round(state.wall_s, 1), "training_precisions": state.precisions,
        "validation_slices": {"dice": score, "slice_step": config.validation_slice_step},
        "config": asdict(config),
    }


def _wrap(model: nn.Module, world: int, device: torch.device) -> nn.Module:
    if world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


def _from_rank0(value):
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _broadcast_model(model: nn.Module) -> None:
    """Rank 0 may have reloaded the best weights: everyone continues from rank 0's model."""
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def _log(run_dir: Path, row: dict) -> None:
    path = run_dir / "log.csv"
    rows = list(csv.DictReader(path.open())) if path.is_file() else []
    _write_rows(path, [r for r in rows if int(r["epoch"]) < row["epoch"]] + [row])


def _write_rows(path: Path, rows: List[dict]) -> None:
    names = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def _bar(epoch: int, epochs: int, phase: int, step: int, steps: int, loss: float) -> None:
    """A bar redrawn in place on a terminal; in a log, one line per tenth of an epoch."""
    text = f"epoch {epoch + 1}/{epochs} (phase {phase}) {step}/{steps} loss {loss:.4f}"
    if sys.stdout.isatty():
        done = int(30 * step / steps)
        print(f"\r{text} [{'#' * done}{'.' * (30 - done)}]", end="\n" if step == steps else "", flush=True)
    elif step == steps or step % max(steps // 10, 1) == 0:
        print(text, flush=True)


def _printer(rank: int, enabled: bool):
    if rank or not enabled:
        return None
    return lambda fraction, message: print(f"[{fraction:4.0%}] {message}", flush=True)
