"""The Slicer module's segmentation in a child process (BrainTumorCNNLib.frontends.child): a real child Python
running the real pipeline on the small phantom, its inputs read from and its result put into a scene of
Slicer's real MRML classes (slicer-core), as the module's logic does."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from BrainTumorCNNLib.modalities import MODALITIES  # noqa: E402
from BrainTumorCNNLib.preparing.preparation import PreparationOptions, Step  # noqa: E402
from BrainTumorCNNLib.preparing.preprocessing import PreprocessingConfig  # noqa: E402
from BrainTumorCNNLib.reading.geometry import Geometry  # noqa: E402
from BrainTumorCNNLib.frontends import child  # noqa: E402
from BrainTumorCNNLib.running import pipeline, task  # noqa: E402
from BrainTumorCNNLib.running.postprocessing import CleanupConfig  # noqa: E402
from BrainTumorCNNLib.synthetic import phantom  # noqa: E402
from BrainTumorCNNLib.writing import mrml  # noqa: E402

#: A shipped model, its fastest network; N4 off where the test does not need a long native call.
QUICK = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu", preprocessing=PreprocessingConfig(n4=False))
BUSY = "preprocessing"  # the progress message while N4, one long native call, runs (N4 on: about 20 s here)


@pytest.fixture(scope="module")
def small_phantom():
    """The case `braintumorcnn phantom DIR --size small` writes (64 x 128 x 128 voxels)."""
    return phantom.make_phantom(0, "small")


def scene_with(case, geometries=None):
    """A scene holding the case's four volumes as volume nodes (each on its own grid when `geometries` say)."""
    scene = slicer.vtkMRMLScene()
    nodes = [mrml.add_volume_node(scene, image, (geometries or {}).get(m, case.geometry), f"{case.name}_{m}")
             for m, image in zip(MODALITIES, case.images)]
    return scene, nodes


def wait_until(process: child.SegmentationProcess, message: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not process.progress[1].startswith(message):
        assert not process.finished, f"ended before {message!r}: {process.error}"
        assert time.time() < deadline, f"no {message!r} within {seconds} s (last: {process.progress})"
        time.sleep(0.01)


def threads_of_a_new_thread() -> int:
    """torch's thread count as a thread started now in this process gets it."""
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_child_segments_as_an_in_process_run_and_streams_progress(small_phantom):
    """An off-grid FLAIR resampled, probabilities and the prepared volume brought back: the same arrays as the
    worker thread's code computes in this process, put into the scene as the module's logic does.  Inference
    shares torch's threads out between its workers while it runs (torch.set_num_threads, which every thread
    started meanwhile inherits for good): in the child only."""
    threads = threads_of_a_new_thread()
    g = small_phantom.geometry
    shifted = Geometry(g.size, g.spacing, (g.origin[0] + 2 * g.spacing[0], *g.origin[1:]), g.direction)
    scene, nodes = scene_with(small_phantom, {"FLAIR": shifted})
    volumes, names = mrml.read_nodes(nodes)
    options = dataclasses.replace(QUICK, screen=False)  # probabilities asked for: every slice run
    prepare = PreparationOptions(register=False, resample=True)
    process = child.SegmentationProcess(volumes, options, prepare, names, probabilities=True, keep_prepared=True,
                                        inputs=mrml.inputs_of(nodes))
    folder, seen, counts = process.folder, [], set()
    while not process.finished:
        seen.append(process.progress)
        counts.add(threads_of_a_new_thread())
        time.sleep(0.005)
    assert process.error is None and not process.cancelled
    assert counts == {threads}, f"torch's thread count here changed to {counts - {threads}} during the run"
    assert not folder.exists() and gone(process.process.pid)
    messages = [m for _, m in seen]
    assert any(m.startswith("resample FLAIR") for m in messages) and any(m.startswith("slice ") for m in messages)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and process.progress == (1.0, "done")

    prepared, warnings, expected = task.prepare_and_segment(volumes, options, prepare, names, lambda f, m: None,
                                                            lambda: False, mrml.inputs_of(nodes))
    result = process.result
    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_array_equal(result.probabilities, expected.probabilities)
    assert (result.model_name, result.num_classes, result.card) == (expected.model_name, expected.num_classes,
                                                                   expected.card)
    assert str(result.cleanup_report) == str(expected.cleanup_report)
    assert result.extraction == expected.extraction and process.warnings == warnings
    made = {k: v for k, v in result.provenance.items() if k != "created"}
    assert made == json.loads(json.dumps({k: v for k, v in expected.provenance.items() if k != "created"}))
    assert {i["sequence"]: i["name"] for i in made["inputs"]}["FLAIR"] == "volume node 'Phantom_00000_FLAIR'"
    assert process.prepared.steps == prepared.steps == [Step("FLAIR", "resample")]
    np.testing.assert_array_equal(process.prepared.volumes["FLAIR"], prepared.volumes["FLAIR"])
    assert process.geometry == g

    before = scene.GetNumberOfNodes()
    segmentation = mrml.store_result(scene, result, process.geometry, "phantom tumor", probabilities=True,
                                     reference_volume=nodes[1], prepared={"FLAIR on T1c grid": process.prepared.
                                                                          volumes["FLAIR"]})
    np.testing.assert_array_equal(mrml.labels_of(segmentation, nodes[1]), expected.labels)
    assert mrml.provenance_of(segmentation) == result.provenance  # how it was made, on the node
    assert scene.GetNumberOfNodes() > before


def test_cancel_kills_the_child_at_once_inside_a_native_call(small_phantom):
    scene, nodes = scene_with(small_phantom)
    before = scene.GetNumberOfNodes()
    volumes, names = mrml.read_nodes(nodes)
    process = child.SegmentationProcess(volumes, pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu"),
                                        names=names)
    wait_until(process, BUSY)
    time.sleep(0.5)  # well inside N4
    started = time.time()
    process.cancel()
    process.wait(timeout=5)
    assert process.finished and time.time() - started < 1.0, f"cancelled after {time.time() - started:.1f} s"
    assert process.cancelled and process.result is None and process.error is None
    assert gone(process.process.pid) and not process.folder.exists()
    assert scene.GetNumberOfNodes() == before


@pytest.mark.parametrize("how, said", [(signal.SIGKILL, "stopped by SIGKILL"),
                                       (signal.SIGSEGV, "stopped by SIGSEGV (a crash in native code)")])
def test_a_child_killed_or_crashing_mid_run_is_a_clear_error(small_phantom, how, said):
    scene, nodes = scene_with(small_phantom)
    before = scene.GetNumberOfNodes()
    volumes, names = mrml.read_nodes(nodes)
    process = child.SegmentationProcess(volumes, pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu"),
                                        names=names)
    wait_until(process, BUSY)
    os.kill(process.process.pid, how)
    process.wait(timeout=10)
    assert process.finished and isinstance(process.error, child.ChildFailed)
    assert str(process.error).startswith(f"the segmentation process was {said}")
    if how == signal.SIGSEGV:  # the child's own Python stack, from its log
        assert "Segmentation fault" in process.error.details and "preprocessing.py" in process.error.details
    assert process.result is None and not process.cancelled and not process.folder.exists()
    assert scene.GetNumberOfNodes() == before  # the module stores a result only when there is one


def test_an_error_in_the_child_comes_back_with_its_traceback(small_phantom):
    case = dataclasses.replace(small_phantom, images=np.zeros_like(small_phantom.images))
    volumes, names = mrml.read_nodes(scene_with(case)[1])
    process = child.SegmentationProcess(volumes, QUICK, names=names)
    process.wait(timeout=120)
    assert isinstance(process.error, child.ChildFailed) and process.result is None
    assert str(process.error).startswith("ValueError: ") and "identical voxels" in str(process.error)
    assert "Traceback" in process.error.details and "task.py" in process.error.details  # the child's stack
    assert not process.folder.exists()


def test_a_process_that_exits_without_a_result_is_a_clear_error(small_phantom):
    """A child that exits with a status of its own (sys.exit(3)) before writing anything."""
    volumes, names = mrml.read_nodes(scene_with(small_phantom)[1])
    process = child.SegmentationProcess(volumes, QUICK, names=names,
                                        interpreter=[sys.executable, "-c", "import sys; sys.exit(3)"])
    process.wait(timeout=60)
    assert isinstance(process.error, child.ChildFailed) and process.result is None
    assert str(process.error) == "the segmentation process ended with exit status 3 without a result"
    assert not process.folder.exists()


def test_the_child_ends_when_its_parent_dies(tmp_path):
    """A parent killed mid-run (Slicer crashing) leaves no segmentation running and no images on disk."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import time\n"
        "import numpy as np\n"
        "from BrainTumorCNNLib.modalities import MODALITIES\n"
        "from BrainTumorCNNLib.reading.geometry import Geometry\n"
        "from BrainTumorCNNLib.frontends import child\n"
        "from BrainTumorCNNLib.running import pipeline\n"
        "grid = Geometry((128, 128, 64), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))\n"
        "images = np.random.default_rng(0).normal(100, 10, (4, 64, 128, 128)).astype(np.float32)\n"
        "process = child.SegmentationProcess({m: (a, grid) for m, a in zip(MODALITIES, images)},"
        " pipeline.SegmentationOptions(model='TwoPathCNN', device='cpu', brain_extraction='off'))\n"
        "while not process.progress[1].startswith('preprocessing') and not process.finished:\n"
        "    time.sleep(0.01)\n"  # in N4: no progress line to write (and fail on) for a while
        "print(process.process.pid, process.folder, flush=True)\n"
        "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pid, folder = parent.stdout.readline().split()
        pid = int(pid)
        assert os.path.isdir(folder)
        assert not _exited(pid), "the child ended before its parent was killed"
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 5
    while not _exited(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert _exited(pid), "the child outlived its parent"
    assert not os.path.exists(folder), "the inputs were left on disk"


def _exited(pid: int) -> bool:
    """`pid` ended (gone, or a zombie waiting for the init process to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_options_reach_the_child_as_they_were_given():
    options = pipeline.SegmentationOptions(
        model="LocalPathCNN", precision="float32", screen=False, brain_extraction="off", through_plane=True,
        preprocessing=PreprocessingConfig(n4_sequences=("T1",), clip_percentiles=(2.0, 98.0)),
        cleanup=CleanupConfig(min_volume_ml=0.5, keep_largest_only=True, max_distance_mm=10.0))
    assert child._build(pipeline.SegmentationOptions, json.loads(json.dumps(dataclasses.asdict(options)))) == options
    no_cleanup = dataclasses.replace(options, cleanup=None)
    assert child._build(pipeline.SegmentationOptions,
                        json.loads(json.dumps(dataclasses.asdict(no_cleanup)))) == no_cleanup
    prepare = PreparationOptions(register=False, resample=True)
    assert child._build(PreparationOptions, json.loads(json.dumps(dataclasses.asdict(prepare)))) == prepare


def test_the_uncertainty_map_comes_back_and_the_logic_adds_it_as_a_hidden_coloured_volume(small_phantom):
    """Issue 34 item 2 (the Slicer module): the child brings back the entropy map and the confidence figure;
    store_result adds the map as a scalar volume with its colour table over 0-1, referenced from the
    segmentation (the module's switch) and shown in no slice view until switched on."""
    from BrainTumorCNNLib.running import uncertainty
    scene, nodes = scene_with(small_phantom)
    volumes, names = mrml.read_nodes(nodes)
    options = dataclasses.replace(QUICK, screen=False)
    process = child.SegmentationProcess(volumes, options, names=names, probabilities=True, uncertainty=True)
    process.wait()
    assert process.error is None
    result = process.result
    assert result.uncertainty.shape == process.geometry.shape and result.uncertainty.dtype == np.float32
    np.testing.assert_allclose(result.uncertainty, uncertainty.entropy_map(result.probabilities), atol=1e-6)
    assert set(result.confidence) == {"complete", "core", "enhancing"}
    assert all(0.0 <= v <= 1.0 for v in result.confidence.values())
    assert result.provenance["confidence"]["expected_dice"] == result.confidence

    segmentation = mrml.store_result(scene, result, process.geometry, "phantom tumor", reference_volume=nodes[1],
                                     uncertainty=True)
    node = segmentation.GetNodeReference(mrml.UNCERTAINTY_REFERENCE)
    assert node is not None and node.IsA("vtkMRMLScalarVolumeNode") and node.GetName() == "phantom tumor uncertainty"
    array, geometry = mrml.array_of(node)
    np.testing.assert_allclose(array, result.uncertainty)
    assert geometry == process.geometry
    display = node.GetDisplayNode()
    assert display.GetColorNode().GetName() == mrml.UNCERTAINTY_COLOURS
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    for composite in (scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                      for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))):
        assert node.GetID() not in (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID())

    # without the option: no map in the child's result, none in the scene
    plain = child.SegmentationProcess(volumes, QUICK, names=names)
    plain.wait()
    assert plain.result.uncertainty is None and plain.result.confidence
    assert mrml.store_result(scene, plain.result, plain.geometry, "plain").GetNodeReference(
        mrml.UNCERTAINTY_REFERENCE) is None
