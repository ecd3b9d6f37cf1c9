"""A prior scan compared in a Slicer scene (issue 34, the Slicer module's Compare): the logic on Slicer's
real classes (slicer-core), as the module calls it: T1c volume nodes and segmentation nodes read in this
process, compared in a child process (frontends/child.ComparisonProcess: registration runs there, so Cancel
stops it at once), its files written into the chosen folder, its table and the difference as a segmentation
of named, coloured segments back."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy import ndimage

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from BrainTumorCNNLib import labels  # noqa: E402
from BrainTumorCNNLib.reading import io  # noqa: E402
from BrainTumorCNNLib.frontends import child  # noqa: E402
from BrainTumorCNNLib.scoring import longitudinal  # noqa: E402
from BrainTumorCNNLib.synthetic import phantom  # noqa: E402
from BrainTumorCNNLib.writing import comparison as comparison_files  # noqa: E402
from BrainTumorCNNLib.writing import mrml, mrml_comparison  # noqa: E402


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """The small phantom's T1c twice in one scene (the prior moved by whole voxels), the prior's
    segmentation its truth shrunk by a 2-voxel shell, the current one its truth: a known growth."""
    files = phantom.write_phantom(phantom.make_phantom(0, "small"), tmp_path_factory.mktemp("phantom"))
    truth, geometry = io.read_image(files["truth"])
    t1c, _ = io.read_image(files["T1c"])
    tumor = truth > 0
    prior = truth.copy()
    prior[tumor & ~ndimage.binary_erosion(tumor, iterations=2)] = 0
    shift = (1, -2, 3)  # voxels (Z, Y, X): the prior lies elsewhere in the scanner
    moved = geometry.__class__(geometry.size, geometry.spacing,
                               tuple(np.array(geometry.origin) + np.array(geometry.direction).reshape(3, 3)
                                     @ (np.array(shift[::-1]) * np.array(geometry.spacing))), geometry.direction)
    scene = slicer.vtkMRMLScene()
    prior_volume = mrml.add_volume_node(scene, t1c, moved, "Prior T1c")
    current_volume = mrml.add_volume_node(scene, t1c, geometry, "Current T1c")
    prior_segmentation = mrml.add_segmentation_node(scene, prior, moved, 4, "Prior tumor")
    current_segmentation = mrml.add_segmentation_node(scene, truth, geometry, 4, "Current tumor")
    return {"scene": scene, "nodes": (prior_volume, prior_segmentation, current_volume, current_segmentation),
            "prior": prior, "current": truth, "geometry": geometry}


def scans_of(nodes):
    prior_volume, prior_segmentation, current_volume, current_segmentation = nodes
    return (mrml_comparison.scan_of(prior_volume, prior_segmentation),
            mrml_comparison.scan_of(current_volume, current_segmentation))


@pytest.fixture(scope="module")
def compared(scans, tmp_path_factory):
    """The module's Compare on the scene's scans (registered, as it does): the finished child process."""
    process = child.ComparisonProcess(*scans_of(scans["nodes"]), tmp_path_factory.mktemp("comparison"))
    process.wait(timeout=300)
    assert process.finished and process.error is None, process.error
    return process


def test_the_scenes_scans_compare_as_their_labels_do(scans, compared):
    voxel = scans["geometry"].voxel_volume_ml
    assert (compared.prior, compared.current) == ("Prior T1c", "Current T1c")
    assert set(compared.paths) == {"difference", "prior_labels", "preview", "csv", "json"}
    assert all(path.parent == compared.output and path.is_file() for path in compared.paths.values())
    assert not compared.folder.exists()  # the scans' voxels left no copy behind
    report = json.loads(compared.paths["json"].read_text(encoding="utf-8"))
    assert (report["prior"], report["current"]) == ("Prior T1c", "Current T1c")
    assert report["registration"]["shift_mm"] == pytest.approx(np.linalg.norm([1, 2, 3]), abs=0.3)
    for region, row in zip(labels.REGIONS, compared.table):
        then = labels.region_mask(scans["prior"], region).sum() * voxel
        now = labels.region_mask(scans["current"], region).sum() * voxel
        figures = report["regions"][region]
        assert figures["then_ml"] == pytest.approx(then, abs=1e-3) and figures["now_ml"] == pytest.approx(now, abs=1e-3)
        assert figures["new_ml"] == pytest.approx(now - then, abs=2 * voxel)  # the shell, found where it grew
        assert figures["resolved_ml"] <= 2 * voxel
        assert row["measure"] == f"{labels.REGION_NAMES[region]} (mL)"
        assert row["then"] == f"{then:.2f}" and row["now"] == f"{now:.2f}" and row["change"] == f"{now - then:+.2f}"
        percent = 100 * (now - then) / then
        assert row["percent"] == f"{percent:+.1f} %"
        assert row["beyond"] == ("yes" if abs(percent) > longitudinal.SEGMENTATION_VARIATION[region] else "no")
    assert compared.table[0]["beyond"] == "yes"  # the whole tumor grew by its shell
    assert compared.table[-1]["measure"].startswith("enhancing bidimensional")
    assert compared.caveats[0].startswith("Registration onto the current T1c: prior T1c: rotation")
    assert longitudinal.variation_text() in compared.caveats and "-13.9 %" in longitudinal.variation_text()


def test_the_difference_is_a_segmentation_of_named_coloured_segments(scans, compared):
    scene, current_volume = scans["scene"], scans["nodes"][2]
    written, grid = io.read_image(compared.paths["difference"])
    np.testing.assert_array_equal(compared.difference, written)
    node = mrml_comparison.add_difference_node(scene, compared.difference, scans["geometry"], "change")
    segmentation = node.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["unchanged tumor", "new tumor", "resolved tumor"]
    for index, (change, value) in enumerate(longitudinal.DIFFERENCE_VALUES.items()):
        segment = segmentation.GetNthSegment(index)
        assert segment.GetColor() == pytest.approx(longitudinal.DIFFERENCE_COLOURS[change])
        mask = mrml.segment_mask(node, segmentation.GetNthSegmentID(index), current_volume)
        np.testing.assert_array_equal(mask, compared.difference == value)
    assert (compared.difference == longitudinal.DIFFERENCE_VALUES["new"]).sum() > 0
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0  # no helper node left


def test_cancel_stops_the_registration_at_once_and_writes_nothing(scans, tmp_path):
    process = child.ComparisonProcess(*scans_of(scans["nodes"]), tmp_path)
    deadline = time.time() + 60
    while not process.progress[1].startswith("registering"):
        assert not process.finished and time.time() < deadline, process.error
        time.sleep(0.01)
    time.sleep(0.5)  # inside the registration, one native call
    started = time.time()
    process.cancel()
    process.wait(timeout=5)
    assert process.finished and time.time() - started < 1.0, f"cancelled after {time.time() - started:.1f} s"
    assert process.cancelled and process.error is None and process.difference is None
    assert list(tmp_path.iterdir()) == [] and not process.folder.exists()


def test_a_missing_folder_or_a_name_that_cannot_name_files_is_refused_before_starting(scans, tmp_path):
    prior, current = scans_of(scans["nodes"])
    with pytest.raises(NotADirectoryError, match="no such folder"):
        child.ComparisonProcess(prior, current, tmp_path / "absent")
    with pytest.raises(ValueError, match="rename the volume"):
        child.ComparisonProcess(("a/b", *prior[1:]), current, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_file_names_are_those_the_command_line_gives(compared):
    assert compared.paths == comparison_files.comparison_paths(compared.output, "Prior T1c", "Current T1c")
