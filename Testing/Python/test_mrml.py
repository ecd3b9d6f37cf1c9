"""The Slicer side on Slicer's real classes (slicer-core): volumes read by
Slicer's storage nodes -> logic -> segmentation node -> .seg.nrrd written by
vtkMRMLSegmentationStorageNode and read back."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from BrainTumorCNNLib import labels  # noqa: E402
from BrainTumorCNNLib.writing import mrml  # noqa: E402
from BrainTumorCNNLib.reading import io  # noqa: E402
from BrainTumorCNNLib.reading.geometry import Geometry, GeometryError  # noqa: E402
from BrainTumorCNNLib.running import inference, pipeline  # noqa: E402
from BrainTumorCNNLib.running.cases import read_case  # noqa: E402

# An oblique grid: axes permuted and tilted, origin far from zero.
_c, _s = np.cos(0.3), np.sin(0.3)
OBLIQUE = Geometry(size=(24, 20, 8), spacing=(0.9, 1.1, 2.5), origin=(-31.5, 47.25, -12.0),
                   direction=(_c, -_s, 0.0, 0.0, 0.0, -1.0, _s, _c, 0.0))


def planted_labels(geometry: Geometry, values=(1, 2, 4)) -> np.ndarray:
    out = np.zeros(geometry.shape, np.uint8)
    for i, v in enumerate(values):
        out[2 + i:5 + i, 3 + 4 * i:7 + 4 * i, 2 + 5 * i:8 + 5 * i] = v
    return out


def write_nifti(array: np.ndarray, geometry: Geometry, path) -> None:
    image = sitk.GetImageFromArray(array)
    geometry.apply(image)
    sitk.WriteImage(image, str(path))


def test_geometry_read_by_slicer_equals_the_files(tmp_path):
    path = tmp_path / "t1c.nii.gz"
    array = np.arange(np.prod(OBLIQUE.shape), dtype=np.int16).reshape(OBLIQUE.shape)
    write_nifti(array, OBLIQUE, path)
    node = mrml.read_volume_file(path, slicer.vtkMRMLScene())
    voxels, geometry = mrml.array_of(node)
    assert not geometry.differences(OBLIQUE), geometry.differences(OBLIQUE)
    np.testing.assert_array_equal(voxels, array)


@pytest.mark.parametrize("num_classes", [4, 5])
def test_seg_nrrd_round_trip_keeps_grid_names_colours_terminology(tmp_path, num_classes):
    values = (1, 2, 4) if num_classes == 4 else (1, 2, 3, 4)
    label_map = planted_labels(OBLIQUE, values)
    path = mrml.write_segmentation_file(label_map, OBLIQUE, num_classes, tmp_path / "case.seg.nrrd")
    assert not list(tmp_path.glob(".*part*")), "temporary file left behind"

    # read back by Slicer's storage node, exported onto a volume Slicer read from a file on the same grid
    scene = slicer.vtkMRMLScene()
    write_nifti(np.zeros(OBLIQUE.shape, np.int16), OBLIQUE, tmp_path / "reference.nii.gz")
    reference = mrml.read_volume_file(tmp_path / "reference.nii.gz", scene)
    node = mrml.read_segmentation_file(path, scene)
    np.testing.assert_array_equal(mrml.labels_of(node, reference), label_map)

    segmentation = node.GetSegmentation()
    tissues = labels.class_tissues(num_classes)
    assert segmentation.GetNumberOfSegments() == len(tissues)
    for index, tissue in enumerate(tissues):
        segment = segmentation.GetNthSegment(index)
        assert segment.GetName() == tissue.name
        assert segment.GetColor() == pytest.approx(tissue.color)
        entry = segment.GetTerminology()
        assert entry == labels.terminology_entry(tissue)
        assert f"SCT^{tissue.type[0]}^{tissue.type[2]}" in entry

    # the file itself, read by an independent reader (SimpleITK's NRRD), sits on the input's physical grid
    stored = sitk.ReadImage(str(path))
    first_voxel = np.array(stored.TransformIndexToPhysicalPoint((0, 0, 0)))
    expected = np.array(OBLIQUE.origin) + np.array(OBLIQUE.direction).reshape(3, 3) @ (
        np.array(OBLIQUE.spacing) * _index_of_first_voxel(stored, OBLIQUE))
    np.testing.assert_allclose(first_voxel, expected, atol=1e-4)
    np.testing.assert_allclose(stored.GetSpacing()[:3], OBLIQUE.spacing, rtol=1e-6)
    np.testing.assert_allclose(stored.GetDirection()[:9] if stored.GetDimension() == 3
                               else _direction3(stored), OBLIQUE.direction, atol=1e-6)


def test_a_case_without_tumor_writes_a_segmentation_of_empty_named_segments(tmp_path):
    """A model that finds no tumor still gives the user a file with every tissue's segment, ready to edit."""
    empty = np.zeros(OBLIQUE.shape, np.uint8)
    path = mrml.write_segmentation_file(empty, OBLIQUE, 4, tmp_path / "case.seg.nrrd")
    scene = slicer.vtkMRMLScene()
    write_nifti(np.zeros(OBLIQUE.shape, np.int16), OBLIQUE, tmp_path / "reference.nii.gz")
    reference = mrml.read_volume_file(tmp_path / "reference.nii.gz", scene)
    node = mrml.read_segmentation_file(path, scene)
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == [
        t.name for t in labels.class_tissues(4)]
    assert not mrml.labels_of(node, reference).any()


def _index_of_first_voxel(stored: sitk.Image, grid: Geometry) -> np.ndarray:
    """Index on `grid` of the stored image's first voxel (Slicer may crop the extent to the segments)."""
    point = np.array(stored.TransformIndexToPhysicalPoint((0, 0, 0)))
    direction = np.array(grid.direction).reshape(3, 3)
    index = np.linalg.solve(direction, point - np.array(grid.origin)) / np.array(grid.spacing)
    assert np.allclose(index, np.round(index), atol=1e-4), "segmentation voxels are off the input grid"
    return np.round(index)


def _direction3(stored: sitk.Image):
    d = np.array(stored.GetDirection()).reshape(stored.GetDimension(), stored.GetDimension())
    return d[:3, :3].ravel()


def test_volumes_in_ml_are_voxel_counts_times_voxel_volume():
    label_map = planted_labels(OBLIQUE)
    volumes = mrml.tumor_volumes_ml(label_map, OBLIQUE, 4)
    voxel_ml = 0.9 * 1.1 * 2.5 / 1000
    assert volumes["Edema"] == pytest.approx((label_map == 2).sum() * voxel_ml)
    assert volumes["Enhancing tumor"] == pytest.approx((label_map == 4).sum() * voxel_ml)
    assert volumes["complete tumor"] == pytest.approx((label_map > 0).sum() * voxel_ml)
    assert volumes["core tumor"] == pytest.approx(np.isin(label_map, (1, 4)).sum() * voxel_ml)


def _scene_with_case(case_folder, oblique: bool = True):
    """A scene holding the four volumes of a case, each read by Slicer's storage node,
    after moving the case onto an oblique grid with a non-zero origin."""
    scene = slicer.vtkMRMLScene()
    nodes = []
    files = read_case(case_folder).files
    for path in files.values() if oblique else ():  # the four volumes and the truth
        image = sitk.ReadImage(str(path))
        image.SetDirection(OBLIQUE.direction)
        image.SetOrigin(OBLIQUE.origin)
        sitk.WriteImage(image, str(path))
    for modality in io.MODALITIES:
        nodes.append(mrml.read_volume_file(files[modality], scene, name=f"case_{modality.lower()}"))
    return scene, nodes


def test_logic_segments_volume_nodes_onto_their_grid(untrained_models, tmp_path, synthetic_cases):
    scene, volumes = _scene_with_case(synthetic_cases[0])
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu", cleanup=None)
    before = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    node, result = mrml.segment_nodes(volumes, options, name="tumor")
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == before + 1
    assert node.GetName() == "tumor" and result.model_name == "TwoPathCNN"
    assert result.labels.any(), "an untrained model still labels some voxels: nothing to compare otherwise"

    # same labels as the engine run on the files directly, and back from the node on the T1c grid
    case = read_case(synthetic_cases[0])
    direct = pipeline.segment(case.images, case.geometry, options)
    np.testing.assert_array_equal(result.labels, direct.labels)
    np.testing.assert_array_equal(mrml.labels_of(node, volumes[1]), result.labels)
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    assert node.GetNodeReferenceID(role) == volumes[1].GetID()  # the T1c, not the label map it was filled from

    path = tmp_path / "out.seg.nrrd"
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    again = mrml.read_segmentation_file(path, slicer.vtkMRMLScene())
    assert again.GetSegmentation().GetNumberOfSegments() == 3


def test_logic_refills_the_output_the_user_chose(untrained_models, synthetic_cases):
    scene, volumes = _scene_with_case(synthetic_cases[1], oblique=False)
    existing = mrml.add_segmentation_node(scene, planted_labels(mrml.geometry_of(volumes[1])),
                                          mrml.geometry_of(volumes[1]), 5, "old")
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu", cleanup=None)
    node, result = mrml.segment_nodes(volumes, options, output_node=existing)
    assert node is existing and scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    names = [node.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(node.GetSegmentation().GetNumberOfSegments())]
    assert names == [t.name for t in labels.class_tissues(4)]
    np.testing.assert_array_equal(mrml.labels_of(node, volumes[1]), result.labels)


def test_cancel_and_errors_leave_the_scene_unchanged(untrained_models, synthetic_cases):
    scene, volumes = _scene_with_case(synthetic_cases[2], oblique=False)
    count = scene.GetNumberOfNodes()
    options = pipeline.SegmentationOptions(model="TwoPathCNN", device="cpu")
    with pytest.raises(inference.Cancelled):
        mrml.segment_nodes(volumes, options, cancel=lambda: True)
    assert scene.GetNumberOfNodes() == count

    with pytest.raises(ValueError, match="T1c.*T2"):
        mrml.segment_nodes([volumes[0], volumes[1], volumes[1], volumes[3]], options)
    with pytest.raises(ValueError, match="missing: FLAIR"):
        mrml.segment_nodes([volumes[0], volumes[1], volumes[2], None], options)

    moved = volumes[2]
    moved.SetOrigin(*(np.array(moved.GetOrigin()) + [0.0, 0.0, 5.0]))
    with pytest.raises(GeometryError, match="T2 \\(case_t2\\).*origin"):
        mrml.segment_nodes(volumes, options)

    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    volumes[0].SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="harden the transform"):
        mrml.segment_nodes(volumes, options)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_one_image_in_two_slots_is_refused(synthetic_cases):
    scene, volumes = _scene_with_case(synthetic_cases[0], oblique=False)
    t2, geometry = mrml.array_of(volumes[2])
    copy = mrml.add_volume_node(scene, t2, geometry, "copy of t2")
    with pytest.raises(ValueError, match="T2 \\(case_t2\\) and FLAIR \\(copy of t2\\) hold identical voxels"):
        mrml.read_volumes([volumes[0], volumes[1], volumes[2], copy])


def test_swapped_slots_warn_on_a_real_case(shared_data):
    files = read_case(shared_data / "brats2021" / "BraTS2021_00002").files
    scene = slicer.vtkMRMLScene()
    volumes = [mrml.read_volume_file(files[m], scene) for m in io.MODALITIES]
    assert mrml.read_volumes(volumes)[2] == []
    _, _, warnings = mrml.read_volumes([volumes[0], volumes[1], volumes[3], volumes[2]])  # T2 and FLAIR swapped
    assert any("T2 and FLAIR are probably swapped" in w for w in warnings), warnings


def test_an_unreadable_file_is_an_error_and_adds_nothing(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    scene = slicer.vtkMRMLScene()
    with pytest.raises(OSError, match="could not read .*broken.nii.gz"):
        mrml.read_volume_file(tmp_path / "broken.nii.gz", scene)
    assert scene.GetNumberOfNodes() == 0


def _finished(geometry: Geometry, num_classes: int = 4) -> pipeline.Segmentation:
    """A finished run's result on `geometry`: planted labels, probabilities peaked on them."""
    label_map = planted_labels(geometry)
    values = labels.class_values(num_classes)
    probabilities = np.stack([np.where(label_map == v, 0.7, 0.1) for v in values]).astype(np.float32)
    return pipeline.Segmentation(label_map, probabilities, num_classes, "TwoPathCNN", {})


def _volume_nodes(scene) -> dict:
    nodes = (scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
             for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")))
    return {node.GetName(): node for node in nodes}


def test_store_result_adds_the_segmentation_and_the_optional_volumes():
    """What the Slicer widget puts into the scene when a run finishes (storeResult)."""
    scene = slicer.vtkMRMLScene()
    result = _finished(OBLIQUE)
    node = mrml.store_result(scene, result, OBLIQUE, "case tumor", probabilities=True, labelmap=True)
    assert node.GetName() == "case tumor" and scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    volumes = _volume_nodes(scene)
    tissues = labels.class_tissues(4)
    assert set(volumes) == {f"case tumor {t.name} probability" for t in tissues} | {"case tumor labels"}
    for index, tissue in enumerate(tissues, start=1):
        volume = volumes[f"case tumor {tissue.name} probability"]
        array, geometry = mrml.array_of(volume)
        np.testing.assert_array_equal(array, result.probabilities[index])
        assert geometry == OBLIQUE and not volume.IsA("vtkMRMLLabelMapVolumeNode")
        assert volume.GetDisplayNode() is not None
    label_volume = volumes["case tumor labels"]
    assert label_volume.IsA("vtkMRMLLabelMapVolumeNode") and label_volume.GetDisplayNode() is not None
    np.testing.assert_array_equal(mrml.array_of(label_volume)[0],
                                  labels.output_scheme(4).from_internal(result.labels))

    # the output the user chose is refilled; no volume unless asked for
    again = mrml.store_result(scene, _finished(OBLIQUE, 5), OBLIQUE, "other", output_node=node)
    assert again is node and scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    assert node.GetSegmentation().GetNumberOfSegments() == len(labels.class_tissues(5))
    assert set(_volume_nodes(scene)) == set(volumes)


@pytest.mark.parametrize("output", [False, True], ids=["new segmentation", "chosen output"])
def test_store_result_failing_half_way_adds_nothing(output):
    """A result whose probabilities lack a class fails on the third probability volume: the two
    volumes and the new segmentation added before are removed, display nodes too."""
    scene = slicer.vtkMRMLScene()
    chosen = mrml.add_segmentation_node(scene, planted_labels(OBLIQUE), OBLIQUE, 4, "chosen") if output else None
    before = scene.GetNumberOfNodes()
    result = _finished(OBLIQUE)
    result.probabilities = result.probabilities[:3]
    with pytest.raises(IndexError):
        mrml.store_result(scene, result, OBLIQUE, "case tumor", output_node=chosen, probabilities=True,
                          labelmap=True)
    assert scene.GetNumberOfNodes() == before
    assert _volume_nodes(scene) == {}
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == (1 if output else 0)


def _dicom_t1c(scene, geometry: Geometry):
    """A T1c volume placed as Slicer's DICOM loader places a series: under a study of a patient in
    the subject hierarchy, with the series' and its instances' UIDs."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    constants = slicer.vtkMRMLSubjectHierarchyConstants
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Test^Patient")
    study = hierarchy.CreateStudyItem(patient, "MR brain")
    hierarchy.SetItemUID(study, constants.GetDICOMUIDName(), "1.2.826.0.1.3680043.8.498.77.1")
    t1c = mrml.add_volume_node(scene, np.ones(geometry.shape, np.int16), geometry, "7: T1 MPRAGE post gad")
    t1c.SetAttribute("DICOM.instanceUIDs", " ".join(f"1.2.826.0.1.3680043.8.498.77.1.7.{k + 1}"
                                                     for k in range(geometry.size[2])))
    item = hierarchy.CreateItem(study, t1c)
    hierarchy.SetItemUID(item, constants.GetDICOMUIDName(), "1.2.826.0.1.3680043.8.498.77.1.7")
    return hierarchy, study, t1c


@pytest.mark.parametrize("output", [False, True], ids=["new segmentation", "chosen output"])
def test_a_result_on_a_dicom_t1c_is_placed_for_slicers_dicom_export(output):
    """The segmentation's reference image is the T1c (not the temporary label map it was filled
    from), and it sits in the T1c's study: what Slicer's DICOM SEG export starts from."""
    scene = slicer.vtkMRMLScene()
    hierarchy, study, t1c = _dicom_t1c(scene, OBLIQUE)
    chosen = mrml.add_segmentation_node(scene, planted_labels(OBLIQUE), OBLIQUE, 4, "chosen") if output else None
    node = mrml.store_result(scene, _finished(OBLIQUE), OBLIQUE, "case tumor", output_node=chosen,
                             reference_volume=t1c)
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    assert node.GetNodeReferenceID(role) == t1c.GetID()
    reference = slicer.vtkMRMLSegmentationNode()
    reference.SetReferenceImageGeometryParameterFromVolumeNode(t1c)  # the T1c's own geometry string
    assert (node.GetSegmentation().GetConversionParameter("Reference image geometry")
            == reference.GetSegmentation().GetConversionParameter("Reference image geometry"))
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    assert mrml.labels_of(node, t1c).any()


def test_a_result_on_a_volume_outside_a_study_stays_where_it_is():
    scene = slicer.vtkMRMLScene()
    t1c = mrml.add_volume_node(scene, np.ones(OBLIQUE.shape, np.int16), OBLIQUE, "case_t1ce")
    node = mrml.store_result(scene, _finished(OBLIQUE), OBLIQUE, "case tumor", reference_volume=t1c)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert node.GetNodeReferenceID(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) \
        == t1c.GetID()
    assert hierarchy.GetItemByDataNode(node) == 0  # not put anywhere: Slicer's own logic files it


def test_prepared_volumes_are_kept_in_the_scene_when_asked_for():
    scene = slicer.vtkMRMLScene()
    flair = np.arange(np.prod(OBLIQUE.shape), dtype=np.float32).reshape(OBLIQUE.shape)
    mrml.store_result(scene, _finished(OBLIQUE), OBLIQUE, "case tumor",
                      prepared={"case_flair on T1c grid": flair})
    array, geometry = mrml.array_of(_volume_nodes(scene)["case_flair on T1c grid"])
    np.testing.assert_array_equal(array, flair)
    assert geometry == OBLIQUE


def test_renamed_and_added_segments_read_back_as_the_tumor_alone(tmp_path):
    """Issue 35 point 1: a renamed tumor segment still counts as its tissue (its tag, kept in the
    .seg.nrrd), a segment the reader adds is no tumor tissue and is left out of the label map."""
    label_map = planted_labels(OBLIQUE)
    scene = slicer.vtkMRMLScene()
    reference = mrml.add_volume_node(scene, np.zeros(OBLIQUE.shape, np.float32), OBLIQUE, "T1c")
    node = mrml.add_segmentation_node(scene, label_map, OBLIQUE, 4, "edited")
    segmentation = node.GetSegmentation()
    segmentation.GetNthSegment(2).SetName("Checked enhancing")  # enhancing: its terminology is non-enhancing's too
    added = segmentation.AddEmptySegment("", "Resection cavity", None)
    np.testing.assert_array_equal(mrml.labels_of(node, reference), label_map)
    assert mrml.tissue_of(segmentation.GetSegment(added)) is None
    assert not mrml.segment_mask(node, added, reference).any()

    path = mrml.write_segmentation_node(node, tmp_path / "edited.seg.nrrd")
    read = mrml.read_segmentation_file(path, scene)
    names = [read.GetSegmentation().GetNthSegment(i).GetName() for i in range(4)]
    assert names[2:] == ["Checked enhancing", "Resection cavity"]
    assert mrml.tissue_of(read.GetSegmentation().GetNthSegment(2)) == labels.TISSUES["enhancing"]
    np.testing.assert_array_equal(mrml.labels_of(read, reference), label_map)
