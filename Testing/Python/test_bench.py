"""`braintumorcnn bench` runs and reports every figure, preprocessing included (a smoke test, not a timing)."""
from __future__ import annotations

import importlib.util

import argparse
import json

import numpy as np
import pytest
import torch

from BrainTumorCNNLib.frontends import bench
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig, preprocess
from BrainTumorCNNLib.running import cascade


def test_spread_slices():
    mask = np.zeros((10, 4, 4), bool)
    mask[2:8, 1, 1] = True
    assert list(bench.spread_slices(mask, 3)) == [2, 4, 7]
    assert list(bench.spread_slices(mask, 20)) == [2, 3, 4, 5, 6, 7]


def _parse(argv):
    parser = argparse.ArgumentParser()
    bench.configure_parser(parser)
    return parser.parse_args(argv)


def test_bench_reports_every_figure(tmp_path, capsys):
    from conftest import write_synthetic_case

    case = write_synthetic_case(tmp_path, shape=(12, 64, 64))
    args = _parse(["--case", str(case), "--models", "TwoPathCNN", "--slices", "1", "--patch-pixels", "8",
                   "--in-process", "--json"])
    assert bench.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    row = report["models"]["TwoPathCNN"]
    assert report["extrapolated_from_slices"] == {"dense_direct": 1, "dense_fast": 1, "dense_bf16": 1}
    assert report["volume"]["shape"] == [4, 12, 64, 64] and "Synth_001" in report["volume"]["source"]
    for key in ("dense_direct_s", "dense_fast_s", "dense_bf16_s", "patch_s", "dense_over_patch", "peak_rss_gib"):
        assert row[key] > 0
    pre = report["preprocessing"]
    assert pre["n4_s"] > 0 and pre["total_s"] > 0 and pre["clip_s"] >= 0 and pre["zscore_s"] >= 0
    # each step is a difference of medians of separate runs: on a busy machine their sum strays from the total
    assert pre["clip_s"] + pre["n4_s"] + pre["zscore_s"] <= 1.25 * pre["total_s"] + 0.5
    assert pre["n4_shrink"] == PreprocessingConfig().n4_shrink
    # per case = what `segment` runs: the screened whole volume, with the shipped weights
    assert row["weights"] == "shipped" and row["dense_screened_s"] > 0
    assert 0 < row["screened_slices_run"] <= report["volume"]["brain_slices"]
    assert row["case_s"] == pytest.approx(pre["total_s"] + row["dense_screened_s"])
    # the whole case's CPU time in user space and in the kernel and its page faults, beside its wall time
    cpu, screened = row["case_cpu"], row["screened_cpu"]
    assert cpu["user_s"] == pytest.approx(pre["cpu"]["user_s"] + screened["user_s"]) and screened["user_s"] > 0
    assert cpu["system_s"] >= 0 and cpu["minor_faults"] > 0
    assert cpu["system_over_user"] == pytest.approx(cpu["system_s"] / cpu["user_s"])
    assert row["case_over_direct"] == pytest.approx(row["case_s"] / row["dense_direct_s"])
    assert row["case_over_direct_cpu"] == pytest.approx((cpu["user_s"] + cpu["system_s"]) / row["dense_direct_cpu_s"])
    table = bench.format_table(report)
    assert "TwoPathCNN" in table and "preprocessing: clip" in table and "N4" in table
    assert f"{row['case_over_direct']:10.3f}x" in table and f"{cpu['minor_faults']:17,d}" in table
    assert all(len(line) == len(table.splitlines()[-3]) for line in table.splitlines()[-3:])
    assert f"({row['screened_slices_run']:3d}/{report['volume']['brain_slices']:>3})" in table
    prep = report["preparation"]
    assert prep["skull_check_s"] > 0 and prep["registration_s"] > 0
    if importlib.util.find_spec("deepbet"):
        assert prep["brain_extraction_s"] > 0
    else:
        assert "pip install" in prep["brain_extraction_skipped"]
    assert "registration of one sequence" in table and "brain extraction" in table


def test_the_screened_run_takes_the_precision_asked_for(tmp_path, capsys, monkeypatch):
    """`--precision bfloat16` times the whole screened volume as `segment --precision bfloat16` runs it."""
    from conftest import write_synthetic_case

    runs = []
    real = bench.time_screened
    monkeypatch.setattr(bench, "time_screened", lambda *a: runs.append(real(*a)) or runs[-1])
    case = write_synthetic_case(tmp_path, shape=(8, 48, 48))
    args = _parse(["--case", str(case), "--models", "TwoPathCNN", "--slices", "1", "--patch-pixels", "8",
                   "--skip-direct", "--skip-preparation", "--in-process", "--json", "--precision", "bfloat16"])
    assert bench.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [result.precision for _, _, result, _ in runs] == ["bfloat16"]
    assert report["screened_precision"] == "bfloat16"
    assert "the whole volume as `segment` runs it, in bfloat16" in bench.format_table(report)


def test_the_screened_run_of_a_cascade_is_the_two_stages_segment_runs(tmp_path, capsys, monkeypatch):
    """A cascade's whole-volume time is that of its two stages (running/cascade.TwoStage), as `segment` runs it."""
    from conftest import write_synthetic_case

    staged = []
    real = cascade.TwoStage.segment
    monkeypatch.setattr(cascade.TwoStage, "segment", lambda self, *a, **k: staged.append(k) or real(self, *a, **k))
    case = write_synthetic_case(tmp_path, shape=(8, 48, 48))
    args = _parse(["--case", str(case), "--models", "InputCascadeCNN", "--slices", "1", "--patch-pixels", "8",
                   "--skip-direct", "--skip-preparation", "--in-process", "--json"])
    assert bench.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(staged) == 1 and staged[0]["screen_step"] > 1
    assert report["models"]["InputCascadeCNN"]["screened_slices_run"] > 0


def test_the_preparation_timing_registers_the_moved_sequence_back(shared_data):
    """The registration bench times is a real one: on a real case it finds the motion bench applied."""
    images, geometry, _ = bench.load_volume(None)
    motion = bench.time_preparation(images, geometry, repeats=1)["motion"]
    assert motion["found_angle_deg"] == pytest.approx(motion["angle_deg"], abs=1.0)
    assert motion["found_shift_mm"] == pytest.approx(motion["shift_norm_mm"], abs=1.0)


def test_a_models_own_process_reads_the_volume_preprocessed_once(tmp_path, capsys):
    """What a child process of `bench` (one per model) gets: the parent's preprocessed volume."""
    from conftest import write_synthetic_case

    images, geometry, _ = bench.load_volume(str(write_synthetic_case(tmp_path, shape=(8, 48, 48))))
    pre = preprocess(images, PreprocessingConfig(n4=False), spacing=geometry.spacing)
    saved = tmp_path / "preprocessed.npz"
    np.savez(saved, volume=pre.images, mask=pre.brain_mask, source="the parent's volume")
    args = _parse(["--preprocessed", str(saved), "--models", "LocalPathCNN", "--slices", "1", "--patch-pixels", "8",
                   "--skip-direct", "--in-process", "--json"])
    assert bench.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["volume"]["source"] == "the parent's volume" and report["preprocessing"] is None
    assert report["volume"]["brain_voxels"] == int(pre.brain_mask.sum())
    assert report["models"]["LocalPathCNN"]["dense_fast_s"] > 0 and "case_s" not in report["models"]["LocalPathCNN"]
    assert report["extrapolated_from_slices"]["dense_direct"] is None  # skipped, so not extrapolated either
    lines = bench.format_table(report).splitlines()
    header, row = next(line for line in lines if "dense-direct s" in line), lines[-1]
    assert row.split("|")[2].strip() == "-" and len(row) == len(header)  # a skipped figure keeps its column


def test_without_real_cases_the_phantom_is_the_volume(monkeypatch):
    monkeypatch.setattr(bench, "find_real_case", lambda: None)  # as on a machine without ../shared/data
    images, geometry, source = bench.load_volume(None, phantom_size="small")
    assert images.shape == (4, 64, 128, 128) and geometry.spacing == (1.0, 1.0, 1.0) and "phantom" in source
    assert (images != 0).any(axis=0).mean() > 0.3  # a brain, with intensities for N4 to work on


def test_device_cuda_runs_on_the_gpu_or_says_why_it_was_skipped(tmp_path, capsys):
    from conftest import write_synthetic_case

    case = write_synthetic_case(tmp_path, shape=(8, 48, 48))
    args = _parse(["--case", str(case), "--models", "LocalPathCNN", "--slices", "1", "--patch-pixels", "8",
                   "--skip-direct", "--in-process", "--json", "--device", "cuda"])
    assert bench.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    if torch.cuda.is_available():
        assert report["models"]["LocalPathCNN"]["device"] == "cuda" and "skipped" not in report
    else:
        assert "CUDA is not available" in report["skipped"] and "models" not in report
        assert bench.main(_parse(["--device", "cuda"])) == 0
        assert capsys.readouterr().out.startswith("bench --device cuda skipped: device 'cuda' was requested")


def test_training_bench_times_every_route_and_the_sampler(tmp_path, capsys):
    """`bench --training`: one row per model and route, with a ratio to the route before issue 24, and
    the sampler drawing from the given cases; the routes compute the same step (one float32 loss each)."""
    from conftest import write_synthetic_case
    from BrainTumorCNNLib.frontends import bench_training

    case = write_synthetic_case(tmp_path, shape=(12, 64, 64))
    args = _parse(["--training", "--models", "TwoPathCNN", "--steps", "1", "--batch-size", "2", "--window", "4",
                   "--cases", str(case)])
    assert bench.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    routes = {" ".join(line.split()[1:-3]): line.split()[-3:] for line in lines if line.startswith("TwoPathCNN ")}
    assert sorted(routes) == sorted(bench_training.ROUTES)
    for seconds, per_second, ratio in routes.values():
        assert float(seconds) > 0 and float(per_second) > 0 and float(ratio.rstrip("x")) > 0
    sampler = next(line.split() for line in lines if line.startswith("sampler alone"))
    assert float(sampler[3]) > 0 and float(sampler[4]) > 0
    x = torch.randn(2, 4, 36, 36).contiguous(memory_format=torch.channels_last)
    before, after = (bench_training.build("TwoPathCNN", r).eval() for r in ("float32, before", "float32"))
    assert torch.allclose(before(x), after(x), atol=1e-5)


def test_training_bench_times_a_cascade_with_its_first_maps_carried(capsys):
    from BrainTumorCNNLib.frontends import bench_training

    args = _parse(["--training", "--models", "InputCascadeCNN", "--steps", "1", "--batch-size", "2", "--window",
                   "2"])
    assert bench.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    routes = {" ".join(line.split()[1:-3]): line.split()[-3:] for line in lines if line.startswith("InputCascadeCNN ")}
    assert sorted(routes) == sorted(bench_training.ROUTES + (bench_training.MAPS_ROUTE,))
    assert all(float(seconds) > 0 for seconds, _, _ in routes.values())
