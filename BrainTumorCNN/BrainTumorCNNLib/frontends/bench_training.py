"""`braintumorcnn bench --training`: labelled pixels per second of a phase-1 training step, route by route,
and of the window sampler alone, measured in one run.

Routes (each a full step: forward, loss, backward, SGD update, on batches of `--batch-size` windows of
`--window` x `--window` labels):

- float32, before: the step as it was before issue 24 (direct 21x21 output convolution, Maxout as `amax`
  over the pieces, whose backward splits ties and returns the default layout);
- float32: the output layer through FFT (`network/spectral.py`), Maxout as maxima of strided views;
- bfloat16: the same under bfloat16 autocast (the CPU's matrix units), float32 weights and loss;
- bfloat16, maps carried (cascades): the first network's maps carried with the batch as extra channels
  (learning/first_stage.py), so the step runs the second network alone.

The routes take turns step by step (after one warm-up step each), so load from other work on the
machine falls on all of them alike; each figure is a median.  The sampler row draws the same batches
from cached cases (`--cases`: cache files or case folders; default: two small phantoms, preprocessed
without N4), with thick-slice patches as the robust recipe draws them.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import types
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from ..learning.sampling import PatchSampler, SamplingConfig, case_sources, load_cases
from ..learning.training import autocast, spectral_output, window_loss
from ..network import networks, registry
from ..preparing.preprocessing import PreprocessingConfig
from ..synthetic import phantom

ROUTES = ("float32, before", "float32", "bfloat16")
MAPS_ROUTE = "bfloat16, maps carried"


def _amax_maxout(self: networks.MaxoutConv, x: torch.Tensor) -> torch.Tensor:
    """MaxoutConv.forward before issue 24 (the baseline route)."""
    y = self.conv(x)
    n, _, h, w = y.shape
    y = y.view(n, self.channels, self.pieces, h, w).amax(dim=2)
    return torch.nn.functional.max_pool2d(y, self.pool, stride=1) if self.pool > 1 else y


def build(model_name: str, route: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = registry.get(model_name).build(4, dropout=0.2)
    if isinstance(model, networks.CascadeCNN):
        model.freeze_first()
    if route == "float32, before":
        for module in model.modules():
            if isinstance(module, networks.MaxoutConv):
                module.forward = types.MethodType(_amax_maxout, module)
    else:
        spectral_output(model)
    return model.to(memory_format=torch.channels_last).train()


def time_steps(model_name: str, batch: int, window: int, steps: int) -> Dict[str, float]:
    """Median seconds per training step of each route, the routes taking turns."""
    cascade = issubclass(registry.get(model_name).cls, networks.CascadeCNN)
    routes = ROUTES + ((MAPS_ROUTE,) if cascade else ())
    models = {route: build(model_name, route) for route in routes}
    optimizers = {route: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
                  for route, m in models.items()}
    size = models[ROUTES[0]].receptive_field + window - 1
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, size, size, generator=generator).contiguous(memory_format=torch.channels_last)
    maps = torch.softmax(torch.randn(batch, 4, size, size, generator=generator), dim=1)
    inputs = {route: torch.cat([x, maps], 1).contiguous(memory_format=torch.channels_last) if route == MAPS_ROUTE
              else x for route in routes}
    y = torch.randint(0, 4, (batch, window, window), generator=generator)
    times: Dict[str, List[float]] = {route: [] for route in routes}
    for _ in range(steps + 1):
        for route in routes:
            start = time.perf_counter()
            with autocast(torch.device("cpu"), "bfloat16" if route.startswith("bfloat16") else "float32"):
                out = models[route](inputs[route])
            loss = window_loss(out.float(), y, True, 4)
            optimizers[route].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[route].step()
            times[route].append(time.perf_counter() - start)
    return {route: float(np.median(t[1:])) for route, t in times.items()}


def time_sampler(cases: List[str], batch: int, window: int, steps: int) -> float:
    """Median seconds to draw one phase-1 batch (TwoPathCNN windows) from cached cases."""
    with tempfile.TemporaryDirectory() as tmp:
        if not cases:
            cases = [str(phantom.write_phantom(phantom.make_phantom(seed, size="small"), tmp)["truth"].parent)
                     for seed in (0, 1)]
        loaded = load_cases([c for p in cases for c in case_sources(p)], PreprocessingConfig(n4=False))
    sampler = PatchSampler(loaded, networks.TwoPathCNN.receptive_field, window, 4, np.random.default_rng(0),
                           SamplingConfig(thick_slice_fraction=0.3))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        sampler.batch(batch, balanced=True)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def configure(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--training")
    group.add_argument("--batch-size", type=int, default=32, help="windows per step (the campaign's 32)")
    group.add_argument("--window", type=int, default=16, help="labels per window side (the campaign's 16)")
    group.add_argument("--steps", type=int, default=6, help="timed steps per route (after one warm-up)")
    group.add_argument("--cases", nargs="*", default=[], help="cases for the sampler row (default: two phantoms)")
    group.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m for m in args.models if m in ("TwoPathCNN", "InputCascadeCNN")] or ["TwoPathCNN", "InputCascadeCNN"]
    labelled = args.batch_size * args.window ** 2
    print(f"training step, {args.batch_size} windows of {args.window} x {args.window} labels, "
          f"{torch.get_num_threads()} threads, median of {args.steps} steps per route (routes taking turns)")
    print(f"{'model':16s} {'route':22s} {'s/step':>7s} {'labelled px/s':>14s} {'vs before':>9s}")
    for name in models:
        seconds = time_steps(name, args.batch_size, args.window, args.steps)
        for route, s in seconds.items():
            print(f"{name:16s} {route:22s} {s:7.3f} {labelled / s:14.0f} {seconds[ROUTES[0]] / s:8.2f}x", flush=True)
    s = time_sampler(args.cases, args.batch_size, args.window, args.steps)
    print(f"{'sampler alone':16s} {'(numpy)':22s} {s:7.4f} {labelled / s:14.0f}")
    return 0
