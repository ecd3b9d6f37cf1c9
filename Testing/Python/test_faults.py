"""Faults: a full disk, a killed batch run, repeated runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.running import pipeline
from BrainTumorCNNLib.running.cases import read_case

FULL_DISK_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    import numpy as np
    from BrainTumorCNNLib.writing import mrml, preview
    from BrainTumorCNNLib.reading import io
    from BrainTumorCNNLib.scoring import tables
    from BrainTumorCNNLib.reading.geometry import Geometry

    out = Path(sys.argv[1])
    geometry = Geometry((64, 64, 32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 1, 2, 4], np.uint8), size=geometry.shape)  # incompressible
    images = rng.random((4,) + geometry.shape, dtype=np.float32)
    writers = {
        "labels.nii.gz": lambda p: io.write_labels(labels, geometry, p),
        "case.seg.nrrd": lambda p: mrml.write_segmentation_file(labels, geometry, 4, p),
        "preview.png": lambda p: preview.write_preview(images, labels, p, 4),
        "metrics.csv": lambda p: tables.write_csv(p, [{"case": "x" * 200000, "dice_complete": 0.5}]),
    }
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    for name, write in writers.items():
        try:
            write(out / name)
            print(name, "WRITTEN")
        except OSError as exc:
            print(name, "ERROR", type(exc).__name__, exc)
""")


def test_full_disk_reports_an_error_and_keeps_the_previous_output(tmp_path):
    previous = {}
    for name in ("labels.nii.gz", "case.seg.nrrd", "preview.png", "metrics.csv"):
        (tmp_path / name).write_bytes(f"previous {name}".encode())
        previous[name] = (tmp_path / name).read_bytes()
    done = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    report = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.split(" ")[0] in previous)
    for name, content in previous.items():
        assert report[name].startswith("ERROR"), f"{name}: {report[name]}"
        assert (tmp_path / name).read_bytes() == content, f"{name} was damaged"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(previous), "temporary files left behind"


def test_killed_batch_leaves_only_whole_files_and_a_rerun_finishes(untrained_models, synthetic_cases, tmp_path):
    cases = synthetic_cases[0].parent
    output = tmp_path / "out"
    env = dict(os.environ, BRAINTUMORCNN_MODELS=str(untrained_models), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "BrainTumorCNNLib.frontends.cli", "segment", str(cases), "--output", str(output),
               "--device", "cpu"]
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(output.glob("*.seg.nrrd")) and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)  # in the middle of the first case's outputs
    run.wait()
    for path in output.glob("*_labels.nii.gz"):
        io.read_image(path)  # a present label map is whole (it is written last)
    assert subprocess.run(command, env=env, capture_output=True, timeout=600).returncode == 0
    names = sorted(p.name for p in output.iterdir())
    expected = sorted(f"{c.name}{suffix}" for c in synthetic_cases
                      for suffix in (".seg.nrrd", ".json", "_labels.nii.gz", "_preview.png")) + ["metrics.csv"]
    assert names == expected, "partial or temporary files left behind"


def test_repeated_runs_give_identical_labels(untrained_models, synthetic_cases):
    case = read_case(synthetic_cases[0])
    for fast in (False, True):
        options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu", fast=fast, cleanup=None)
        first = pipeline.segment(case.images, case.geometry, options)
        second = pipeline.segment(case.images.copy(), case.geometry, options)
        assert first.labels.any()
        np.testing.assert_array_equal(first.labels, second.labels)
        np.testing.assert_array_equal(first.probabilities, second.probabilities)



def test_atomic_outputs_get_the_usual_file_mode(tmp_path):
    from BrainTumorCNNLib import atomic
    previous = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "metrics.csv", "case\n")
    finally:
        os.umask(previous)
    assert (tmp_path / "metrics.csv").stat().st_mode & 0o777 == 0o644
