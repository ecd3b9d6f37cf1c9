"""A prior scan compared in a Slicer scene (issue 34, the Slicer module's Compare): the logic on Slicer's
real classes (slicer-core), as the module calls it: T1c volume nodes and segmentation nodes in, the
comparison's table and the difference as a segmentation of named, coloured segments out."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from BrainTumorCNNLib import labels  # noqa: E402
from BrainTumorCNNLib.reading import io  # noqa: E402
from BrainTumorCNNLib.scoring import longitudinal  # noqa: E402
from BrainTumorCNNLib.synthetic import phantom  # noqa: E402
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


@pytest.fixture(scope="module")
def compared(scans):
    """The module's Compare on the scene's scans (registered, as it does): the comparison and the prior's T1c."""
    return mrml_comparison.compare_nodes(*scans["nodes"])


def test_the_scenes_scans_compare_as_their_labels_do(scans, compared):
    comparison, prior_image = compared
    voxel = scans["geometry"].voxel_volume_ml
    assert (comparison.prior, comparison.current) == ("Prior T1c", "Current T1c")
    assert comparison.registration.shift_mm == pytest.approx(np.linalg.norm([1, 2, 3]), abs=0.3)
    for change in comparison.regions:
        then = labels.region_mask(scans["prior"], change.region).sum() * voxel
        now = labels.region_mask(scans["current"], change.region).sum() * voxel
        assert change.prior_ml == pytest.approx(then, abs=1e-6) and change.current_ml == pytest.approx(now, abs=1e-6)
        assert change.new_ml == pytest.approx(now - then, abs=2 * voxel)  # the shell, found where it grew
        assert change.resolved_ml <= 2 * voxel
    assert prior_image.shape == scans["geometry"].shape and prior_image.max() > 0
    rows = longitudinal.table(comparison)
    assert [r["measure"] for r in rows][:3] == [f"{labels.REGION_NAMES[r]} (mL)" for r in labels.REGIONS]
    whole = comparison.regions[0]
    assert rows[0]["then"] == f"{whole.prior_ml:.2f}" and rows[0]["change"] == f"{whole.change_ml:+.2f}"
    assert rows[0]["percent"] == f"{whole.change_percent:+.1f} %" and rows[0]["beyond"] == "yes"
    assert rows[-1]["measure"].startswith("enhancing bidimensional")
    said = longitudinal.caveats(comparison)
    assert said[0].startswith("Registration onto the current T1c: prior T1c: rotation")
    assert longitudinal.variation_text() in said and "-13.9 %" in longitudinal.variation_text()


def test_the_difference_is_a_segmentation_of_named_coloured_segments(scans, compared):
    comparison, _ = compared
    scene, current_volume = scans["scene"], scans["nodes"][2]
    node = mrml_comparison.add_difference_node(scene, comparison.difference, scans["geometry"], "change")
    segmentation = node.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["unchanged tumor", "new tumor", "resolved tumor"]
    for index, (change, value) in enumerate(longitudinal.DIFFERENCE_VALUES.items()):
        segment = segmentation.GetNthSegment(index)
        assert segment.GetColor() == pytest.approx(longitudinal.DIFFERENCE_COLOURS[change])
        mask = mrml.segment_mask(node, segmentation.GetNthSegmentID(index), current_volume)
        np.testing.assert_array_equal(mask, comparison.difference == value)
    assert (comparison.difference == longitudinal.DIFFERENCE_VALUES["new"]).sum() > 0
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0  # no helper node left
