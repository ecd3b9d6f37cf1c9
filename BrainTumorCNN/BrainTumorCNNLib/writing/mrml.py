"""Slicer's MRML side of the engine (no Qt): volume nodes in, segmentation node out.

Works on Slicer's own classes, from the Slicer application or from the
`slicer-core` package, so the same code serves the module's logic, the batch
command (which writes `.seg.nrrd` files with Slicer's segmentation storage
node) and the tests.  Geometry crosses between ITK's LPS and Slicer's RAS here
and nowhere else.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import labels as label_table
from ..atomic import atomic_path
from ..modalities import MODALITIES
from ..reading import sanity
from ..reading.geometry import Geometry, check_same
from ..running import pipeline
from . import provenance as provenance_fields

logger = logging.getLogger(__name__)
#: The segment tag naming the tumor tissue a segment holds (a label table key): it survives renaming.
TISSUE_TAG = "BrainTumorCNN.tissue"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _slicer():
    import slicer  # the application's module in Slicer, slicer-core's elsewhere
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():  # what the Slicer application registers at startup, slicer-core does not;
        # without it an empty segment (a tissue the model did not find) cannot be made
        for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                     slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
            factory.RegisterConverterRule(rule())
    return slicer


def ijk_to_ras(geometry: Geometry) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of an ITK (LPS) grid."""
    matrix = np.eye(4)
    direction = np.array(geometry.direction).reshape(3, 3)
    matrix[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(geometry.spacing)
    matrix[:3, 3] = _LPS_TO_RAS @ np.array(geometry.origin)
    return matrix


def geometry_of(volume_node) -> Geometry:
    """The ITK (LPS) grid of a volume node, from its IJK-to-RAS matrix."""
    import vtk
    image = volume_node.GetImageData()
    if image is None:
        raise ValueError(f"volume {volume_node.GetName()!r} holds no image data")
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    spacing = np.linalg.norm(ras[:3, :3], axis=0)
    direction = _LPS_TO_RAS @ ras[:3, :3] / spacing
    origin = _LPS_TO_RAS @ ras[:3, 3]
    return Geometry(tuple(int(d) for d in image.GetDimensions()), tuple(float(s) for s in spacing),
                    tuple(float(o) for o in origin), tuple(float(d) for d in direction.ravel()))


def array_of(volume_node) -> Tuple[np.ndarray, Geometry]:
    """A scalar volume node's voxels as a (Z, Y, X) array (a copy) and its grid."""
    from vtk.util import numpy_support
    name = volume_node.GetName()
    transform = volume_node.GetParentTransformNode()
    if transform is not None:
        raise ValueError(f"volume {name!r} is under the transform {transform.GetName()!r}: "
                         "harden the transform (Data module) before segmenting")
    geometry = geometry_of(volume_node)
    image = volume_node.GetImageData()
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"volume {name!r} has {image.GetNumberOfScalarComponents()} components per voxel; "
                         "a scalar (grey-level) MRI volume is needed")
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return scalars.reshape(geometry.shape).copy(), geometry


def add_volume_node(scene, array: np.ndarray, geometry: Geometry, name: str, labelmap: bool = False):
    """A new scalar (or labelmap) volume node in `scene` holding `array` on `geometry`'s grid."""
    import vtk
    from vtk.util import numpy_support
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match the grid {geometry.shape} (Z, Y, X)")
    image = vtk.vtkImageData()
    image.SetDimensions(*geometry.size)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras(geometry)))
    node.SetAndObserveImageData(image)
    return node


def _vtk_matrix(matrix: np.ndarray):
    import vtk
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(matrix[r, c]))
    return out


def fill_segmentation_node(node, label_map: np.ndarray, geometry: Geometry, num_classes: int) -> None:
    """Replace the segments of `node` by one segment per tissue of a
    `num_classes` model (present or not, so each can be edited), named,
    coloured and coded from the label table, on `geometry`'s grid."""
    slicer = _slicer()
    scene = node.GetScene()
    labelmap = add_volume_node(scene, label_map.astype(np.uint8), geometry, "BrainTumorCNN labels", labelmap=True)
    try:
        segmentation = node.GetSegmentation()
        segmentation.RemoveAllSegments()
        node.SetReferenceImageGeometryParameterFromVolumeNode(labelmap)
        if label_map.any() and not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                labelmap, node):
            raise RuntimeError("Slicer could not import the label map into the segmentation")
        by_value = {}
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            by_value[segment.GetLabelValue()] = segmentation.GetNthSegmentID(index)
        for index, tissue in enumerate(label_table.class_tissues(num_classes)):
            segment_id = by_value.get(tissue.value) or segmentation.AddEmptySegment(tissue.key)
            segment = segmentation.GetSegment(segment_id)
            segment.SetName(tissue.name)
            segment.SetColor(*tissue.color)
            segment.SetTerminology(label_table.terminology_entry(tissue))
            segment.SetTag(TISSUE_TAG, tissue.key)
            segmentation.SetSegmentIndex(segment_id, index)
    finally:
        scene.RemoveNode(labelmap)


def add_segmentation_node(scene, label_map: np.ndarray, geometry: Geometry, num_classes: int, name: str,
                          provenance: Optional[Mapping] = None):
    """A new segmentation node filled as by fill_segmentation_node, carrying `provenance` (a Segmenter's
    record) as attributes (set_provenance); none is left when that fails."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    try:
        node.CreateDefaultDisplayNodes()
        fill_segmentation_node(node, label_map, geometry, num_classes)
        set_provenance(node, provenance)
    except Exception:
        remove_node(scene, node)
        raise
    return node


def set_provenance(node, provenance: Optional[Mapping]) -> None:
    """Record how a segmentation was made as the node's attributes (`BrainTumorCNN.model.name`, ...:
    writing/provenance.py), replacing any earlier record; nothing when `provenance` is None."""
    if provenance is None:
        return
    for name in list(node.GetAttributeNames() or ()):
        if name.startswith(provenance_fields.PREFIX):
            node.RemoveAttribute(name)
    for key, value in provenance_fields.fields(provenance).items():
        node.SetAttribute(key, value)


def provenance_of(node) -> Dict[str, object]:
    """The record set_provenance left on a node ({} when none)."""
    return provenance_fields.record_of({name: node.GetAttribute(name) for name in node.GetAttributeNames() or ()})


def remove_node(scene, node) -> None:
    """Remove a node and its display nodes from the scene."""
    for display in [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]:
        scene.RemoveNode(display)
    scene.RemoveNode(node)


def tissue_of(segment) -> Optional[label_table.Tissue]:
    """The tumor tissue a segment holds: by the tag fill_segmentation_node gives it (kept when a reader
    renames the segment, and in `.seg.nrrd` files), else by its name, else by its terminology where
    that names one label value (enhancing and non-enhancing tumor share theirs); None for a segment
    of the reader's own (added in an editor), which is no tumor tissue."""
    import vtk
    tag = vtk.reference("")
    if segment.GetTag(TISSUE_TAG, tag) and tag.get() in label_table.TISSUES:
        return label_table.TISSUES[tag.get()]
    named = [t for t in label_table.TISSUES.values() if t.name == segment.GetName()]
    codes = (segment.GetTerminology() or "").split("~")[1:3]
    coded = [t for t in label_table.TISSUES.values() if codes == label_table.terminology_entry(t).split("~")[1:3]]
    found = named or coded
    return found[0] if found and len({t.value for t in found}) == 1 else None


def segment_mask(segmentation_node, segment_id: str, reference_volume) -> np.ndarray:
    """One segment's voxels (Z, Y, X, bool) on a reference volume's grid."""
    slicer = _slicer()
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, _string_array([segment_id]), labelmap, reference_volume):
            name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
            raise RuntimeError(f"Slicer could not export segment {name!r}")
        mask, _ = array_of(labelmap)
    finally:
        scene.RemoveNode(labelmap)
    return mask > 0


def labels_of(segmentation_node, reference_volume) -> np.ndarray:
    """Internal label map (Z, Y, X) of a segmentation on a reference volume's grid, each segment's
    voxels given its tissue's value (tissue_of: renamed tumor segments count as their tissue); the
    reader's own segments are not tumor and are left out.  For reading edited segmentations."""
    segmentation = segmentation_node.GetSegmentation()
    out = np.zeros(geometry_of(reference_volume).shape, dtype=np.uint8)
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        tissue = tissue_of(segmentation.GetSegment(segment_id))
        if tissue is not None:
            out[segment_mask(segmentation_node, segment_id, reference_volume)] = tissue.value
    return out


def _string_array(items: Sequence[str]):
    import vtk
    array = vtk.vtkStringArray()
    for item in items:
        array.InsertNextValue(item)
    return array


def write_segmentation_file(label_map: np.ndarray, geometry: Geometry, num_classes: int,
                            path: Union[str, Path], provenance: Optional[Mapping] = None) -> Path:
    """Write a `.seg.nrrd` Slicer segmentation of an internal label map with
    Slicer's segmentation storage node, atomically; `provenance` (a Segmenter's record) goes into
    its header as key/value fields (the storage node writes no node attributes)."""
    scene = _slicer().vtkMRMLScene()
    node = add_segmentation_node(scene, label_map, geometry, num_classes, Path(path).name.split(".")[0])
    return write_segmentation_node(node, path, provenance)


def write_segmentation_node(node, path: Union[str, Path], provenance: Optional[Mapping] = None) -> Path:
    """Write a segmentation node as it stands (every segment, as named, edits included) to a `.seg.nrrd`
    file with Slicer's segmentation storage node, atomically; `provenance` as write_segmentation_file's.
    The node's scene's thread only."""
    slicer = _slicer()
    scene = node.GetScene()
    path = Path(path)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    try:
        with atomic_path(path) as tmp:
            storage.SetFileName(str(tmp))
            storage.SetUseCompression(True)
            if not storage.WriteData(node):
                raise OSError(f"could not write the segmentation {path} (disk full or not writable?)")
            if provenance is not None:
                provenance_fields.add_nrrd_fields(tmp, provenance_fields.fields(provenance))
    finally:
        scene.RemoveNode(storage)
    return path


def read_segmentation_file(path: Union[str, Path], scene):
    """A segmentation node read from a `.seg.nrrd` file by Slicer's storage node."""
    return _read_node(path, scene, "vtkMRMLSegmentationNode", _slicer().vtkMRMLSegmentationStorageNode(),
                      Path(path).name.split(".")[0])


def read_volume_file(path: Union[str, Path], scene, name: Optional[str] = None):
    """A scalar volume node read by Slicer's volume storage node (NIfTI, NRRD, MetaImage)."""
    return _read_node(path, scene, "vtkMRMLScalarVolumeNode", _slicer().vtkMRMLVolumeArchetypeStorageNode(),
                      name or Path(path).name.split(".")[0])


def _read_node(path: Union[str, Path], scene, node_class: str, storage, name: str):
    node = scene.AddNewNodeByClass(node_class, name)
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise OSError(f"Slicer could not read {path}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def tumor_volumes_ml(label_map: np.ndarray, geometry: Geometry, num_classes: int) -> Dict[str, float]:
    """Volume in mL of each segment (by name) and of the evaluation regions."""
    voxel_ml = geometry.voxel_volume_ml
    counts = np.bincount(label_map.ravel(), minlength=256)
    out = {t.name: float(counts[t.value] * voxel_ml) for t in label_table.class_tissues(num_classes)}
    for region, values in label_table.REGIONS.items():
        out[f"{region} tumor"] = float(counts[list(values)].sum() * voxel_ml)
    return out


def read_nodes(volumes: Sequence) -> Tuple[Dict[str, Tuple[np.ndarray, Geometry]], Dict[str, str]]:
    """The four volume nodes (T1, T1c, T2, FLAIR), each on its own grid:
    ({sequence: (array, geometry)}, {sequence: "T2 (node name)"} for messages);
    clear errors for a missing or repeated volume.  Main thread (touches MRML)."""
    if len(volumes) != 4:
        raise ValueError(f"expected four volumes (T1, T1c, T2, FLAIR), got {len(volumes)}")
    missing = [m for m, v in zip(MODALITIES, volumes) if v is None]
    if missing:
        raise ValueError(f"select all four volumes (T1, T1c, T2, FLAIR); missing: {', '.join(missing)}")
    ids = [v.GetID() for v in volumes]
    repeated = [m for m, i in zip(MODALITIES, ids) if ids.count(i) > 1]
    if repeated:
        raise ValueError(f"the same volume is selected for {', '.join(repeated)}: each slot needs its own volume")
    return ({m: array_of(v) for m, v in zip(MODALITIES, volumes)},
            {m: f"{m} ({v.GetName()})" for m, v in zip(MODALITIES, volumes)})


def read_volumes(volumes: Sequence) -> Tuple[np.ndarray, Geometry, List[str]]:
    """The four volume nodes (T1, T1c, T2, FLAIR) as a (4, Z, Y, X) float32
    array on their common grid, and warnings when their contrasts contradict
    their slots; clear errors for a missing, repeated or misaligned volume
    (the module's task prepares volumes on other grids instead: preparation.py).
    Main thread (touches MRML)."""
    arrays, names = read_nodes(volumes)
    check_same({names[m]: g for m, (_, g) in arrays.items()}, names["T1c"])
    images = np.stack([arrays[m][0].astype(np.float32) for m in MODALITIES])
    warnings = sanity.check_slots(images, [names[m] for m in MODALITIES])
    for warning in warnings:
        logger.warning(warning)
    return images, arrays["T1c"][1], warnings


def link_to_reference(segmentation_node, reference_volume) -> None:
    """Make `reference_volume` (the T1c) the segmentation's reference image and, when the
    volume sits in a study of the subject hierarchy (as Slicer's DICOM loader puts a series),
    put the segmentation in that study: what Slicer's DICOM SEG export needs to write a
    segmentation against the T1c series."""
    slicer = _slicer()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(segmentation_node.GetScene())
    volume_item = hierarchy.GetItemByDataNode(reference_volume)
    study = hierarchy.GetItemParent(volume_item) if volume_item else 0
    if not study or hierarchy.GetItemLevel(study) != slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy():
        return
    item = hierarchy.GetItemByDataNode(segmentation_node) or hierarchy.CreateItem(study, segmentation_node)
    hierarchy.SetItemParent(item, study)


def store_result(scene, result: pipeline.Segmentation, geometry: Geometry, name: str, output_node=None,
                 probabilities: bool = False, labelmap: bool = False, reference_volume=None,
                 prepared: Optional[Dict[str, np.ndarray]] = None, uncertainty: bool = False):
    """Put a finished segmentation into the scene (main thread) and return its node: a new node named
    `name`, or `output_node` (an existing segmentation the user chose to replace) refilled, linked to
    `reference_volume` (the T1c, on whose grid `geometry` is) by link_to_reference, carrying the
    result's provenance as attributes (set_provenance).  Optionally also
    one volume per tissue holding the network's probability (`probabilities`), a label map volume in
    the label values files use (`labelmap`), and the `prepared` volumes ({volume name: array on
    `geometry`}: inputs registered or resampled onto the T1c grid), and the uncertainty map (`uncertainty`:
    add_uncertainty_node, in no view until switched on).  All or nothing: on an error every
    node added here is removed again (a refilled `output_node` stays, being the user's)."""
    added = []
    try:
        if output_node is None:
            segmentation = add_segmentation_node(scene, result.labels, geometry, result.num_classes, name,
                                                 result.provenance or None)
            added.append(segmentation)
        else:
            fill_segmentation_node(output_node, result.labels, geometry, result.num_classes)
            set_provenance(output_node, result.provenance or None)
            segmentation = output_node
        if reference_volume is not None:
            link_to_reference(segmentation, reference_volume)
        for volume_name, array in (prepared or {}).items():
            added.append(add_volume_node(scene, array, geometry, volume_name))
            added[-1].CreateDefaultDisplayNodes()
        if probabilities:
            for index, tissue in enumerate(result.tissues, start=1):
                added.append(add_volume_node(scene, result.probabilities[index], geometry,
                                             f"{name} {tissue.name} probability"))
                added[-1].CreateDefaultDisplayNodes()
        if uncertainty:
            added.append(add_uncertainty_node(scene, result.uncertainty_map(), geometry, f"{name} uncertainty"))
            segmentation.SetNodeReferenceID(UNCERTAINTY_REFERENCE, added[-1].GetID())
        if labelmap:
            file_labels = label_table.output_scheme(result.num_classes).from_internal(result.labels)
            added.append(add_volume_node(scene, file_labels, geometry, f"{name} labels", labelmap=True))
            added[-1].CreateDefaultDisplayNodes()
    except Exception:
        for node in reversed(added):
            remove_node(scene, node)
        raise
    return segmentation


#: The segmentation node's reference to its uncertainty map (store_result), for a GUI to switch it on.
UNCERTAINTY_REFERENCE = "BrainTumorCNN.uncertainty"
UNCERTAINTY_COLOURS = "BrainTumorCNN uncertainty"  # the colour table's name: sure dark, unsure bright


def add_uncertainty_node(scene, entropy: np.ndarray, geometry: Geometry, name: str):
    """A scalar volume node of an uncertainty map (0-1) with its own colour table over the fixed range
    0-1 (so maps of two cases compare), in no slice view."""
    node = add_volume_node(scene, entropy.astype(np.float32, copy=False), geometry, name)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(uncertainty_colours(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    return node


def uncertainty_colours(scene):
    """The scene's uncertainty colour table (made once): black through red to yellow."""
    existing = scene.GetFirstNodeByName(UNCERTAINTY_COLOURS)
    if existing is not None:
        return existing
    import slicer
    table = slicer.vtkMRMLColorTableNode()
    table.SetName(UNCERTAINTY_COLOURS)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    for i in range(256):
        t = i / 255.0
        table.SetColor(i, min(1.0, 2.0 * t), max(0.0, 2.0 * t - 1.0), 0.0, 1.0)
    table.SetNamesInitialised(True)
    scene.AddNode(table)
    return table


def inputs_of(volumes: Sequence) -> Dict[str, str]:
    """How a provenance record names four volume nodes (T1, T1c, T2, FLAIR), which are no files."""
    return {m: f"volume node {v.GetName()!r}" for m, v in zip(MODALITIES, volumes)}


def segment_nodes(volumes: Sequence, options: pipeline.SegmentationOptions = pipeline.SegmentationOptions(),
                  output_node=None, name: Optional[str] = None,
                  progress: Optional[pipeline.Progress] = None,
                  cancel: Optional[Callable[[], bool]] = None):
    """Segment four volume nodes (T1, T1c, T2, FLAIR); returns (segmentation
    node on their grid, pipeline result).  Nothing enters the scene before the
    result is complete, so a cancel or an error leaves the scene as it was."""
    images, geometry, _ = read_volumes(volumes)
    result = pipeline.segment(images, geometry, options, progress=progress, cancel=cancel,
                              inputs=inputs_of(volumes))
    node = store_result(volumes[1].GetScene(), result, geometry, name or f"{volumes[1].GetName()} tumor",
                        output_node, reference_volume=volumes[1])
    return node, result
