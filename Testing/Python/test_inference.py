"""Dense inference: equal to the patch networks, independent of chunking and
devices, cropped to the brain; FFT convolution equal to direct convolution."""
from __future__ import annotations

import copy
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.network import fastconv, networks, registry, spectral
from BrainTumorCNNLib.preparing.preprocessing import BACKGROUND_VALUE
from BrainTumorCNNLib.running import inference

SIZE = 240  # a real BraTS slice is 240 x 240


def lively(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights larger than the paper's U(-0.005, 0.005), so every class
    gets non-trivial, pixel-dependent probabilities."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                bound = 2.0 / math.sqrt(m.in_channels * m.kernel_size[0] * m.kernel_size[1])
                m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1) * bound)
                m.bias.copy_((torch.rand(m.bias.shape, generator=gen) * 2 - 1) * 0.1)
    return model.eval()


def ellipse_mask(shape, centre, radii) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1.0


def brain_volume(slices=2, seed=0, centre=(30, 150), radii=(24, 34)):
    """(4, slices, 240, 240) float32: z-scored-like values in an ellipse near the
    top edge (so the margins run off the slice), BACKGROUND_VALUE elsewhere."""
    rng = np.random.default_rng(seed)
    mask = np.broadcast_to(ellipse_mask((SIZE, SIZE), centre, radii), (slices, SIZE, SIZE)).copy()
    volume = np.full((4, slices, SIZE, SIZE), BACKGROUND_VALUE, np.float32)
    smooth = rng.normal(size=(4, slices, SIZE // 8, SIZE // 8)).repeat(8, axis=2).repeat(8, axis=3)
    volume[:, mask] = (smooth + 0.5 * rng.normal(size=smooth.shape))[:, mask]
    return volume, mask


def patch_probabilities(model, volume, z, pixels):
    """Probabilities (n, C) of the patch network on the rf x rf patches centred
    at `pixels` of slice z, the slice padded with BACKGROUND_VALUE."""
    left, right = inference.margins(model.receptive_field)
    # a slice-stacking network reads the slices around z too, background beyond the volume
    around = [volume[:, z + o] if 0 <= z + o < volume.shape[1] else np.full_like(volume[:, z], BACKGROUND_VALUE)
              for o in getattr(model, "slice_offsets", (0,))]
    padded = np.pad(np.concatenate(around), ((0, 0), (left, right), (left, right)), constant_values=BACKGROUND_VALUE)
    rf = model.receptive_field
    patches = np.stack([padded[:, y:y + rf, x:x + rf] for y, x in pixels])
    with torch.inference_mode():
        return model(torch.from_numpy(patches)).exp()[:, :, 0, 0].numpy()


@pytest.mark.parametrize("name", list(registry.MODELS))
def test_dense_equals_patch_network_at_random_pixels(name):
    model = lively(registry.get(name).build(5))
    volume, mask = brain_volume(slices=1)
    result = inference.segment_volume(model, volume, mask, device="cpu", fast=False)
    rng = np.random.default_rng(1)
    inside = np.argwhere(mask[0])
    rows, cols = np.flatnonzero(mask[0].any(1)), np.flatnonzero(mask[0].any(0))
    corners = [(rows[0], cols[0]), (rows[-1], cols[-1]), (rows[0], cols[-1])]  # bounding box, outside the brain
    pixels = [tuple(p) for p in inside[rng.choice(len(inside), 12, replace=False)]] + corners
    expected = patch_probabilities(model, volume, 0, pixels)
    dense = np.stack([result.probabilities[:, 0, y, x] for y, x in pixels])
    assert expected.std(axis=0).max() > 0.02, "degenerate test model: probabilities do not vary"
    np.testing.assert_allclose(dense, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fast", [False, True])
def test_a_slice_stack_network_reads_the_slices_three_above_and_below_each_slice(fast):
    model = lively(networks.SliceStackCNN(num_classes=5))
    volume, mask = brain_volume(slices=8, radii=(14, 20))
    result = inference.segment_volume(model, volume, mask, device="cpu", fast=fast)
    pixels = [tuple(p) for p in np.argwhere(mask[0])[::37]]
    for z in (0, 2, 4, 7):  # neighbours beyond the volume below, above, both inside, beyond above
        expected = patch_probabilities(model, volume, z, pixels)
        np.testing.assert_allclose(np.stack([result.probabilities[:, z, y, x] for y, x in pixels]), expected,
                                   atol=1e-3 if fast else 1e-4, rtol=0)
    moved = volume.copy()
    moved[:, 7] += 1.0  # slice 7 is read by slice 4 (3 below it) and by no slice but itself otherwise
    again = inference.segment_volume(model, moved, mask, device="cpu", fast=fast).probabilities
    changed = np.abs(again - result.probabilities).max(axis=(0, 2, 3)) > 1e-3
    assert changed.tolist() == [False, False, False, False, True, False, False, True]


def test_a_crop_fills_beyond_the_volume_with_each_channels_fill_in_plane_and_through_plane():
    volume = np.arange(2 * 5 * 6 * 6, dtype=np.float32).reshape(2, 5, 6, 6)
    fill = (-7.0, -9.0)  # one value per channel, as a cascade's first-stage maps need
    crop = inference._padded_crop(volume, [1, 3], 0, 6, 0, 6, 5, fill=fill, offsets=(-3, 0, 3))
    assert crop.shape == (2, 6, 10, 10)  # two slices, (offset, channel) pairs, the plane plus 2 + 2 margins
    inner = (slice(2, 8), slice(2, 8))
    for k, z in enumerate([1, 3]):
        for o, offset in enumerate((-3, 0, 3)):
            for ch in range(2):
                plane = crop[k, o * 2 + ch]
                assert (plane[:2] == fill[ch]).all() and (plane[:, -2:] == fill[ch]).all()  # in plane
                if 0 <= z + offset < 5:
                    np.testing.assert_array_equal(plane[inner], volume[ch, z + offset])
                else:  # through plane: slice 1's -3 and slice 3's +3 lie beyond the volume
                    assert (plane == fill[ch]).all()


def test_fast_dense_equals_patch_network():
    model = lively(networks.InputCascadeCNN(num_classes=4))
    volume, mask = brain_volume(slices=1, radii=(14, 20))
    result = inference.segment_volume(model, volume, mask, device="cpu", fast=True)
    pixels = [tuple(p) for p in np.argwhere(mask[0])[::41]]
    expected = patch_probabilities(model, volume, 0, pixels)
    np.testing.assert_allclose(np.stack([result.probabilities[:, 0, y, x] for y, x in pixels]), expected,
                               atol=1e-3, rtol=0)


def test_result_is_cropped_to_the_brain_and_skips_empty_slices(monkeypatch):
    model = lively(networks.TwoPathCNN(num_classes=4))
    volume, mask = brain_volume(slices=3)
    volume[:, 0] = BACKGROUND_VALUE  # no brain in slice 0
    mask[0] = False
    crops = []
    run = inference.Runner.run
    monkeypatch.setattr(inference.Runner, "run", lambda self, crop, cancel=None: crops.append(crop.shape)
                        or run(self, crop, cancel))
    result = inference.segment_volume(model, volume, device="cpu")  # mask from BACKGROUND_VALUE
    rows, cols = np.flatnonzero(mask.any((0, 2))), np.flatnonzero(mask.any((0, 1)))
    assert list(result.slices) == [1, 2]
    assert sum(c[0] for c in crops) == 2
    assert {c[2:] for c in crops} == {(len(rows) + 32, len(cols) + 32)}
    assert result.probabilities.shape == (4, 3, SIZE, SIZE) and result.probabilities.dtype == np.float32
    assert result.labels.shape == (3, SIZE, SIZE) and result.labels.dtype == np.uint8
    box = np.zeros(mask.shape, bool)
    box[1:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
    assert np.all(result.probabilities[0][~box] == 1.0) and np.all(result.probabilities[1:][:, ~box] == 0.0)
    assert np.all(result.labels[~box] == 0)
    np.testing.assert_allclose(result.probabilities[:, box].sum(axis=0), 1.0, atol=1e-5)
    assert set(np.unique(result.labels[box])) <= set(labels.class_values(4).tolist())
    assert len(np.unique(result.labels[box])) > 1


def test_each_slice_gets_its_own_crop_when_slices_run_one_by_one(monkeypatch):
    """Slices share a bounding box only to run as one batch; alone (the CPU default) each is cropped to its
    own brain: the same inside that box, background beyond it (as in a slice without brain), so the labels
    outside the brain no longer depend on which slices happened to be grouped."""
    model = lively(networks.TwoPathCNN(num_classes=4))
    volume, mask = brain_volume(slices=2, radii=(30, 40), centre=(120, 120))
    small = ellipse_mask((SIZE, SIZE), (120, 120), (10, 12))
    volume[:, 1][:, ~small] = BACKGROUND_VALUE
    mask[1] &= small
    crops = []
    run = inference.Runner.run
    monkeypatch.setattr(inference.Runner, "run", lambda self, crop, cancel=None: crops.append(crop.shape)
                        or run(self, crop, cancel))
    alone = inference.segment_volume(model, volume, mask, device="cpu", max_batch=1)
    assert [c[2:] for c in crops] == [(61 + 32, 81 + 32), (21 + 32, 25 + 32)]
    shared = inference.segment_volume(model, volume, mask, device="cpu", max_batch=2)
    assert crops[2:] == [(2, 4, 61 + 32, 81 + 32)]
    own = np.zeros(mask.shape, bool)
    own[0, 90:151, 80:161] = own[1, 110:131, 108:133] = True
    assert mask[0, 90:151, 80:161].any(1).all() and mask[1, 110:131, 108:133].any(0).all()
    np.testing.assert_allclose(alone.probabilities[:, own], shared.probabilities[:, own], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(alone.labels[own], shared.labels[own])
    assert np.all(alone.probabilities[0][~own] == 1.0) and np.all(alone.labels[~own] == 0)


def test_labels_are_internal_values_of_the_most_probable_class():
    model = lively(networks.TwoPathCNN(num_classes=5), seed=3)
    volume, mask = brain_volume(slices=1)
    result = inference.segment_volume(model, volume, mask, device="cpu")
    np.testing.assert_array_equal(result.labels, labels.class_values(5)[result.probabilities.argmax(0)])


@pytest.mark.parametrize("fast", [False, True])
def test_chunking_gives_the_same_result(fast):
    model = lively(networks.TwoPathCNN(num_classes=4))
    volume, mask = brain_volume(slices=2, radii=(30, 40), centre=(120, 120))
    whole = inference.segment_volume(model, volume, mask, device="cpu", fast=fast)
    # a budget far below one slice's activations forces single slices in bands of a few rows
    budget = inference.activation_bytes_per_pixel(model) * (81 + 32) * (32 + 12)
    chunked = inference.segment_volume(model, volume, mask, device="cpu", fast=fast, memory_budget=budget,
                                       group_slices=1)
    np.testing.assert_allclose(chunked.probabilities, whole.probabilities, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(chunked.labels, whole.labels)


def test_bfloat16_precision_is_close_to_float32_and_keeps_fft_in_float32():
    model = lively(networks.TwoPathCNN(num_classes=4))
    volume, mask = brain_volume(slices=1)
    exact = inference.segment_volume(model, volume, mask, device="cpu", fast="fft")
    lower = inference.segment_volume(model, volume, mask, device="cpu", fast="fft", precision="bfloat16")
    difference = np.abs(lower.probabilities - exact.probabilities).max()
    assert 1e-4 < difference < 0.05  # bfloat16 arithmetic, not float32, and not far from it
    assert lower.probabilities.dtype == np.float32
    fft = fastconv.FFTConv2d(nn.Conv2d(6, 3, 13))
    x = torch.randn(1, 6, 30, 30)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        out = fft(x.to(torch.bfloat16))
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16"):
        inference.segment_volume(model, volume, mask, device="cpu", precision="int8")


def test_bfloat16_weights_cast_once_give_autocasts_numbers_and_leave_the_model_alone():
    """The prepared copy holds its direct convolutions' weights in bfloat16 (autocast cast them on every
    call): the probabilities are those of the float32 model run under autocast, bit for bit."""
    model = lively(networks.TwoPathCNN(num_classes=4))
    volume, mask = brain_volume(slices=1)
    runner = inference.Runner(model, torch.device("cpu"), False, inference.DEFAULT_MEMORY_BUDGET, None, "bfloat16")
    runner.prepare((1, 4, 64, 64))
    assert {m.weight.dtype for m in runner.prepared.modules() if isinstance(m, nn.Conv2d)} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    result = inference.segment_volume(model, volume, mask, device="cpu", fast=False, precision="bfloat16")
    pixels = [tuple(p) for p in np.argwhere(mask[0])[::97]]
    left, right = inference.margins(model.receptive_field)
    padded = np.pad(volume[:, 0], ((0, 0), (left, right), (left, right)), constant_values=BACKGROUND_VALUE)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        dense = model(torch.from_numpy(padded[None])).float().exp()[0].numpy()
    expected = np.stack([dense[:, y, x] for y, x in pixels])
    np.testing.assert_array_equal(np.stack([result.probabilities[:, 0, y, x] for y, x in pixels]), expected)


def test_the_cpu_runs_two_slices_at_once_with_the_same_result_and_gives_its_threads_back(monkeypatch):
    model = lively(networks.TwoPathCNN(num_classes=4))
    volume, mask = brain_volume(slices=4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # one thread: one slice at a time, as before
        alone = inference.segment_volume(model, volume, mask, device="cpu")
        torch.set_num_threads(2)
        seen = []
        run = inference.Runner.run
        monkeypatch.setattr(inference.Runner, "run", lambda self, crop, cancel=None: seen.append(
            (threading.current_thread().name, torch.get_num_threads(), self.budget)) or run(self, crop, cancel))
        shared = inference.segment_volume(model, volume, mask, device="cpu")
        assert torch.get_num_threads() == 2  # given back
    finally:
        torch.set_num_threads(threads)
    assert len(seen) == 4 and {name.startswith("inference") for name, _, _ in seen} == {True}
    assert {count for _, count, _ in seen} == {1}  # each worker one of the two threads
    assert {budget for _, _, budget in seen} == {inference.DEFAULT_MEMORY_BUDGET // 2}
    np.testing.assert_allclose(shared.probabilities, alone.probabilities, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(shared.labels, alone.labels)


def test_rows_per_band_respects_the_budget():
    model = networks.TwoPathCNN(num_classes=4)
    budget = 64 << 20
    runner = inference.Runner(model, torch.device("cpu"), False, memory_budget=budget, max_batch=None)
    rows = runner.rows_per_band(1, 200, 150)
    assert 1 <= rows < 200
    assert inference.activation_bytes_per_pixel(model) * (rows + 32) * (150 + 32) <= budget
    assert inference.activation_bytes_per_pixel(model) * (rows + 33) * (150 + 32) > budget


class OutOfMemoryAbove(nn.Module):
    """Wraps a model; raises torch.cuda.OutOfMemoryError for inputs above a size."""

    def __init__(self, model, max_batch, max_rows):
        super().__init__()
        self.inner, self.max_batch, self.max_rows = model, max_batch, max_rows
        self.num_classes, self.receptive_field, self.in_channels = (
            model.num_classes, model.receptive_field, model.in_channels)

    def forward(self, x):
        if x.shape[0] > self.max_batch or x.shape[2] > self.max_rows + self.receptive_field - 1:
            raise torch.cuda.OutOfMemoryError("simulated: out of memory")
        return self.inner(x)


def test_out_of_memory_shrinks_batches_then_bands():
    model = lively(networks.TwoPathCNN(num_classes=4))
    volume, mask = brain_volume(slices=2)
    expected = inference.segment_volume(model, volume, mask, device="cpu", fast=False)
    limited = OutOfMemoryAbove(model, max_batch=1, max_rows=20)
    got = inference.segment_volume(limited, volume, mask, device="cpu", fast=False, max_batch=4)
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-5, rtol=0)


def test_out_of_memory_everywhere_on_cpu_says_so():
    model = OutOfMemoryAbove(lively(networks.TwoPathCNN(num_classes=4)), max_batch=0, max_rows=0)
    volume, mask = brain_volume(slices=1)
    with pytest.raises(MemoryError, match="out of memory on the CPU"):
        inference.segment_volume(model, volume, mask, device="cpu", fast=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_out_of_memory_falls_back_to_cpu_with_a_warning():
    class CudaOOM(OutOfMemoryAbove):
        def forward(self, x):
            if x.is_cuda:
                raise torch.cuda.OutOfMemoryError("simulated: CUDA out of memory")
            return self.inner(x)

    model = lively(networks.TwoPathCNN(num_classes=4))
    volume, mask = brain_volume(slices=2)
    expected = inference.segment_volume(model, volume, mask, device="cpu", fast=False)
    with pytest.warns(RuntimeWarning, match="continuing on the CPU"):
        got = inference.segment_volume(CudaOOM(model, 0, 0), volume, mask, device="cuda", fast=False)
    assert got.device == "cpu"
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    model = lively(networks.LocalCascadeCNN(num_classes=4))
    volume, mask = brain_volume(slices=2)
    cpu = inference.segment_volume(model, volume, mask, device="cpu", fast=False)
    gpu = inference.segment_volume(model, volume, mask, device="cuda", fast=True)
    assert gpu.device == "cuda"
    np.testing.assert_allclose(gpu.probabilities, cpu.probabilities, atol=1e-3, rtol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_clear_error():
    volume, mask = brain_volume(slices=1)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        inference.segment_volume(networks.TwoPathCNN(num_classes=4), volume, mask, device="cuda")
    assert inference.resolve_device("auto") == torch.device("cpu")


def test_unknown_device_and_bad_shapes_are_errors():
    volume, mask = brain_volume(slices=1)
    model = networks.TwoPathCNN(num_classes=4)
    with pytest.raises(ValueError, match="device"):
        inference.resolve_device("tpu")
    with pytest.raises(ValueError, match="modalities"):
        inference.segment_volume(model, volume[:3], mask, device="cpu")
    with pytest.raises(ValueError, match="mask"):
        inference.segment_volume(model, volume, mask[:, :10], device="cpu")


def test_cancel_raises_cancelled_and_progress_is_reported():
    model = lively(networks.TwoPathCNN(num_classes=4))
    volume, mask = brain_volume(slices=3, radii=(10, 10))
    seen = []
    with pytest.raises(inference.Cancelled):
        inference.segment_volume(model, volume, mask, device="cpu", max_batch=1, group_slices=1,
                                 progress=lambda f, m: seen.append(f), cancel=lambda: len(seen) >= 1)
    turn = min(inference.CPU_WORKERS, torch.get_num_threads())  # slices run at once: cancel stops the next turn
    assert seen == pytest.approx([k / 3 for k in range(1, turn + 1)])
    fractions = []
    inference.segment_volume(model, volume, mask, device="cpu", max_batch=1,
                             progress=lambda f, m: fractions.append(f))
    assert fractions == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_empty_volume_is_all_background():
    volume = np.full((4, 2, 40, 40), BACKGROUND_VALUE, np.float32)
    result = inference.segment_volume(networks.TwoPathCNN(num_classes=4), volume, device="cpu")
    assert len(result.slices) == 0 and np.all(result.labels == 0) and np.all(result.probabilities[0] == 1)


def test_margins():
    assert inference.margins(33) == (16, 16)
    assert inference.margins(56) == (27, 28)
    assert inference.margins(65) == (32, 32)
    assert inference.margins(53) == (26, 26)


# --- FFT convolution ---------------------------------------------------------

@pytest.fixture(scope="module")
def cascade_and_activations():
    """A lively InputCascadeCNN and the input of each of its convolutions on a brain crop."""
    model = lively(networks.InputCascadeCNN(num_classes=5))
    volume, _ = brain_volume(slices=1, centre=(45, 150), radii=(40, 50))
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, name=name: seen.__setitem__(name, a[0].clone()))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    left, right = inference.margins(model.receptive_field)
    x = np.pad(volume[:, 0, 10:70, 110:180], ((0, 0), (left, right), (left, right)), constant_values=BACKGROUND_VALUE)
    with torch.inference_mode():
        model(torch.from_numpy(x)[None])
    for h in hooks:
        h.remove()
    return model, seen


@pytest.mark.parametrize("layer", ["first.global_.layer1.conv", "second.global_.layer1.conv",
                                   "first.output", "second.output"])
def test_fft_convolution_equals_direct_on_real_range_activations(cascade_and_activations, layer):
    model, inputs = cascade_and_activations
    x = inputs[layer]
    conv = model.get_submodule(layer)
    assert conv.kernel_size[0] in (13, 21)
    assert x.abs().max() > 1.0  # activations of a real range, not tiny
    fft = fastconv.FFTConv2d(conv)
    with torch.inference_mode():
        direct, by_fft = conv(x), fft(x)
        again = fft(x)  # from the cached spectrum
    assert by_fft.shape == direct.shape and by_fft.dtype == torch.float32
    assert (by_fft - direct).abs().max().item() <= 1e-3
    assert torch.equal(again, by_fft)


def test_fft_convolution_odd_sizes_batches_and_no_bias():
    conv = nn.Conv2d(6, 7, (13, 13), bias=False)
    x = torch.randn(3, 6, 37, 29)
    with torch.inference_mode():
        np.testing.assert_allclose(fastconv.FFTConv2d(conv)(x).numpy(), conv(x).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="valid, stride-1"):
        fastconv.FFTConv2d(nn.Conv2d(2, 2, 13, stride=2))


@pytest.mark.parametrize("batch", [1, 3])
def test_fft_convolution_of_channels_last_input_is_equal(batch):
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 7, 13)
    x = torch.randn(batch, 6, 37, 29)
    with torch.inference_mode():
        out = fastconv.FFTConv2d(conv)(x.contiguous(memory_format=torch.channels_last))
        expected = conv(x)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_channel_mixing_is_a_matrix_product_per_frequency_of_the_conjugate_kernel_spectrum():
    """The FFT layer's two steps checked against their definitions: the kernels' conjugate spectrum, laid out
    (in, out, frequencies) so it is read once in order, and the per-frequency (in) x (in, out) product."""
    torch.manual_seed(3)
    weight = torch.randn(3, 5, 4, 6)  # (out, in, kh, kw)
    spec = spectral.kernel_spectrum(weight, 12, 10)
    padded = torch.zeros(3, 5, 12, 10)
    padded[..., :4, :6] = weight
    expected = torch.fft.rfft2(padded).conj().permute(1, 0, 2, 3).reshape(5, 3, -1)
    assert spec.shape == (5, 3, 12 * 6) and spec.is_contiguous() and not spec.is_conj()
    torch.testing.assert_close(spec, expected, atol=1e-5, rtol=1e-5)
    xs = torch.randn(2, 5, 12 * 6, dtype=torch.complex64)
    mixed = spectral.mix_channels(xs, spec)
    torch.testing.assert_close(mixed, torch.einsum("ncf,cof->nof", xs, spec), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
def test_an_fft_layer_gives_the_same_bits_whatever_the_inputs_layout_and_bfloat16_type(batch):
    """The fast model hands its output layer bfloat16 channels-last maps: the layer's one padding copy makes
    them float32 and contiguous, so the result is bit for bit that of the float32 contiguous input (the
    channels-last route transformed over strided axes, with other rounding, 4x slower)."""
    torch.manual_seed(2)
    conv = nn.Conv2d(16, 4, 21)
    x = torch.randn(batch, 16, 45, 38).to(torch.bfloat16)
    fft = fastconv.FFTConv2d(conv)
    with torch.inference_mode():
        plain = fft(x.float())
        last = fft(x.contiguous(memory_format=torch.channels_last))
        expected = conv(x.float())
    assert last.dtype == torch.float32 and torch.equal(last, plain)
    torch.testing.assert_close(plain, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["TwoPathCNN", "InputCascadeCNN", "LocalCascadeCNN", "AverageCNN"])
def test_fast_model_equals_direct_model(name):
    model = lively(registry.get(name).build(5))
    before = copy.deepcopy(model.state_dict())
    rf = model.receptive_field
    x = torch.randn(2, 4, rf + 40, rf + 31)
    report = []
    fast = fastconv.prepare(model, x.shape, "cpu", conv="fft", report=report)
    assert any(isinstance(m, fastconv.FFTConv2d) for m in fast.modules())
    assert {r.kernel for r in report if r.use_fft} == {13, 21}
    with torch.inference_mode():
        np.testing.assert_allclose(fast(fastconv.prepared_input(fast, x)).exp().numpy(), model(x).exp().numpy(),
                                   atol=1e-3, rtol=0)
    # the original model is untouched
    assert not any(isinstance(m, (fastconv.FFTConv2d, fastconv.FastMaxoutConv)) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["TwoPathCNN", "InputCascadeCNN"])
def test_auto_choice_is_a_fixed_rule_not_a_timing(name):
    """FFT for the output layers (21x21 over 224 maps), direct for the global paths (13x13 over 4 or 8):
    the same choice on every preparation, whatever the machine's load (a timed choice flipped)."""
    model = registry.get(name).build(4)
    reports = [[], []]
    for report in reports:
        fast = fastconv.prepare(model, (1, 4, 100, 90), "cpu", conv="auto", report=report)
    large = [r for r in reports[0] if r.kernel >= fastconv.MIN_FFT_KERNEL]
    assert {(r.kernel, r.use_fft) for r in large} == {(13, False), (21, True)}
    assert all(r.use_fft == (r.in_channels * r.kernel ** 2 >= fastconv.FFT_MIN_TAPS) for r in large)
    assert not any(r.use_fft for r in reports[0] if r.kernel < fastconv.MIN_FFT_KERNEL)
    assert reports[0] == reports[1]
    assert sum(isinstance(m, fastconv.FFTConv2d) for m in fast.modules()) == sum(r.use_fft for r in reports[0])


def test_crop_extent_takes_the_largest_height_and_width_from_different_crops():
    tall, wide = (10, 80, 100, 112), (50, 62, 20, 140)  # 70 x 12 and 12 x 120 (y0, y1, x0, x1)
    assert inference.crop_extent([tall, wide], 33) == (70 + 32, 120 + 32)


def test_tall_and_wide_crops_of_different_slices_fit_the_prepared_spectrum(monkeypatch):
    """The largest height and the largest width come from different slices: the FFT layers are prepared
    for both, so no spectrum is computed after preparation (a crop outside it rebuilt the spectra), and
    the probabilities equal those of the plain model with F.conv2d."""
    model = lively(networks.TwoPathCNN(num_classes=4))
    volume = np.full((4, 2, 160, 160), BACKGROUND_VALUE, np.float32)
    mask = np.zeros((2, 160, 160), bool)
    mask[0, 10:80, 100:112] = True  # tall and narrow: 70 x 12, area 840
    mask[1, 50:62, 20:100] = True  # short and wide: 12 x 80, area 960 (the largest area)
    volume[:, mask] = np.random.default_rng(0).normal(size=(4, int(mask.sum())))
    computed = []
    real = fastconv.kernel_spectrum
    monkeypatch.setattr(fastconv, "kernel_spectrum", lambda *a: computed.append(a[1:]) or real(*a))
    runner = inference.Runner(model, torch.device("cpu"), "fft", inference.DEFAULT_MEMORY_BUDGET, None)
    fast = runner.segment(volume, mask)
    layers = [m for m in runner.prepared.modules() if isinstance(m, fastconv.FFTConv2d)]
    assert len(layers) == 2 and len(computed) == len(layers)  # once each, at preparation
    plain = inference.segment_volume(model, volume, mask, device="cpu", fast=False)
    np.testing.assert_allclose(fast.probabilities, plain.probabilities, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(fast.labels, plain.labels)


def test_two_threads_sharing_one_fft_layer_get_exact_results():
    """The CPU's two worker threads share the prepared model: one layer hammered by two threads with
    inputs inside and outside its reserved size (spectra computed, inserted and evicted meanwhile)
    never fails and gives every input, bit for bit, the result it gets alone (the transform size no
    longer depends on what the other thread left in the cache), F.conv2d's within FFT rounding."""
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 3, 13)
    layer = fastconv.FFTConv2d(conv)
    layer.reserve(40, 40, torch.device("cpu"))
    sizes = [(40, 40), (30, 38), (52, 20), (20, 61), (44, 44), (25, 25)]
    inputs = [torch.randn(1, 5, h, w) for h, w in sizes]
    with torch.inference_mode():
        expected = [F.conv2d(x, conv.weight, conv.bias) for x in inputs]
        alone = [layer(x) for x in reversed(inputs)][::-1]
    assert max((a - e).abs().max().item() for a, e in zip(alone, expected)) < 1e-4
    errors, worst = [], [0.0]
    start = threading.Barrier(2)

    def hammer(offset: int) -> None:
        try:
            start.wait()
            with torch.inference_mode():
                for i in range(150):
                    k = (i + offset) % len(inputs)
                    out = layer(inputs[k])
                    if not torch.equal(out, alone[k]):
                        worst[0] = max(worst[0], (out - alone[k]).abs().max().item(), 1e-30)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(offset,)) for offset in (0, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert worst[0] == 0.0


def test_an_input_takes_the_smallest_reserved_transform_that_holds_it():
    """A second reservation (a volume's focused crops, inference.focus_boxes) keeps the first: each input
    is transformed at the smallest reserved size that holds it, the result F.conv2d's either way."""
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 3, 13)
    layer = fastconv.FFTConv2d(conv)
    big = layer.reserve(70, 70, torch.device("cpu"))
    small = layer.reserve(30, 40, torch.device("cpu"), add=True)
    assert small < big
    assert layer._transform_size(28, 40, torch.device("cpu")) == small
    assert layer._transform_size(31, 40, torch.device("cpu")) == big
    assert layer._transform_size(20, 60, torch.device("cpu")) == big
    for h, w in [(28, 40), (31, 40), (70, 70)]:
        x = torch.randn(1, 5, h, w)
        with torch.inference_mode():
            assert (layer(x) - F.conv2d(x, conv.weight, conv.bias)).abs().max().item() < 1e-4
    assert layer.reserve(70, 70, torch.device("cpu")) == big  # without `add` the smaller one goes
    assert layer._transform_size(28, 40, torch.device("cpu")) == big


def test_fft_segment_volume_equals_direct():
    model = lively(networks.LocalCascadeCNN(num_classes=4))
    volume, mask = brain_volume(slices=2)
    direct = inference.segment_volume(model, volume, mask, device="cpu", fast=False)
    fft = inference.segment_volume(model, volume, mask, device="cpu", fast="fft")
    np.testing.assert_allclose(fft.probabilities, direct.probabilities, atol=1e-3, rtol=0)


def test_fast_maxout_and_pooling_are_exact():
    layer = lively(networks.MaxoutConv(9, 16, 5, pool=4, pieces=3))
    x = torch.randn(2, 9, 31, 27)
    with torch.inference_mode():
        expected = layer(x)
        fast = fastconv.FastMaxoutConv(layer)
        np.testing.assert_allclose(fast(x).numpy(), expected.numpy(), atol=1e-5)
        cl = fastconv.FastMaxoutConv(layer).to(memory_format=torch.channels_last)
        np.testing.assert_allclose(cl(x.contiguous(memory_format=torch.channels_last)).numpy(), expected.numpy(),
                                   atol=1e-5)
    for size in (2, 3, 4, 5):
        assert torch.equal(fastconv.max_pool_stride1(x, size), F.max_pool2d(x, size, stride=1))


def test_fft_length():
    assert fastconv.fft_length(194) == 196 and fastconv.fft_length(128) == 128 and fastconv.fft_length(97) == 98


def test_fft_convolution_reuses_a_larger_spectrum_exactly():
    """Crops of a volume differ in size: a smaller input reuses the spectrum of a larger one."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 3, 13)
    fft = fastconv.FFTConv2d(conv)
    with torch.no_grad():
        fft(torch.randn(1, 6, 90, 70))
        small = torch.randn(2, 6, 40, 33)
        out = fft(small)
        expected = conv(small)
    assert len(fft._spectra) == 1 and next(iter(fft._spectra))[:2] == (fastconv.fft_length(90), fastconv.fft_length(70))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_auto_precision_is_bfloat16_only_on_a_cpu_with_native_bfloat16(monkeypatch):
    """"auto" resolves by the CPU's instructions; the result says what ran, on every route that reports it."""
    model = lively(networks.TwoPathCNN(num_classes=4))
    volume, mask = brain_volume(slices=1)
    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(inference, "native_bfloat16", lambda: native)
        assert inference.resolve_precision("auto", torch.device("cpu")) == expected
        messages = []
        result = inference.segment_volume(model, volume, mask, device="cpu", fast=False, precision="auto",
                                          progress=lambda f, m: messages.append(m))
        assert result.precision == expected and f"(cpu, {expected})" in messages[-1]
        same = inference.segment_volume(model, volume, mask, device="cpu", fast=False, precision=expected)
        np.testing.assert_array_equal(result.probabilities, same.probabilities)
    monkeypatch.setattr(inference, "native_bfloat16", lambda: True)
    assert inference.resolve_precision("auto", torch.device("cuda")) == "float32"
    assert inference.resolve_precision("bfloat16", torch.device("cuda")) == "bfloat16"
    assert inference.resolve_precision("float32", torch.device("cpu")) == "float32"
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16"):
        inference.resolve_precision("float16", torch.device("cpu"))


def test_native_bfloat16_follows_what_torch_detects_on_this_cpu():
    """True exactly when torch reports AMX tiles or AVX512-BF16 (the flags /proc/cpuinfo names on Linux)."""
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert inference.native_bfloat16() == bool(flags & {"amx_tile", "avx512_bf16"})
