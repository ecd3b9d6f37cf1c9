"""A prior scan compared in a Slicer scene (the Slicer module's and the page's side of `compare`): the
scans' T1c volume nodes and segmentation nodes in, the comparison of scoring/longitudinal.py out, and
its difference map back into the scene as a segmentation node whose segments are named and coloured
(new, resolved and unchanged tumor), so Slicer's views and editors show it as any segmentation."""
from __future__ import annotations

import numpy as np

from ..reading.geometry import Geometry
from ..scoring import longitudinal
from . import mrml

#: The segment tag naming which part of the change a segment holds (a DIFFERENCE_VALUES key).
CHANGE_TAG = "BrainTumorCNN.change"


def segment_name(change: str) -> str:
    """A difference segment's name: "new tumor", "resolved tumor", "unchanged tumor"."""
    return f"{change} tumor"


def scan_of(volume, segmentation) -> longitudinal.Scan:
    """A scan in the scene, its T1c volume node and its segmentation node (as edited: mrml.labels_of), as
    the comparison takes it, named after the volume."""
    t1c, grid = mrml.array_of(volume)
    return volume.GetName(), mrml.labels_of(segmentation, volume), grid, t1c


def add_difference_node(scene, difference: np.ndarray, geometry: Geometry, name: str):
    """A new segmentation node of a difference map (longitudinal.DIFFERENCE_VALUES, on `geometry`): one
    segment per change, present or not, named (segment_name), coloured (DIFFERENCE_COLOURS) and tagged
    (CHANGE_TAG), in DIFFERENCE_VALUES' order."""
    slicer = mrml._slicer()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    labelmap = mrml.add_volume_node(scene, difference.astype(np.uint8), geometry, f"{name} labels", labelmap=True)
    try:
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(labelmap)
        segmentation = node.GetSegmentation()
        if difference.any() and not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                labelmap, node):
            raise RuntimeError("Slicer could not import the difference map into the segmentation")
        by_value = {segmentation.GetNthSegment(i).GetLabelValue(): segmentation.GetNthSegmentID(i)
                    for i in range(segmentation.GetNumberOfSegments())}
        for index, (change, value) in enumerate(longitudinal.DIFFERENCE_VALUES.items()):
            segment_id = by_value.get(value) or segmentation.AddEmptySegment(change)
            segment = segmentation.GetSegment(segment_id)
            segment.SetName(segment_name(change))
            segment.SetColor(*longitudinal.DIFFERENCE_COLOURS[change])
            segment.SetTag(CHANGE_TAG, change)
            segmentation.SetSegmentIndex(segment_id, index)
    except Exception:
        mrml.remove_node(scene, node)
        raise
    finally:
        scene.RemoveNode(labelmap)
    return node
