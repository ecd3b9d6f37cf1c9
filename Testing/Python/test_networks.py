"""Layer shapes of every network against PAPER.md's tables (Fig. 2, Fig. 3)."""
from __future__ import annotations

import pytest
import torch

from BrainTumorCNNLib.network import networks, registry, slice_stack


def shapes_of(model, input_size, names, pre=()):
    """Output shape (C, H, W) of each named submodule, and input shape of each in `pre`,
    for one input patch of `input_size` pixels a side."""
    seen = {}
    hooks = []
    for name, module in model.named_modules():
        if name in names:
            hooks.append(module.register_forward_hook(
                lambda m, a, out, name=name: seen.__setitem__(name, tuple(out.shape[1:]))))
        if name in pre:
            hooks.append(module.register_forward_pre_hook(
                lambda m, a, name=name: seen.__setitem__("in:" + name, tuple(a[0].shape[1:]))))
    with torch.inference_mode():
        out = model(torch.randn(2, model.in_channels, input_size, input_size))
    for h in hooks:
        h.remove()
    seen["out"] = tuple(out.shape[1:])
    return seen


@pytest.mark.parametrize("num_classes", [4, 5])
def test_two_path_layers_match_figure_2(num_classes):
    model = networks.TwoPathCNN(num_classes=num_classes).eval()
    s = shapes_of(model, 33, {"local.layer1", "local.layer2", "global_.layer1", "local.layer1.conv",
                              "local.layer2.conv", "global_.layer1.conv"}, pre={"output"})
    assert s["local.layer1.conv"] == (128, 27, 27)  # 7x7 conv, 2 Maxout pieces per map
    assert s["local.layer1"] == (64, 24, 24)  # Maxout + 4x4 pool, stride 1: 27 -> 24
    assert s["local.layer2.conv"] == (128, 22, 22)
    assert s["local.layer2"] == (64, 21, 21)  # 3x3 conv + Maxout + 2x2 pool: 22 -> 21
    assert s["global_.layer1.conv"] == (320, 21, 21)
    assert s["global_.layer1"] == (160, 21, 21)  # 13x13 conv + Maxout, no pooling
    assert s["in:output"] == (224, 21, 21)  # concatenation
    assert s["out"] == (num_classes, 1, 1)  # 21x21 output conv + softmax
    assert model.output.kernel_size == (21, 21)


@pytest.mark.parametrize("cls, features", [(networks.LocalPathCNN, 64), (networks.GlobalPathCNN, 160)])
def test_single_path_ablations(cls, features):
    model = cls(num_classes=5).eval()
    s = shapes_of(model, 33, set(), pre={"output"})
    assert s["in:output"] == (features, 21, 21)
    assert s["out"] == (5, 1, 1)


@pytest.mark.parametrize("num_classes", [4, 5])
def test_input_cascade_matches_figure_3(num_classes):
    model = networks.InputCascadeCNN(num_classes=num_classes).eval()
    s = shapes_of(model, 65, {"first"}, pre={"second"})
    assert s["first"] == (num_classes, 33, 33)  # 4x65x65 -> 5x33x33
    assert s["in:second"] == (4 + num_classes, 33, 33)  # concatenated to the 4x33x33 input
    assert s["out"] == (num_classes, 1, 1)


@pytest.mark.parametrize("num_classes", [4, 5])
def test_local_cascade_matches_figure_3(num_classes):
    model = networks.LocalCascadeCNN(num_classes=num_classes).eval()
    s = shapes_of(model, 56, {"first", "second.local.layer1"}, pre={"second.local.layer2"})
    assert s["first"] == (num_classes, 24, 24)  # 4x56x56 -> 5x24x24
    assert s["second.local.layer1"] == (64, 24, 24)
    assert s["in:second.local.layer2"] == (64 + num_classes, 24, 24)  # 69x24x24 for 5 classes
    assert s["out"] == (num_classes, 1, 1)


@pytest.mark.parametrize("num_classes", [4, 5])
def test_mean_field_cascade_matches_figure_3(num_classes):
    model = networks.MFCascadeCNN(num_classes=num_classes).eval()
    s = shapes_of(model, 53, {"first"}, pre={"second.output"})
    assert s["first"] == (num_classes, 21, 21)  # 4x53x53 -> 5x21x21
    assert s["in:second.output"] == (224 + num_classes, 21, 21)  # right before the output layer
    assert s["out"] == (num_classes, 1, 1)


def test_receptive_fields_are_declared_once():
    expected = {"TwoPathCNN": 33, "TwoPathCNN-1phase": 33, "LocalPathCNN": 33, "GlobalPathCNN": 33,
                "AverageCNN": 33, "InputCascadeCNN": 65, "LocalCascadeCNN": 56, "MFCascadeCNN": 53,
                "SliceStackCNN": 33, "EnsembleCNN": 33, "CascadeEnsembleCNN": 65}
    assert {name: spec.receptive_field for name, spec in registry.MODELS.items()} == expected


@pytest.mark.parametrize("name", list(registry.MODELS))
@pytest.mark.parametrize("num_classes", [4, 5])
def test_receptive_field_patch_maps_to_one_pixel(name, num_classes):
    spec = registry.get(name)
    model = spec.build(num_classes).eval()
    rf, c = spec.receptive_field, slice_stack.input_channels(model)
    with torch.inference_mode():
        assert tuple(model(torch.randn(3, c, rf, rf)).shape) == (3, num_classes, 1, 1)
        assert tuple(model(torch.randn(1, c, rf + 6, rf + 2)).shape) == (1, num_classes, 7, 3)
        with pytest.raises(RuntimeError):
            model(torch.randn(1, c, rf - 1, rf - 1))  # smaller than the receptive field


@pytest.mark.parametrize("name", list(registry.MODELS))
def test_outputs_are_log_probabilities(name):
    model = registry.get(name).build(5).eval()
    rf = model.receptive_field
    with torch.inference_mode():
        p = model(torch.randn(2, slice_stack.input_channels(model), rf + 1, rf + 1)).exp()
    assert torch.allclose(p.sum(dim=1), torch.ones(2, 2, 2), atol=1e-5)


def test_slice_stack_reads_three_slices_in_the_local_path_and_the_centre_slice_in_the_global():
    model = networks.SliceStackCNN(num_classes=5).eval()
    assert model.slice_offsets == (-3, 0, 3) and slice_stack.input_channels(model) == 12
    seen = {}
    hooks = [module.register_forward_pre_hook(lambda m, a, name=name: seen.__setitem__(name, tuple(a[0].shape[1:])))
             for name, module in model.named_modules() if name in ("local.layer1", "global_.layer1", "output")]
    x = torch.randn(2, 12, 33, 33)
    with torch.inference_mode():
        out = model(x)
        changed = x.clone()
        changed[:, :4] += 1.0  # the slice 3 below: only the local path reads it
        local_only = model.features(changed)[:, :networks.LOCAL_CHANNELS] != model.features(x)[:, :networks.LOCAL_CHANNELS]
        global_same = torch.equal(model.features(changed)[:, networks.LOCAL_CHANNELS:],
                                  model.features(x)[:, networks.LOCAL_CHANNELS:])
    for h in hooks:
        h.remove()
    assert seen == {"local.layer1": (12, 33, 33), "global_.layer1": (4, 33, 33), "output": (224, 21, 21)}
    assert tuple(out.shape) == (2, 5, 1, 1)
    assert local_only.any() and global_same
