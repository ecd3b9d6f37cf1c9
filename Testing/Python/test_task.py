"""The GUI's worker thread (BrainTumorCNNLib.running.task) with a real thread and the real pipeline."""
from __future__ import annotations

import time

import numpy as np
import pytest

from BrainTumorCNNLib.preparing.preparation import PreparationOptions, Step
from BrainTumorCNNLib.reading import io
from BrainTumorCNNLib.reading.geometry import Geometry, GeometryError
from BrainTumorCNNLib.running import pipeline
from BrainTumorCNNLib.running.cases import read_case
from BrainTumorCNNLib.running.task import SegmentationTask


def _volumes(images, geometry) -> dict:
    return {m: (image, geometry) for m, image in zip(io.MODALITIES, images)}


def _wait(task: SegmentationTask, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not task.finished and time.time() < deadline:
        time.sleep(0.01)
    assert task.finished, "the worker did not finish"


def test_task_runs_in_the_background_and_reports_progress(untrained_models, synthetic_cases):
    case = read_case(synthetic_cases[0])
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu")
    task = SegmentationTask(_volumes(case.images, case.geometry), options)
    seen = set()
    while not task.finished:  # the caller's thread is free while the worker runs
        seen.add(task.progress[1])
        time.sleep(0.001)
    assert task.error is None and not task.cancelled
    assert task.progress == (1.0, "done") and len(seen) >= 2
    np.testing.assert_array_equal(task.result.labels, pipeline.segment(case.images, case.geometry, options).labels)


def test_cancel_stops_the_worker_without_a_result(untrained_models, synthetic_cases):
    case = read_case(synthetic_cases[1])
    task = SegmentationTask(_volumes(case.images, case.geometry),
                            pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu"))
    task.cancel()
    _wait(task)
    assert task.cancelled and task.result is None


def test_errors_are_handed_to_the_caller(untrained_models, synthetic_cases):
    case = read_case(synthetic_cases[2])
    task = SegmentationTask(_volumes(np.zeros_like(case.images), case.geometry),
                            pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu"))
    _wait(task)
    assert isinstance(task.error, ValueError) and "identical voxels" in str(task.error)
    assert not task.cancelled and task.result is None


def test_a_volume_off_the_t1c_grid_is_prepared_on_the_worker_as_the_options_say(untrained_models, synthetic_cases):
    case = read_case(synthetic_cases[0])
    g = case.geometry
    shifted = Geometry(g.size, g.spacing, (g.origin[0] + 2 * g.spacing[0], *g.origin[1:]), g.direction)
    volumes = {**_volumes(case.images, g), "FLAIR": (case.images[3], shifted)}
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu")
    with pytest.raises(GeometryError, match="FLAIR \\(flair\\)"):  # both steps off: refused before any work
        SegmentationTask(volumes, options, names={**{m: m for m in io.MODALITIES}, "FLAIR": "FLAIR (flair)"})

    task = SegmentationTask(volumes, options, PreparationOptions(register=False, resample=True))
    _wait(task)
    assert task.error is None
    assert task.prepared.steps == [Step("FLAIR", "resample")] and task.prepared.registrations == {}
    assert task.geometry == g and task.result.labels.shape == g.shape
    assert np.shares_memory(task.prepared.volumes["T1c"], case.images)  # left as it was
