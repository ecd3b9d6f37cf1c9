"""`braintumorcnn segment --scheduler`: cases as tasks on a Dask cluster (a real local one)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from conftest import write_broken_case

from BrainTumorCNNLib.frontends import cli, cluster
from BrainTumorCNNLib.writing.outputs import finished, output_paths

pytest.importorskip("distributed", reason="the [cluster] extra (dask[distributed]) is not installed")

LIB_ROOT = Path(cluster.__file__).resolve().parents[2]  # the folder holding BrainTumorCNNLib


@pytest.fixture
def worker_environment(untrained_models, monkeypatch):
    """Worker processes see neither this process's monkeypatches nor its sys.path: only the environment."""
    monkeypatch.setenv("BRAINTUMORCNN_MODELS", str(untrained_models))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(LIB_ROOT), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def two_workers(worker_environment):
    """A running cluster of 2 worker processes of 1 thread each; its scheduler's address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as running:
        yield running.scheduler_address


def test_cases_on_a_cluster_with_a_bad_one_and_a_rerun(two_workers, synthetic_cases, tmp_path, capsys):
    cases = synthetic_cases[0].parent
    write_broken_case(cases)
    output = tmp_path / "out"
    command = ["segment", str(cases), "--output", str(output), "--device", "cpu", "--scheduler", two_workers]

    assert cli.main(command) == 1, "a failed case must show in the exit status"
    captured = capsys.readouterr()
    assert "Broken_001: FAILED" in captured.err and "3 segmented, 0 already done, 1 failed" in captured.out
    segmented = [line for line in captured.out.splitlines() if ": segmented in" in line]
    assert len(segmented) == 3 and all(" on tcp://" in line for line in segmented)
    share = max(1, len(os.sched_getaffinity(0)) // 2)  # two one-thread workers share this host's cores
    assert all(line.endswith(f"({share} threads)") for line in segmented)
    for case in synthetic_cases:
        assert finished(output_paths(output, case.name))
    assert not list(output.glob("Broken_001*")) and not list(output.glob(".*part*"))
    with open(output / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == [c.name for c in synthetic_cases] + ["mean"]  # job order, one table
    assert all(0.0 <= float(r["dice_complete"]) <= 1.0 for r in rows)

    # a rerun skips the finished cases (files untouched) and still reports their metrics
    outputs = [p for c in synthetic_cases for p in output_paths(output, c.name).values()]
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    (output / "metrics.csv").unlink()
    assert cli.main(command) == 1
    assert "0 segmented, 3 already done, 1 failed" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    with open(output / "metrics.csv") as f:
        again = list(csv.DictReader(f))
    assert len(again) == 4  # three cases and the mean
    # every case's confidence figure, from its run and, on the rerun, from its JSON record
    assert [r["expected_dice_complete"] for r in again[:3]] == [r["expected_dice_complete"] for r in rows[:3]]
    assert all(0.0 <= float(r["expected_dice_complete"]) <= 1.0 for r in again[:3])


def test_local_workers_started_and_stopped_by_the_command(worker_environment, synthetic_cases, tmp_path, capsys):
    output = tmp_path / "out"
    assert cli.main(["segment", str(synthetic_cases[0]), "--output", str(output), "--scheduler", "local:1"]) == 0
    out = capsys.readouterr().out
    assert "cluster: local:1, 1 workers" in out
    assert f"({len(os.sched_getaffinity(0))} threads)" in out  # the only worker: every core, not the nanny's 1
    assert finished(output_paths(output, synthetic_cases[0].name))


@pytest.mark.parametrize("address", ["local:0", "local:two"])
def test_bad_local_worker_count_stops_before_any_work(address, synthetic_cases, tmp_path):
    with pytest.raises(SystemExit, match="local:N"):
        cli.main(["segment", str(synthetic_cases[0]), "--output", str(tmp_path / "out"), "--scheduler", address])


def test_each_task_gets_its_share_of_its_hosts_cores():
    workers = {"tcp://a:1": {"host": "a", "nthreads": 1}, "tcp://a:2": {"host": "a", "nthreads": 1},
               "tcp://b:1": {"host": "b", "nthreads": 4}}
    assert cluster.task_slots(workers) == {"tcp://a:1": 2, "tcp://a:2": 2, "tcp://b:1": 4}
