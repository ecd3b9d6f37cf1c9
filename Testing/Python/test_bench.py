"""`braintumorcnn bench` runs and reports every figure (a smoke test, not a timing)."""
from __future__ import annotations

import argparse
import json

import numpy as np

from BrainTumorCNNLib import bench


def test_synthetic_brain_has_a_real_brains_extent():
    _, mask = bench.synthetic_volume()
    assert mask.shape == (155, 240, 240)
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    rows, cols = np.flatnonzero(mask.any(axis=(0, 2))), np.flatnonzero(mask.any(axis=(0, 1)))
    assert 130 <= len(slices) <= 140 and 160 <= len(rows) <= 180 and 125 <= len(cols) <= 140
    assert 1.2e6 <= mask.sum() <= 1.8e6


def test_spread_slices():
    mask = np.zeros((10, 4, 4), bool)
    mask[2:8, 1, 1] = True
    assert list(bench.spread_slices(mask, 3)) == [2, 4, 7]
    assert list(bench.spread_slices(mask, 20)) == [2, 3, 4, 5, 6, 7]


def test_bench_reports_every_figure(capsys, monkeypatch):
    monkeypatch.setattr(bench, "find_real_case", lambda: None)  # the quick synthetic volume
    parser = argparse.ArgumentParser()
    bench.configure_parser(parser)
    args = parser.parse_args(["--models", "TwoPathCNN", "--slices", "1", "--patch-pixels", "8", "--in-process",
                              "--json"])
    assert bench.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    row = report["models"]["TwoPathCNN"]
    assert report["extrapolated_from_slices"] == {"dense_direct": 1, "dense_fast": 1} and report["volume"]["shape"] == [4, 155, 240, 240]
    for key in ("dense_direct_s", "dense_fast_s", "patch_s", "dense_over_patch", "peak_rss_gib"):
        assert row[key] > 0
    assert "TwoPathCNN" in bench.format_table(report)
