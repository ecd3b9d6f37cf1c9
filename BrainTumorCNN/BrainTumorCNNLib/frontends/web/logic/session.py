"""One browser session: its case, its result and their nodes in the scene, its private folder of
uploads and downloads.  Scene work happens on the server's event-loop thread only (MRML is not
thread-safe); the reading and the segmentation run on worker threads and hand arrays over."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from undo_stack import UndoCommand

from .... import labels as label_table
from ....modalities import MODALITIES
from ....reading import io
from ....running import pipeline
from ....writing import mrml
from . import cases
from .security import MAX_UPLOAD_BYTES, ReadableRoots, private_folder

#: The sequences shown in the slice views, the segmentation over them.
SHOWN = ("T1c", "FLAIR")
UNCERTAINTY_OPACITY = 0.5  # the uncertainty map over the sequence, when switched on
#: The truth's outline in the slice views (the label layer, outlined): one colour, none of the tissues'
#: (the result's segments are drawn in those), so the two are told apart.
TRUTH_COLOUR = (0.0, 0.9, 1.0)
TRUTH_COLOURS = "BrainTumorCNN truth outline"


class Segment(NamedTuple):
    segment_id: str
    name: str
    colour: str  # #rrggbb
    tissue: Optional[label_table.Tissue]  # None: a segment the reader added, no tumor tissue


class Session:
    """The state of the one session a server holds; close() gives back its memory and files."""

    def __init__(self, slicer_app, roots: ReadableRoots, on_folder: Callable[[Path], None] = lambda folder: None):
        self.slicer_app = slicer_app
        self.data_roots = roots
        self.on_folder = on_folder  # told of the private folder when it is made
        self.folder: Optional[Path] = None  # private (0700), made at the first upload or download
        self.uploads = 0
        self.case_files: Optional[cases.CaseFiles] = None
        self.case: Optional[io.Case] = None
        self.result: Optional[pipeline.Segmentation] = None
        self.volume_nodes: Dict[str, object] = {}
        self.segmentation_node = None
        self.uncertainty_node = None  # the result's uncertainty map, in the slice views when switched on
        self.truth_node = None  # the case's ground truth (a label map), outlined in the slice views when switched on
        self.truth_table = None  # its colour table

    @property
    def scene(self):
        return self.slicer_app.scene

    @property
    def roots(self) -> ReadableRoots:
        """What this session may read: the --data folders and its own uploads."""
        return self.data_roots.with_folder(self.folder) if self.folder else self.data_roots

    def private(self) -> Path:
        if self.folder is None:
            self.folder = private_folder()
            self.on_folder(self.folder)
        return self.folder

    def upload(self, files: Sequence[Tuple[str, bytes]], limit: int = MAX_UPLOAD_BYTES) -> cases.CaseFiles:
        """Store uploaded files as a new case folder of this session and assign its sequences."""
        self.uploads += 1
        name = cases.upload_name([n for n, _ in files])
        folder = self.private() / name
        if folder.exists():  # the same case uploaded again: its own folder, told apart by a number
            folder = self.private() / f"{name}-{self.uploads}"
        folder, given = cases.store_upload_named(files, folder, limit)
        found = cases.case_files(folder, self.roots)
        found.given_names = {self.roots.check(stored): sent for stored, sent in given.items()}
        return found

    def show_case(self, case: io.Case) -> None:
        """Replace the scene's case by `case`: its T1c and FLAIR (on the T1c grid) in the slice views."""
        self.clear_case()
        self.case = case
        for modality in SHOWN:
            node = mrml.add_volume_node(self.scene, case.images[MODALITIES.index(modality)], case.geometry,
                                        f"{case.name} {modality}")
            node.CreateDefaultDisplayNodes()
            self.volume_nodes[modality] = node
        self.show_background("T1c")
        if case.truth is not None:
            self.truth_node = mrml.add_volume_node(self.scene, case.truth.astype(np.uint8, copy=False), case.geometry,
                                                   f"{case.name} truth", labelmap=True)
            self.truth_node.CreateDefaultDisplayNodes()
            self.truth_table = truth_colours(self.scene)
            self.truth_node.GetDisplayNode().SetAndObserveColorNodeID(self.truth_table.GetID())
        self.show_truth(False)
        self.slicer_app.display_manager.reset_views()

    def show_background(self, modality: str) -> None:
        node = self.volume_nodes.get(modality)
        if node is not None:
            self.slicer_app.display_manager.show_volume_in_slice_background(node)

    def show_result(self, result: pipeline.Segmentation) -> object:
        """Put a finished segmentation into the scene, named and coloured from the label table; returns
        its node, for the segment editor to edit over the T1c."""
        self.remove_result()
        self.segmentation_node = mrml.add_segmentation_node(self.scene, result.labels, self.case.geometry,
                                                            result.num_classes, f"{self.case.name} tumor")
        mrml.link_to_reference(self.segmentation_node, self.volume_nodes["T1c"])
        self._set_result(result)
        return self.segmentation_node

    def replace_result(self, result: pipeline.Segmentation, on_change: Callable[[str], None]) -> "ResultReplaced":
        """A new run's result in place of the one shown, in the same node (the segment editor's); returns
        the step that takes it back (ResultReplaced, for the editor's undo stack).  The replaced result is
        kept for Undo with its uncertainty map (made when it was shown), not its probabilities (a value per
        class and voxel: hundreds of MB of a whole case)."""
        self.result.uncertainty_map()
        self.result.probabilities = None
        before = (self.result, _copy(self.segmentation_node.GetSegmentation()))
        mrml.fill_segmentation_node(self.segmentation_node, result.labels, self.case.geometry, result.num_classes)
        mrml.link_to_reference(self.segmentation_node, self.volume_nodes["T1c"])
        self._set_result(result)
        return ResultReplaced(self, before, (result, _copy(self.segmentation_node.GetSegmentation())), on_change)

    def _set_result(self, result: pipeline.Segmentation) -> None:
        """`result` as the session's, with its uncertainty map (not shown) in place of the one before."""
        if self.uncertainty_node is not None:
            self.show_uncertainty(False)
            mrml.remove_node(self.scene, self.uncertainty_node)
        self.result = result
        self.uncertainty_node = mrml.add_uncertainty_node(self.scene, result.uncertainty_map(), self.case.geometry,
                                                          f"{self.case.name} uncertainty")
        self.show_uncertainty(False)

    def show_uncertainty(self, shown: bool) -> None:
        """The uncertainty map as the slice views' half-transparent foreground layer, or no foreground."""
        node = self.uncertainty_node if shown else None
        self.slicer_app.display_manager.show_volume_in_slice_foreground(node)
        for view in self.slicer_app.view_manager.get_slice_views():
            view.set_foreground_opacity(UNCERTAINTY_OPACITY if node is not None else 0.0)

    def show_truth(self, shown: bool) -> None:
        """The case's truth outlined over the slice views (their label layer), or no label layer."""
        node = self.truth_node if shown else None
        for view in self.slicer_app.view_manager.get_slice_views():
            slice_node = self.scene.GetNodeByID(view.get_view_node_id())
            slice_node.SetUseLabelOutline(True)
            for composite in self.scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
                if composite.GetLayoutName() == slice_node.GetLayoutName():
                    composite.SetLabelVolumeID(node.GetID() if node is not None else None)
                    composite.SetLabelOpacity(1.0)
            view.schedule_render()

    def labels(self) -> np.ndarray:
        """The segmentation as it stands (edits included): internal labels on the case's grid, of the
        tumor segments (renamed ones count as their tissue; the reader's own segments are left out)."""
        return mrml.labels_of(self.segmentation_node, self.volume_nodes["T1c"])

    def volumes(self, labels: Optional[np.ndarray] = None) -> Dict[str, float]:
        """mL of each segment and region, as the Slicer module computes them (mrml.tumor_volumes_ml), of
        `labels` (the segmentation as it stands when not given)."""
        labels = self.labels() if labels is None else labels
        return mrml.tumor_volumes_ml(labels, self.case.geometry, self.result.num_classes)

    def segments(self) -> List[Segment]:
        """Each segment in the scene, in order: its name, colour and tumor tissue (None for the reader's own)."""
        segmentation = self.segmentation_node.GetSegmentation()
        out = []
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            out.append(Segment(segmentation.GetNthSegmentID(index), segment.GetName(),
                               "#" + "".join(f"{round(c * 255):02x}" for c in segment.GetColor()),
                               mrml.tissue_of(segment)))
        return out

    def segment_ml(self, segment_id: str) -> float:
        """mL of one segment (a segment of the reader's own, which the tumor volumes leave out)."""
        mask = mrml.segment_mask(self.segmentation_node, segment_id, self.volume_nodes["T1c"])
        return float(np.count_nonzero(mask) * self.case.geometry.voxel_volume_ml)

    def remove_result(self) -> None:
        if self.uncertainty_node is not None:
            self.show_uncertainty(False)
            mrml.remove_node(self.scene, self.uncertainty_node)
        if self.segmentation_node is not None:
            mrml.remove_node(self.scene, self.segmentation_node)
        self.segmentation_node, self.uncertainty_node, self.result = None, None, None

    def clear_case(self) -> None:
        self.remove_result()
        if self.truth_node is not None:
            self.show_truth(False)
            mrml.remove_node(self.scene, self.truth_node)
            self.scene.RemoveNode(self.truth_table)
            self.truth_node = self.truth_table = None
        for node in self.volume_nodes.values():
            mrml.remove_node(self.scene, node)
        self.volume_nodes, self.case = {}, None

    def close(self) -> None:
        """Free the case's nodes and arrays and delete the session's uploads and downloads."""
        self.clear_case()
        self.case_files = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class ResultReplaced(UndoCommand):
    """A re-run as a step of the segment editor's undo stack: undone, the result before it returns with the
    corrections made to it (segments renamed or added included); redone, the re-run's result as it came
    (corrections made after it are steps of their own).  `on_change("undo" | "redo")` lets the page follow."""

    def __init__(self, session: Session, before, after, on_change: Callable[[str], None]):
        super().__init__()
        self._session, self._before, self._after, self._on_change = session, before, after, on_change

    def undo(self) -> None:
        self._apply(*self._before)
        self._on_change("undo")

    def redo(self) -> None:
        self._apply(*self._after)
        self._on_change("redo")

    def _apply(self, result: pipeline.Segmentation, segmentation) -> None:
        self._session.segmentation_node.GetSegmentation().DeepCopy(segmentation)
        self._session._set_result(result)


def _copy(segmentation):
    """A deep copy of a vtkSegmentation (its segments, names, colours, tags and representations)."""
    import slicer

    copy = slicer.vtkSegmentation()
    copy.DeepCopy(segmentation)
    return copy


def truth_colours(scene):
    """A colour table of the truth's outline, in `scene`: every tissue in TRUTH_COLOUR."""
    import slicer

    table = slicer.vtkMRMLColorTableNode()
    table.SetName(TRUTH_COLOURS)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    table.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for value in range(1, 256):
        table.SetColor(value, *TRUTH_COLOUR, 1.0)
    scene.AddNode(table)
    return table
