"""Training: sampling, losses, phases, checkpoints, resume, cascades, distributed."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import maintainer_tool, write_synthetic_case

from BrainTumorCNNLib import labels
from BrainTumorCNNLib.learning import sampling, training
from BrainTumorCNNLib.network import networks, weights
from BrainTumorCNNLib.preparing.preprocessing import BACKGROUND_VALUE, PreprocessingConfig

NO_N4 = PreprocessingConfig(n4=False)


def tiny_config(cases, **overrides):
    base = dict(model="TwoPathCNN", num_classes=4, train_cases=[str(c) for c in cases[:2]],
                validation_cases=[str(cases[2])], phase1_epochs=2, phase2_epochs=1, batches_per_epoch=2,
                batch_size=4, output_size=4, validation_slice_step=2, preprocessing=NO_N4, threads=1)
    base.update(overrides)
    return training.TrainingConfig(**base)


def test_balanced_sampling_draws_every_class_about_equally(synthetic_cases):
    cases = sampling.load_cases(synthetic_cases, NO_N4)
    sampler = sampling.PatchSampler(cases, 33, 1, 4, np.random.default_rng(0))
    _, y = sampler.batch(2000, balanced=True)
    share = np.bincount(y.ravel(), minlength=4) / y.size
    assert np.allclose(share, 0.25, atol=0.04), share
    _, y = sampler.batch(2000, balanced=False)
    natural = np.bincount(y.ravel(), minlength=4) / y.size
    assert natural[0] > 0.6  # mostly healthy brain: the natural frequencies


@pytest.mark.parametrize("output_size, margin", [(1, 0), (4, 0), (4, 3)])
def test_patch_is_centred_on_its_label(synthetic_cases, output_size, margin):
    cases = sampling.load_cases(synthetic_cases[:1], NO_N4)
    sampler = sampling.PatchSampler(cases, 33, output_size, 4, np.random.default_rng(1), margin=margin)
    (i,), (flat,) = sampler.centres(1, balanced=True)
    z, r, c = np.unravel_index(flat, sampler.shapes[i])
    r, c = r - sampler.pad, c - sampler.pad  # in the cached (unpadded) case
    sampler.centres = lambda n, balanced: (np.array([i]), np.array([flat]))
    x, y = sampler.batch(1, balanced=True)
    centre = 16 + (output_size - 1) // 2 + margin  # the patch pixel over the centre voxel
    label_centre = centre if margin else (output_size - 1) // 2  # labels cover the patch when margin > 0
    truth = labels.labels_to_classes(cases[i].truth, 4)
    assert y[0, label_centre, label_centre] == truth[z, r, c]
    assert np.array_equal(x[0, :, centre, centre], cases[i].images[:, z, r, c].astype(np.float32))


@pytest.mark.parametrize("receptive_field", [33, 53, 56, 65])  # the networks' fields; LocalCascadeCNN's is even
def test_a_patch_at_the_brain_s_far_corner_fits_the_padded_case(synthetic_cases, receptive_field):
    """The patch of the last brain voxel in row and column order reaches past it by the field's larger half
    plus the window's (56 and 16: 36 pixels, one more than before it); it is cut from the padding."""
    cases = sampling.load_cases(synthetic_cases[:1], NO_N4)
    sampler = sampling.PatchSampler(cases, receptive_field, 16, 4, np.random.default_rng(1), margin=2)
    brain = np.pad(cases[0].brain, ((0, 0), (sampler.pad,) * 2, (sampler.pad,) * 2))
    points = np.argwhere(brain)
    z, r, c = points[np.lexsort(points.T)][-1]  # the largest column, then row
    flat = np.ravel_multi_index((z, r, c), sampler.shapes[0])
    sampler.centres = lambda n, balanced: (np.array([0]), np.array([flat]))
    x, _ = sampler.batch(1, balanced=True)
    at = sampler.before  # the patch pixel over the centre voxel
    assert np.array_equal(x[0, :, at, at], cases[0].images[:, z, r - sampler.pad, c - sampler.pad].astype(np.float32))
    assert (x[0, :, at, -1] == BACKGROUND_VALUE).all()  # beyond the brain's last column: padding


def test_thick_slice_kernel_matches_the_benchmark_s_thick_slices_and_keeps_a_ramp():
    from BrainTumorCNNLib.reading.geometry import Geometry
    from BrainTumorCNNLib.scoring.site_shifts import resample_thick
    volume = np.random.default_rng(2).normal(size=(30, 4, 5)).astype(np.float32)
    geometry = Geometry((5, 4, 30), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    whole = resample_thick(volume, geometry, 5.0)
    for z in range(3, 27):  # away from the ends, where the two extrapolate differently
        slices, weights = sampling.thick_slice_kernel(z, 5, 0)
        assert weights.sum() == pytest.approx(1.0)
        assert np.allclose(np.tensordot(weights, volume[slices], axes=([0], [0])), whole[z], atol=1e-5)
    for thickness in (2, 3, 5):
        for phase in range(thickness):
            slices, weights = sampling.thick_slice_kernel(17, thickness, phase)
            assert float(weights @ slices) == pytest.approx(17.0)  # a linear ramp is kept, wherever the slabs lie


def test_thick_slice_sampling_changes_only_flair_and_t2_of_the_chosen_share(synthetic_cases):
    cases = sampling.load_cases(synthetic_cases[:1], NO_N4)
    plain = sampling.PatchSampler(cases, 33, 4, 4, np.random.default_rng(5))
    thick = sampling.PatchSampler(cases, 33, 4, 4, np.random.default_rng(5),
                                  sampling.SamplingConfig(thick_slice_fraction=0.5))
    # same centres: the thick-slice draws come after them from the same generator
    centres = plain.centres(400, balanced=True)
    plain.centres = thick.centres = lambda n, balanced: centres
    (x0, y0), (x1, y1) = plain.batch(400, True), thick.batch(400, True)
    assert np.array_equal(y0, y1) and np.array_equal(x0[:, :2], x1[:, :2])
    changed = np.any(x0[:, 2:] != x1[:, 2:], axis=(1, 2, 3))
    assert 0.35 < changed.mean() < 0.65
    background = x0 == -4.0
    assert np.all(x1[background] == -4.0)


def test_renormalised_thick_patches_are_what_preprocessing_makes_of_a_thick_raw_scan(tmp_path):
    """The recipe's thick slices (issue 33): FLAIR acquired in 5 mm slices on the raw scan, then clipped and
    z-scored as `segment` does, against the sampler's patch made from the cached thin z-scores."""
    from BrainTumorCNNLib.preparing.preprocessing import preprocess
    from BrainTumorCNNLib.running.cases import read_case
    from BrainTumorCNNLib.scoring.site_shifts import FLAIR, resample_thick
    folder = write_synthetic_case(tmp_path, shape=(30, 48, 48))
    raw = read_case(folder)
    case = sampling.load_case(folder, NO_N4)
    brain = raw.images.any(axis=0)
    thick_raw = raw.images.astype(np.float32)
    thick_raw[FLAIR] = np.where(brain, resample_thick(thick_raw[FLAIR], raw.geometry, 5.0), 0.0)
    expected = preprocess(thick_raw, NO_N4).images[FLAIR]
    z0, z1, y0, y1, x0, x1 = case.box
    renormalised = sampling.PatchSampler([case], 33, 4, 4, np.random.default_rng(0), sampling.SamplingConfig(
        thick_slice_fraction=1.0, thick_slice_min=5, thick_slice_max=5, thick_slice_renormalise=True))
    plain = sampling.PatchSampler([case], 33, 4, 4, np.random.default_rng(0),
                                  sampling.SamplingConfig(thick_slice_fraction=1.0))
    pad, depth = renormalised.pad, case.images.shape[1]
    rows, columns = np.arange(pad, pad + y1 - y0), np.arange(pad, pad + x1 - x0)
    errors, plain_errors = [], []
    for z in range(4, depth - 4):  # slabs of the raw scan start at raw slice 0: phase (-z0) mod 5 in the crop
        slices, _ = sampling.thick_slice_kernel(z, 5, (-z0) % 5)
        inside = case.brain[np.clip(slices, 0, depth - 1)].all(axis=0) & (slices.min() >= 0) & (slices.max() < depth)
        if not inside.any():
            continue
        thin = renormalised.images[0][:, z][:, rows][:, :, columns].astype(np.float32)
        truth = expected[z0 + z, y0:y1, x0:x1][inside]
        for sampler, out in ((renormalised, errors), (plain, plain_errors)):
            patch = sampler.thick_patch(0, z, rows, columns, thin, 5, (-z0) % 5)
            out.append(np.abs(patch[1][inside] - truth))
    errors, plain_errors = np.concatenate(errors), np.concatenate(plain_errors)
    assert errors.size > 1000
    assert np.median(errors) < 0.05 and np.percentile(errors, 99) < 0.1, (np.median(errors), np.percentile(errors, 99))
    # averaging the thin z-scores, without the thick volume's own statistics, misses it
    assert np.median(plain_errors) > 5 * np.median(errors), np.median(plain_errors)


def test_balanced_loss_weighs_each_present_class_equally():
    log_probs = torch.log_softmax(torch.randn(2, 4, 3, 3), dim=1)
    targets = torch.zeros(2, 3, 3, dtype=torch.long)
    targets[0, 0, 0] = 3  # one label of class 3 against 17 of class 0
    per = -log_probs.gather(1, targets[:, None])[:, 0]
    expected = 0.5 * per[targets == 0].mean() + 0.5 * per[targets == 3].mean()
    assert torch.allclose(training.window_loss(log_probs, targets, True, 4), expected)
    assert torch.allclose(training.window_loss(log_probs, targets, False, 4), per.mean())


@pytest.mark.parametrize("num_classes", [4, 5])
def test_a_networks_classes_sum_to_the_regions_brats_scores(num_classes):
    truth = np.random.default_rng(0).integers(0, 5, size=(6, 7)).astype(np.uint8)
    if num_classes == 4:
        truth[truth == 3] = 1  # BraTS 2017+ have no separate non-enhancing label
    classes = labels.labels_to_classes(truth, num_classes)
    member = labels.class_regions(num_classes)
    for r, region in enumerate(labels.REGIONS):
        np.testing.assert_array_equal(member[r][classes], labels.region_mask(truth, region), err_msg=region)


def test_the_region_loss_charges_a_confusion_inside_the_tumor_to_the_regions_it_spoils():
    """Edema called necrosis spoils the core alone; tumor called background spoils the whole tumor and the
    core; the labels' NLL charges both alike."""
    truth = torch.tensor([[[1, 1, 2, 2], [0, 0, 0, 0]]])  # (1, 2, 4): NCR/NET, edema, background
    sure = lambda classes: torch.log(F.one_hot(classes, 4).permute(0, 3, 1, 2).float().clamp(min=1e-6))
    exact = training.region_dice_loss(sure(truth), truth, 4)
    edema_as_necrosis = truth.clone()
    edema_as_necrosis[truth == 2] = 1
    tumor_as_background = truth.clone()
    tumor_as_background[truth == 1] = 0
    assert float(exact) < 1e-3
    # regions: whole tumor exact; core: 4 called, the 2 true among them (Dice 5/7); enhancing absent, not called
    assert float(training.region_dice_loss(sure(edema_as_necrosis), truth, 4)) == pytest.approx(
        (1 - 5 / 7) / 3, abs=1e-3)
    # whole tumor 2 of 4 called (Dice 5/7), core none of 2 (Dice 1/3)
    assert float(training.region_dice_loss(sure(tumor_as_background), truth, 4)) == pytest.approx(
        ((1 - 5 / 7) + (1 - 1 / 3)) / 3, abs=1e-3)
    nll = [float(training.window_loss(sure(c), truth, False, 4)) for c in (edema_as_necrosis, tumor_as_background)]
    assert nll[0] == pytest.approx(nll[1])


def test_a_run_with_the_region_loss_records_it_and_continues_only_with_it(synthetic_cases, tmp_path):
    import argparse

    from BrainTumorCNNLib.frontends import train as train_frontend

    parser = argparse.ArgumentParser()
    train_frontend.configure_parser(parser)
    args = parser.parse_args(["--run-dir", "run", "--region-loss", "0.5"])
    assert train_frontend.config_from_args(args).region_loss == 0.5
    assert training.TrainingConfig().region_loss == 0.0  # the paper's loss unless asked
    run = tmp_path / "run"
    plain = tmp_path / "plain"
    training.train(tiny_config(synthetic_cases, phase2_epochs=0, region_loss=1.0), run, progress=False)
    training.train(tiny_config(synthetic_cases, phase2_epochs=0), plain, progress=False)
    assert json.loads((run / "config.json").read_text())["region_loss"] == 1.0
    losses = [float(r["train_loss"]) for d in (run, plain) for r in csv.DictReader((d / "log.csv").open())]
    assert all(np.isfinite(losses)) and losses[:2] != losses[2:]
    with pytest.raises(ValueError, match="region_loss"):
        training.train(tiny_config(synthetic_cases, phase1_epochs=3, phase2_epochs=0, region_loss=0.5), run,
                       progress=False)


def test_a_stacked_patch_is_the_crop_inference_gives_a_slice_stack_network(synthetic_cases):
    """SliceStackCNN learns from what it is given at inference: the slices 3 below and above as channels,
    background beyond the case's first and last slice."""
    from BrainTumorCNNLib.running import inference
    cases = sampling.load_cases(synthetic_cases[:1], NO_N4)
    offsets = networks.SliceStackCNN.slice_offsets
    sampler = sampling.PatchSampler(cases, 33, 1, 4, np.random.default_rng(3), slice_offsets=offsets)
    _, flat = sampler.centres(60, balanced=True)
    brain = sampler.pools["brain"].per_case[0]
    first = brain[np.unravel_index(brain, sampler.shapes[0])[0] == 0]  # the crop starts at the brain's first slice
    assert len(first)
    flat = np.concatenate([flat, first[:3]])
    case = np.zeros(len(flat), dtype=np.int64)
    sampler.centres = lambda n, balanced: (case, flat)
    x, _ = sampler.batch(len(flat), balanced=True)
    assert x.shape == (len(flat), 12, 33, 33)
    images = cases[0].images.astype(np.float32)
    for i, f in enumerate(flat):
        zi, r, c = np.unravel_index(f, sampler.shapes[0])
        r, c = r - sampler.pad, c - sampler.pad
        crop = inference._padded_crop(images, [zi], r, r + 1, c, c + 1, 33, offsets=offsets)
        assert np.array_equal(x[i], crop[0]), (zi, r, c)
    assert np.all(x[-3:, :4] == BACKGROUND_VALUE)  # 3 below the first slice: beyond the case
    assert np.any(x[-3:, 4:8] != BACKGROUND_VALUE)


def test_thick_slices_stacked_are_one_acquisition(synthetic_cases):
    """With neighbouring slices stacked, a thick patch's centre slice is what the one-slice sampler makes of
    it from the same draws, and its neighbours are thick as well."""
    cases = sampling.load_cases(synthetic_cases[:1], NO_N4)
    thick = sampling.SamplingConfig(thick_slice_fraction=1.0, thick_slice_min=3, thick_slice_max=6)
    offsets = networks.SliceStackCNN.slice_offsets
    single = sampling.PatchSampler(cases, 33, 4, 4, np.random.default_rng(5), thick)
    stacked = sampling.PatchSampler(cases, 33, 4, 4, np.random.default_rng(5), thick, slice_offsets=offsets)
    thin = sampling.PatchSampler(cases, 33, 4, 4, np.random.default_rng(5), slice_offsets=offsets)
    centres = thin.centres(200, balanced=True)  # the two thick samplers' generators left where they start
    single.centres = stacked.centres = thin.centres = lambda n, balanced: centres
    (x1, _), (x3, _), (x0, _) = single.batch(200, True), stacked.batch(200, True), thin.batch(200, True)
    assert np.array_equal(x3[:, 4:8], x1)
    for s in (0, 2):
        assert np.array_equal(x3[:, 4 * s:4 * s + 2], x0[:, 4 * s:4 * s + 2])  # T1, T1c thin
        inside = (x0[:, 4 * s + 2:4 * s + 4] != BACKGROUND_VALUE).any(axis=(1, 2, 3))
        changed = np.any(x3[:, 4 * s + 2:4 * s + 4] != x0[:, 4 * s + 2:4 * s + 4], axis=(1, 2, 3))
        assert changed[inside].mean() > 0.9


def test_a_slice_stack_network_trains_and_segments(synthetic_cases, tmp_path):
    from BrainTumorCNNLib.running import inference
    run = tmp_path / "run"
    training.train(tiny_config(synthetic_cases, model="SliceStackCNN",
                               augmentation=training.AugmentationConfig(enabled=True)), run, progress=False)
    model, card = weights.load("SliceStackCNN", run / "best.safetensors")
    assert isinstance(model, networks.SliceStackCNN) and card["in_channels"] == 4
    case = sampling.load_cases(synthetic_cases[2:], NO_N4)[0]
    result = inference.segment_volume(model, case.images.astype(np.float32), case.brain, device="cpu")
    assert result.probabilities.shape[1:] == case.brain.shape
    assert np.isfinite(result.probabilities).all()


def test_two_phase_training_writes_everything_and_phase2_trains_only_the_output(synthetic_cases, tmp_path):
    run = tmp_path / "run"
    summary = training.train(tiny_config(synthetic_cases), run, progress=False)
    for name in ("checkpoint.pt", "log.csv", "curves.png", "config.json", "summary.json",
                 "best.safetensors", "best.json", "phase1.safetensors"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and [r["phase"] for r in rows] == ["1", "1", "2"]
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)
    assert float(rows[0]["momentum"]) == pytest.approx(0.5) and float(rows[1]["momentum"]) == pytest.approx(0.9)
    phase1, final = load_file(str(run / "phase1.safetensors")), load_file(str(run / "best.safetensors"))
    for name in phase1:
        same = torch.equal(phase1[name], final[name])
        assert same != name.startswith("output."), name
    model, card = weights.load("TwoPathCNN", run / "best.safetensors")
    assert card["train_cases"] == ["Synth_000", "Synth_001"] and card["label_scheme"] == "brats2021"
    assert summary["epoch"] == 3
    bound = 0.2
    assert all(float(w.detach().abs().max()) <= bound + 1e-7
               for w in training.trainable_kernels(model.requires_grad_(True)))


def test_a_run_cut_at_every_step_ends_with_the_weights_of_an_uninterrupted_run(synthetic_cases, tmp_path):
    """Deadline 0 stops after every step (mid-epoch, at epoch ends, across the phase change); rerunning
    continues exactly: sampling, augmentation, thick slices, dropout, momentum and schedules included."""
    from BrainTumorCNNLib.learning.augmentation import AugmentationConfig
    config = tiny_config(synthetic_cases, batches_per_epoch=3, augmentation=AugmentationConfig(enabled=True),
                         sampling=sampling.SamplingConfig(thick_slice_fraction=0.5))
    whole = training.train(config, tmp_path / "whole", progress=False)
    pieces, calls = None, 0
    while pieces is None or pieces.get("stopped"):
        pieces = training.train(config, tmp_path / "pieces", progress=False, deadline=0.0)
        calls += 1
    assert calls == 3 * 3 and whole["global_step"] == pieces["global_step"] == 9
    a, b = load_file(str(tmp_path / "whole" / "last.safetensors")), load_file(str(tmp_path / "pieces" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [list(csv.DictReader((tmp_path / run / "log.csv").open())) for run in ("whole", "pieces")]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "wall_s")}
    assert [strip(r) for r in rows[0]] == [strip(r) for r in rows[1]]
    assert [int(r["step"]) for r in rows[0]] == [3, 6, 9] and rows[0][0]["train_dice_complete"]


def test_a_run_continues_only_under_the_config_it_started_with(synthetic_cases, tmp_path):
    """Weights trained under two configs would get a card naming one: a changed setting is refused (the
    config.json of the start kept), where and how fast it runs may change."""
    from dataclasses import replace
    config = tiny_config(synthetic_cases, batches_per_epoch=3)
    run = tmp_path / "r"
    assert training.train(config, run, progress=False, deadline=0.0)["stopped"] == "deadline"
    started = (run / "config.json").read_text()
    for changed in (replace(config, learning_rate=0.01), replace(config, train_cases=config.train_cases[:1]),
                    replace(config, sampling=sampling.SamplingConfig(thick_slice_fraction=0.5))):
        with pytest.raises(ValueError, match="other settings"):
            training.train(changed, run, progress=False)
        assert (run / "config.json").read_text() == started
    finished = training.train(replace(config, threads=2, cache_dir=str(tmp_path / "elsewhere")), run, progress=False)
    assert finished["stopped"] is None and finished["global_step"] == 9


def test_a_run_continues_in_the_arithmetic_of_the_machine_it_resumes_on_and_records_each_piece(
        synthetic_cases, tmp_path):
    """bfloat16 where the CPU lacks it natively costs about 5 times a float32 step: a campaign run resumes in
    what its machine does best ("auto"), and its state says which arithmetic each piece trained in."""
    from dataclasses import replace
    from BrainTumorCNNLib.running.inference import resolve_precision
    config = tiny_config(synthetic_cases, batches_per_epoch=3, precision="bfloat16")
    run = tmp_path / "r"
    assert training.train(config, run, progress=False, deadline=0.0)["precisions"] == ["bfloat16"]
    finished = training.train(replace(config, precision="float32"), run, progress=False)
    assert finished["stopped"] is None and finished["global_step"] == 9
    assert finished["precisions"] == ["bfloat16", "float32"]
    fresh = training.train(replace(config, precision="auto"), tmp_path / "auto", progress=False)
    assert fresh["precisions"] == [resolve_precision("auto", torch.device("cpu"))]
    with pytest.raises(ValueError, match="precision"):
        replace(config, precision="float16")


def test_sigterm_stops_a_run_with_a_checkpoint_that_resumes(synthetic_cases, tmp_path):
    import signal
    import threading
    config = tiny_config(synthetic_cases, batches_per_epoch=4)
    import time

    def terminate_once_caught():  # as soon as the run has put its handler in place
        while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_caught, daemon=True).start()
    stopped = training.train(config, tmp_path / "r", progress=False)
    assert stopped["stopped"] == "deadline" and 0 < stopped["global_step"] < 12
    assert (tmp_path / "r" / "checkpoint.pt").is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    finished = training.train(config, tmp_path / "r", progress=False)
    assert finished["stopped"] is None and finished["global_step"] == 12


def test_bfloat16_training_learns_and_keeps_float32_weights(synthetic_cases, tmp_path):
    summary = training.train(tiny_config(synthetic_cases, precision="bfloat16"), tmp_path / "r", progress=False)
    trained = load_file(str(tmp_path / "r" / "last.safetensors"))
    assert summary["epoch"] == 3 and all(t.dtype == torch.float32 for t in trained.values())
    rows = list(csv.DictReader((tmp_path / "r" / "log.csv").open()))
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)
    with pytest.raises(ValueError, match="precision"):
        tiny_config(synthetic_cases, precision="float16")


def test_resume_continues_from_the_last_epoch(synthetic_cases, tmp_path):
    run = tmp_path / "run"
    training.train(tiny_config(synthetic_cases, phase1_epochs=1, phase2_epochs=0), run, progress=False)
    first = list(csv.DictReader((run / "log.csv").open()))
    training.train(tiny_config(synthetic_cases, phase1_epochs=1, phase2_epochs=1), run, progress=False)
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert len(first) == 1 and len(rows) == 2
    assert rows[0] == first[0]  # epoch 1 was not trained again
    assert json.loads((run / "summary.json").read_text())["epoch"] == 2


def test_cascade_trains_the_second_network_on_a_frozen_first(synthetic_cases, tmp_path):
    first_path = tmp_path / "TwoPathCNN.safetensors"
    first = networks.TwoPathCNN(num_classes=4)
    weights.save(first, "TwoPathCNN", first_path, {})
    run = tmp_path / "cascade"
    training.train(tiny_config(synthetic_cases, model="MFCascadeCNN", first_weights=str(first_path),
                               phase1_epochs=1, phase2_epochs=0), run, progress=False)
    trained = load_file(str(run / "best.safetensors"))
    for name, tensor in first.state_dict().items():
        assert torch.equal(trained[f"first.{name}"], tensor), name
    assert not torch.equal(trained["second.output.weight"], networks.MFCascadeCNN(num_classes=4).second.output.weight)


def _varied(model):
    """Weights large enough that outputs differ from pixel to pixel (the paper's initialisation gives
    nearly uniform maps, which would let a misaligned map pass)."""
    torch.manual_seed(4)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.05)
    return model.eval()


@pytest.mark.parametrize("name", ["InputCascadeCNN", "LocalCascadeCNN", "MFCascadeCNN"])
def test_a_cascade_given_the_first_maps_outputs_what_it_computes_itself(name):
    model = _varied(getattr(networks, name)(num_classes=4))
    size = model.receptive_field + 5
    wide = torch.randn(2, 4, size + 32, size + 32)  # the patch and the context the first network's maps saw
    patch = wide[:, :, 16:16 + size, 16:16 + size]
    with torch.no_grad():
        maps = model.first(wide).exp()  # (2, 4, size, size): the first network at every pixel of the patch
        assert torch.allclose(model(torch.cat([patch, maps], dim=1)), model(patch), atol=1e-5)


def test_first_stage_maps_travel_with_the_sampled_patches_aligned(synthetic_cases, tmp_path):
    from BrainTumorCNNLib.learning import first_stage
    cascade = networks.InputCascadeCNN(num_classes=4)
    cascade.first = _varied(networks.TwoPathCNN(num_classes=4))
    cases = sampling.load_cases(synthetic_cases[:1], NO_N4)
    with_maps = first_stage.with_first_stage(cases, cascade, "sha-of-test-weights", tmp_path, torch.device("cpu"),
                                             "float32")
    assert with_maps[0].images.shape == (8,) + cases[0].images.shape[1:]
    again = first_stage.with_first_stage(cases, cascade, "sha-of-test-weights", tmp_path, torch.device("cpu"),
                                         "float32")  # from the cache this time
    assert np.array_equal(again[0].images, with_maps[0].images) and len(list(tmp_path.glob("*-first-*.npz"))) == 1
    # the case preprocessed otherwise (another normalisation; an N4 setting likewise) gets maps of its own
    other = sampling.load_cases(synthetic_cases[:1], PreprocessingConfig(n4=False, statistics="median-iqr"))
    assert other[0].box == cases[0].box
    otherwise = first_stage.with_first_stage(other, cascade, "sha-of-test-weights", tmp_path, torch.device("cpu"),
                                             "float32")
    assert len(list(tmp_path.glob("*-first-*.npz"))) == 2
    assert not np.array_equal(otherwise[0].images[4:], with_maps[0].images[4:])
    sampler = sampling.PatchSampler(with_maps, 65, 4, 4, np.random.default_rng(3))
    centres = sampler.centres(64, balanced=True)
    sampler.centres = lambda n, balanced: centres
    x, _ = sampler.batch(64, balanced=True)
    assert x.shape == (64, 8, 68, 68)
    with torch.no_grad():
        live = cascade.first(torch.from_numpy(x[:, :4])).exp().numpy()  # (64, 4, 36, 36)
    carried = x[:, 4:, 16:52, 16:52]
    # where the maps were computed: the pixels inside the case's crop (beyond it they stand for background)
    _, rows, columns = np.unravel_index(centres[1], sampler.shapes[0])
    reach = np.arange(68)[16:52] - sampler.before
    depth, height, width = cases[0].brain.shape
    inside = (((rows[:, None] + reach >= sampler.pad) & (rows[:, None] + reach < sampler.pad + height))[:, :, None]
              & ((columns[:, None] + reach >= sampler.pad) & (columns[:, None] + reach < sampler.pad + width))[:, None])
    assert inside.mean() > 0.5
    error = np.abs(live - carried).max(axis=1)
    assert error[inside].max() < 3e-3  # the 8-bit codes and float16 rounding
    assert live.std() > 0.05  # the maps vary, so a shift of one pixel would show


def test_cascade_without_first_weights_is_a_clear_error(synthetic_cases, tmp_path):
    with pytest.raises(ValueError, match="--first-weights"):
        training.train(tiny_config(synthetic_cases, model="InputCascadeCNN"), tmp_path / "r", progress=False)


def test_validating_on_a_training_case_under_another_name_is_a_clear_error(synthetic_cases, tmp_path):
    from conftest import renamed_copy
    twin = renamed_copy(synthetic_cases[0], "Synth_100")
    with pytest.raises(ValueError, match="Synth_100 is the same scan as training case Synth_000"):
        training.train(tiny_config(synthetic_cases, validation_cases=[str(twin)]), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_average_cnn_is_the_two_trained_path_networks_put_together(synthetic_cases, tmp_path):
    parts = {}
    for name, cls in (("LocalPathCNN", networks.LocalPathCNN), ("GlobalPathCNN", networks.GlobalPathCNN)):
        parts[name] = cls(num_classes=4)
        weights.save(parts[name], name, tmp_path / f"{name}.safetensors", {})
    run = tmp_path / "average"
    config = tiny_config(synthetic_cases, model="AverageCNN", local_weights=str(tmp_path / "LocalPathCNN.safetensors"),
                         global_weights=str(tmp_path / "GlobalPathCNN.safetensors"))
    summary = training.train(config, run, progress=False)
    assert summary["epoch"] == config.phase1_epochs + config.phase2_epochs  # counted as done: crossval skips it
    composed = load_file(str(run / "best.safetensors"))
    for prefix, name in (("local_model", "LocalPathCNN"), ("global_model", "GlobalPathCNN")):
        for key, tensor in parts[name].state_dict().items():
            assert torch.equal(composed[f"{prefix}.{key}"], tensor), key
    model, _ = weights.load("AverageCNN", run / "best.safetensors")
    x = torch.randn(1, 4, 40, 40)
    with torch.no_grad():
        expected = (parts["LocalPathCNN"].eval()(x).exp() + parts["GlobalPathCNN"].eval()(x).exp()) / 2
        assert torch.allclose(model.eval()(x).exp(), expected, atol=1e-5)


def test_average_cnn_without_its_path_networks_is_a_clear_error(synthetic_cases, tmp_path):
    with pytest.raises(ValueError, match="--local-weights and --global-weights"):
        training.train(tiny_config(synthetic_cases, model="AverageCNN"), tmp_path / "r", progress=False)


@pytest.mark.parametrize("early_stop", [False, True])
def test_distributed_training_with_two_cpu_processes(synthetic_cases, tmp_path, early_stop):
    """With early stopping (a rate too small to change the validation score, patience 1), rank 0
    ends phase 1 after epoch 2 of 4; every process must follow it instead of hanging in a collective."""
    config = tiny_config(synthetic_cases, phase1_epochs=4 if early_stop else 1, phase2_epochs=1,
                         patience=1 if early_stop else 0, learning_rate=1e-12 if early_stop else 0.005)
    config_path = tmp_path / "config.json"
    data = {k: v for k, v in json.loads(json.dumps(config, default=vars)).items()}
    config_path.write_text(json.dumps(data))
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "BrainTumorCNNLib.frontends.cli", "train", "--config", str(config_path), "--run-dir", str(run), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [r["phase"] for r in rows] == ["1", "1", "2"] if early_stop else ["1", "2"]
    assert json.loads((run / "summary.json").read_text())["epoch"] == (5 if early_stop else 2)


def test_campaign_table_sets_runs_side_by_side_by_windows_of_steps(synthetic_cases, tmp_path, capsys):
    """`campaign_table.py --by STEPS`: each window's validation Dice is the mean of the log rows inside it,
    phase 2 apart; a run whose log ends sooner shows no figure for the windows it never reached."""
    tool = maintainer_tool("campaign_table")
    long_run, short_run = tmp_path / "long", tmp_path / "short"
    training.train(tiny_config(synthetic_cases, phase1_epochs=3, validation_slice_step=1), long_run, progress=False)
    training.train(tiny_config(synthetic_cases, phase1_epochs=1, validation_slice_step=1), short_run, progress=False)
    logs = [tool.read_log(long_run), tool.read_log(short_run)]
    windows = dict(tool.windows(logs, 4))
    assert list(windows) == ["1–4", "5–6", "phase 2"]
    first = [r for r in logs[0] if int(r["step"]) <= 4]
    assert len(first) == 2
    assert windows["1–4"][0] == pytest.approx(
        [np.mean([float(r[f"val_dice_{region}"]) for r in first]) for region in tool.REGIONS])
    assert windows["5–6"][1] is None and windows["phase 2"][1] is not None
    assert tool.main(["--by", "4", str(long_run), str(short_run)]) == 0
    printed = capsys.readouterr().out
    assert "| 5–6 | " in printed and " | – |" in printed
    with pytest.raises(SystemExit):
        tool.main(["--by", "4"])


def test_a_range_test_whose_first_loss_is_not_finite_fails_clearly_and_stops_the_prefetch_thread(
        synthetic_cases, tmp_path):
    import dataclasses
    import threading
    broken = training.build_model(tiny_config(synthetic_cases))
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    start = tmp_path / "nan.safetensors"
    weights.save(broken, "TwoPathCNN", start, {"config": {"preprocessing": json.loads(json.dumps(
        dataclasses.asdict(NO_N4)))}})
    config = tiny_config(synthetic_cases, start_weights=str(start), learning_rate=0.0)
    with pytest.raises(training.TrainingDiverged, match="first loss is nan") as failure:
        training.train(config, tmp_path / "r", progress=False)
    # while the caller still holds the error (its traceback keeps train's frame alive), no thread is left
    assert failure.tb is not None
    assert [t.name for t in threading.enumerate() if t.name.startswith("patches")] == []


def test_n4_shrink_is_a_training_option_and_the_campaign_scripts_keep_the_shrink_their_runs_started_with():
    """A campaign run resumed under another N4 shrink than it started with would be refused (check_same_config)
    and its cases preprocessed anew, so the scripts pin it (the default was 8 for a while: docs/speed.md)."""
    import argparse
    from pathlib import Path

    from BrainTumorCNNLib.frontends import train as train_frontend

    parser = argparse.ArgumentParser()
    train_frontend.configure_parser(parser)
    def shrink(*options):
        args = parser.parse_args(["--run-dir", "run", *options])
        return train_frontend.config_from_args(args).preprocessing.n4_shrink

    assert shrink("--n4-shrink", "4") == 4 and shrink("--n4-shrink", "8") == 8
    assert shrink() == PreprocessingConfig().n4_shrink
    with pytest.raises(SystemExit):
        shrink("--n4-shrink", "0")
    repo = Path(__file__).resolve().parents[2]
    # the campaign's scripts share one command line (training/common.sh), which carries the shrink
    assert "--n4-shrink 4" in (repo / "training" / "common.sh").read_text(encoding="utf-8")
    for script in ("run.sh", "cascade.sh", "paths.sh"):
        text = (repo / "training" / script).read_text(encoding="utf-8")
        assert "source training/common.sh" in text and "--n4-shrink" not in text, script
    started = {json.loads(p.read_text(encoding="utf-8"))["preprocessing"]["n4_shrink"]
               for p in (repo / "training").glob("cv4-*/fold-*/config.json")}
    assert started <= {4}
