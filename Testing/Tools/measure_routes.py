"""Measure other ways of running the dense network on the CPU against the engine's float32 path
(maintainer tool; minutes).

Routes, each run through `inference.segment_volume` (the same slices, crops and argmax), on N brain
slices spread over one real case (preprocessed once):

- torch-fp32: the engine's default (`fast=True`: FFT where timed faster, fused Maxout, channels-last);
- torch-bf16: the same with `precision="bfloat16"` (direct convolutions in bfloat16 through torch.autocast;
  AVX512-BF16 in oneDNN where the CPU has it; FFT convolutions in float32);
- onnxruntime-fp32 / openvino-fp32 / openvino-bf16: the model (fused Maxout, direct convolutions:
  FFT does not export) exported once and run by ONNX Runtime or OpenVINO (bf16 = OpenVINO's
  INFERENCE_PRECISION_HINT);
- onnxruntime-int8: that export statically quantized by ONNX Runtime (QDQ, int8 weights per channel,
  uint8 activations calibrated on 6 slices of the same case: a favourable calibration).

Rounds run every route once in turn and the figures are medians over rounds, so a load that comes
and goes (this machine is shared) weighs on every route alike; the ratio is the route's median over
torch-fp32's.  Per brain = the route's one-time preparation (export, compilation, quantization;
for torch-fp32 the FFT-or-direct timing) + slice time extrapolated to all brain slices.  Agreement
with torch-fp32 on the timed slices: share of brain voxels with equal labels, and Dice per region
between the two label maps.

    PYTHONPATH=BrainTumorCNN python Testing/Tools/measure_routes.py [--models TwoPathCNN InputCascadeCNN]
        [--slices 8] [--rounds 3] [--routes ...]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch
from torch import nn

from BrainTumorCNNLib.frontends.bench import find_real_case, load_volume, spread_slices
from BrainTumorCNNLib.network import fastconv, weights
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig, preprocess
from BrainTumorCNNLib.running import inference
from measure_n4 import region_dice

THREADS = torch.get_num_threads()


class Route(nn.Module):
    """A way of computing the model's log-probabilities, shaped like a registry model so that
    `segment_volume(route, fast=False)` runs it slice by slice exactly as the engine does."""

    def __init__(self, model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], channels_last=False):
        super().__init__()
        self.receptive_field, self.num_classes = model.receptive_field, model.num_classes
        self.in_channels, self.channels_last, self.run = model.in_channels, channels_last, run

    def __deepcopy__(self, memo):  # segment_volume copies its model; the sessions inside cannot be
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


def fused(model: nn.Module) -> nn.Module:
    """The model with fused Maxout and direct convolutions, in the default layout (what exports)."""
    return fastconv.prepare(model, (1, model.in_channels, 100, 100), "cpu", conv="direct", channels_last=False)


def onnx_export(model, folder: Path) -> Path:
    path = folder / "model.onnx"
    rf = model.receptive_field
    torch.onnx.export(fused(model), (torch.randn(1, model.in_channels, rf + 20, rf + 30),), str(path),
                      dynamo=False, input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "oh", 3: "ow"}})
    return path


def onnxruntime_session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": np.ascontiguousarray(x.numpy())})[0])


def onnxruntime_fp32(model, shape, folder, volume, mask):
    return Route(model, onnxruntime_session(onnx_export(model, folder)))


def onnxruntime_int8(model, shape, folder, volume, mask):
    from onnxruntime import quantization as q

    rf = model.receptive_field
    crops = iter([inference._padded_crop(volume, [z], 40, 200, 40, 200, rf) for z in spread_slices(mask, 6)])

    class Calibration(q.CalibrationDataReader):
        def get_next(self):
            crop = next(crops, None)
            return None if crop is None else {"x": crop}

    quantized = folder / "model.int8.onnx"
    q.quantize_static(str(onnx_export(model, folder)), str(quantized), Calibration(), quant_format=q.QuantFormat.QDQ,
                      per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    return Route(model, onnxruntime_session(quantized))


def openvino(precision: str):
    def make(model, shape, folder, volume, mask):
        import openvino as ov

        rf = model.receptive_field
        converted = ov.convert_model(fused(model), example_input=torch.randn(1, model.in_channels, rf + 20, rf + 30),
                                     input=[(-1, model.in_channels, -1, -1)])
        compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                              "INFERENCE_NUM_THREADS": THREADS})
        request = compiled.create_infer_request()
        return Route(model, lambda x: torch.from_numpy(request.infer({0: x.numpy()})[0].copy()))
    return make


ROUTES = {"torch-bf16": None, "onnxruntime-fp32": onnxruntime_fp32, "openvino-fp32": openvino("f32"),
          "openvino-bf16": openvino("bf16"), "onnxruntime-int8": onnxruntime_int8}


def measure(name: str, volume, mask, routes, slices: int, rounds: int) -> Dict[str, dict]:
    model, _ = weights.load(name)
    only = spread_slices(mask, slices)
    brain_slices = int(mask.any(axis=(1, 2)).sum())
    brain = mask[only]
    # the largest padded crop, as segment_volume prepares for it
    rows, cols = np.flatnonzero(mask.any(axis=(0, 2))), np.flatnonzero(mask.any(axis=(0, 1)))
    rf = model.receptive_field
    shape = (1, model.in_channels, rows[-1] - rows[0] + rf, cols[-1] - cols[0] + rf)
    # (network, fast, precision) per route; the engine's own routes need no preparation here
    runners, prepare_s = {"torch-fp32": (model, True, "float32")}, {}
    if "torch-bf16" in routes:
        runners["torch-bf16"] = (model, True, "bfloat16")
    with tempfile.TemporaryDirectory() as folder:
        for route in (r for r in routes if ROUTES[r] is not None):
            start = time.perf_counter()
            runners[route] = (ROUTES[route](model, shape, Path(folder), volume, mask), False, "float32")
            prepare_s[route] = time.perf_counter() - start
        times = {route: [] for route in runners}
        results = {}
        for round_ in range(rounds + 1):  # round 0 warms every route up and is not counted
            for route, (net, fast, precision) in runners.items():
                result = inference.segment_volume(net, volume, mask, device="cpu", fast=fast, only_slices=only,
                                                  precision=precision)
                results[route] = result
                if fast and not round_:
                    prepare_s[route] = result.prepare_seconds  # the FFT-or-direct timing, done once
                if round_:
                    times[route].append(result.seconds - result.prepare_seconds)
            print(f"{name} round {round_}: " + ", ".join(f"{r} {t[-1]:.1f} s" for r, t in times.items() if t),
                  flush=True)
    reference = results["torch-fp32"].labels[only]
    ratios = {route: float(np.median(np.array(times[route]) / np.array(times["torch-fp32"]))) for route in runners}
    rows_ = {}
    for route in runners:
        labels = results[route].labels[only]
        rows_[route] = {
            "slices_s": float(np.median(times[route])), "prepare_s": prepare_s[route],
            "per_brain_s": prepare_s[route] + float(np.median(times[route])) * brain_slices / len(only),
            "ratio_to_fp32": ratios[route],
            "voxels_equal_pct": 100.0 * float((labels == reference)[brain].mean()),
            "dice_vs_fp32": region_dice(labels, reference)}
    return rows_


def markdown(name: str, rows: Dict[str, dict]) -> str:
    """The README's table of one model."""
    lines = [f"| {name} route | per brain s | slices s / torch-fp32 | labels equal, % of brain voxels "
             "| Dice vs torch-fp32 (complete / core / enhancing) |", "|---|---|---|---|---|"]
    for route, r in rows.items():
        dice = " / ".join(f"{r['dice_vs_fp32'][region]:.4f}" for region in ("complete", "core", "enhancing"))
        lines.append(f"| {route} | {r['per_brain_s']:.0f} | {r['ratio_to_fp32']:.2f} | {r['voxels_equal_pct']:.3f} "
                     f"| {dice} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help="case folder (default: bench's real case)")
    parser.add_argument("--models", nargs="+", default=["TwoPathCNN", "InputCascadeCNN"])
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images, spacing, source = load_volume(args.case or str(find_real_case()))
    pre = preprocess(images, PreprocessingConfig(), spacing=spacing)
    report = {"case": source, "slices": args.slices, "rounds": args.rounds, "threads": THREADS,
              "torch": torch.__version__, "load_average_start": os.getloadavg(), "models": {}}
    for name in args.models:
        report["models"][name] = measure(name, pre.images, pre.brain_mask, args.routes, args.slices, args.rounds)
        print(json.dumps({name: report["models"][name]}), flush=True)
        print(markdown(name, report["models"][name]), flush=True)
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
