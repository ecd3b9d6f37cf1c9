"""The page's views as a radiologist reads them in Slicer: Slicer's four-up layout (axial top left, 3-D
top right, sagittal bottom left, coronal bottom right), each slice view with its name, the patient's
directions at its edges, its slice number, the window / level and the value under the pointer;
window / level presets per sequence; slice moves by keys; the views on the tumor's largest
cross-section after a run; in 3-D, a translucent brain surface and an orientation marker.

Scene work on the server's event-loop thread only, as the rest of the session's."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ....modalities import MODALITIES
from ....reading import io
from ....reading.geometry import Geometry
from ....writing import mrml, preview

#: Slicer's names and colours of the slice views.
VIEW_NAMES = {"Axial": ("R", "#F34A33"), "Sagittal": ("Y", "#EFD64D"), "Coronal": ("G", "#6DAD4A")}
#: Window / level presets: Slicer's automatic one, the brain's intensities, the tumor's.
PRESETS = ("brain", "tumor", "auto")
DEFAULT_PRESET = "brain"
#: Percentiles of the brain's (non-zero) voxels each preset spans; "tumor" spans those of the tumor once
#: segmented (TUMOR_PERCENTILES), before that the brightest part of the brain, where lesions show.
BRAIN_PERCENTILES = (0.5, 99.5)
TUMOR_PERCENTILES = (1.0, 99.0)
BRIGHT_PERCENTILES = (50.0, 99.9)
#: Slices a Page key moves (an arrow key moves one).
PAGE_SLICES = 10
#: Priority of the views' pointer observers: above the slice views' interactor style (which aborts what it handles).
OBSERVER_PRIORITY = 100.0
#: Pixels of drag that move the window / level across the sequence's whole range of intensities.
DRAG_PIXELS = 400.0
#: The brain surface in 3-D: every SURFACE_STEP-th voxel, colour and opacity.
SURFACE_STEP = 2
SURFACE_COLOR = (1.0, 0.8, 0.7)
SURFACE_OPACITY = 0.3


def four_up_layout():
    """Slicer's "Four-Up" layout: axial (Red) top left, 3-D top right, sagittal (Yellow) bottom left,
    coronal (Green) bottom right."""
    from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

    return Layout(LayoutDirection.Horizontal, [
        Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.sagittal_view()]),
        Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.threed_view(), ViewLayoutDefinition.coronal_view()]),
    ])


def edge_letters(slice_to_ras: np.ndarray) -> Dict[str, str]:
    """The patient direction at each edge of a slice view ({"left": "R", "right": "L", "top": "A",
    "bottom": "P"} for Slicer's axial view), from its 4x4 SliceToRAS matrix: the screen's x axis is its
    first column, y its second; the letter is that of the RAS axis each points closest to."""
    def letter(direction: np.ndarray) -> str:
        axis = int(np.argmax(np.abs(direction)))
        return ("LR", "PA", "IS")[axis][int(direction[axis] > 0)]

    x, y = slice_to_ras[:3, 0], slice_to_ras[:3, 1]
    return {"left": letter(-x), "right": letter(x), "top": letter(y), "bottom": letter(-y)}


def largest_cross_sections(labels: np.ndarray, geometry: Geometry) -> Optional[Dict[str, Tuple[int, int]]]:
    """{view: (grid axis (0 i, 1 j, 2 k), index)} of the tumor's largest cross-section in each slice
    view's plane, chosen as the preview chooses them (preview.choose_slices: the same sections, so
    their numbers agree); None without tumor."""
    if not (labels > 0).any():
        return None
    cuts = preview.choose_slices(labels, geometry)
    return {view: (2 - cuts[view.lower()].axis, cuts[view.lower()].index) for view in VIEW_NAMES}


def window_level(image: np.ndarray, preset: str, tumor: Optional[np.ndarray] = None) -> Optional[Tuple[float, float]]:
    """(window, level) of `preset` for one sequence (image (Z, Y, X)); None for "auto" (Slicer's own)
    and for an image without brain voxels."""
    if preset == "auto":
        return None
    brain = image != 0
    if preset == "tumor" and tumor is not None and tumor.any():
        values, percentiles = image[tumor], TUMOR_PERCENTILES
    else:
        values, percentiles = image[brain], BRAIN_PERCENTILES if preset == "brain" else BRIGHT_PERCENTILES
    if not values.size:
        return None
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if preset == "tumor":  # room either side, so the tumor's own range is not saturated
        low, high = low - 0.1 * (high - low), high + 0.1 * (high - low)
    high = max(high, low + 1e-3)
    return high - low, (high + low) / 2


def brain_surface(images: np.ndarray, geometry: Geometry):
    """vtkPolyData (RAS) of the outline of the case's non-zero voxels (the brain of a skull-stripped
    case, else the head), smoothed, on every SURFACE_STEP-th voxel."""
    import vtk
    from vtk.util import numpy_support

    step = SURFACE_STEP
    mask = np.any(images != 0, axis=0)[::step, ::step, ::step]
    mask = np.pad(mask, 1).astype(np.uint8)  # closed at the volume's borders
    image = vtk.vtkImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.SetSpacing(step, step, step)
    image.SetOrigin(-step, -step, -step)  # the padding
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask.ravel(), deep=True))
    contour = vtk.vtkFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 0.5)
    smooth = vtk.vtkWindowedSincPolyDataFilter()
    smooth.SetInputConnection(contour.GetOutputPort())
    smooth.SetNumberOfIterations(15)
    smooth.SetPassBand(0.05)
    smooth.NormalizeCoordinatesOn()
    transform = vtk.vtkTransform()
    transform.SetMatrix(mrml._vtk_matrix(mrml.ijk_to_ras(geometry)))
    to_ras = vtk.vtkTransformPolyDataFilter()
    to_ras.SetInputConnection(smooth.GetOutputPort())
    to_ras.SetTransform(transform)
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(to_ras.GetOutputPort())
    normals.Update()
    return normals.GetOutput()


def translucency_ready(view) -> None:
    """Let a 3-D view draw translucent surfaces (the brain's).  trame-slicer's 3-D view sorts them by depth
    peeling in a window of 8 samples a pixel, and there (offscreen, EGL) the brain's surface was not drawn
    at all; depth peeling wants alpha bit planes and no multisampling (vtkRenderer's UseDepthPeeling),
    which the window gets here."""
    window = view.render_window()
    if window.GetMultiSamples() or not window.GetAlphaBitPlanes():
        window.SetMultiSamples(0)
        window.SetAlphaBitPlanes(1)


class Views:
    """The session's slice and 3-D views: what their overlays show (`view_info` in the page's state),
    window / level, slice moves, the brain surface."""

    def __init__(self, slicer_app, state):
        self.slicer_app = slicer_app
        self.state = state
        self.case: Optional[io.Case] = None
        self.volume_nodes: Dict[str, object] = {}
        self.tumor: Optional[np.ndarray] = None  # (Z, Y, X) bool, for the tumor preset
        self.surface_node = None
        self.hovered = "Axial"  # the slice view the pointer was last over (the keys move it)
        self.pointer: Dict[str, Tuple[float, float]] = {}  # where the pointer last was in each view (display xy)
        self._observed = set()
        self._drag = None  # (start position, window, level, the image's range) while dragging

    @property
    def scene(self):
        return self.slicer_app.scene

    def slice_views(self) -> Dict[str, object]:
        return {view.get_orientation(): view for view in self.slicer_app.view_manager.get_slice_views()}

    def slice_node(self, view):
        return self.scene.GetNodeByID(view.get_view_node_id())

    # ------------------------------------------------------------------ a case
    def show_case(self, case: io.Case, volume_nodes: Dict[str, object]) -> None:
        """Set up the views for a newly shown case: presets, the brain surface, the overlays."""
        self.case, self.volume_nodes, self.tumor = case, volume_nodes, None
        self.pointer = {}  # nothing of the case before is read out
        for modality in volume_nodes:
            self.apply_preset(modality, DEFAULT_PRESET)
        with self.state:
            self.state.wl_presets = {m: DEFAULT_PRESET for m in volume_nodes}
        self._add_surface()
        for view in self.slicer_app.view_manager.get_threed_views():
            from slicer import vtkMRMLAbstractViewNode
            view.set_orientation_marker(vtkMRMLAbstractViewNode.OrientationMarkerTypeAxes,
                                        vtkMRMLAbstractViewNode.OrientationMarkerSizeMedium)
            view.reset_view()
        for node in volume_nodes.values():  # a window / level drag in a slice view changes its display node
            node.GetDisplayNode().AddObserver("ModifiedEvent", lambda *_: self.update_info())
        self.observe()
        self.update_info()

    def clear(self) -> None:
        if self.surface_node is not None:
            mrml.remove_node(self.scene, self.surface_node)
        self.surface_node, self.case, self.volume_nodes, self.tumor = None, None, {}, None
        self.pointer = {}
        self.update_info()

    def _add_surface(self) -> None:
        if self.surface_node is not None:
            mrml.remove_node(self.scene, self.surface_node)
        node = self.scene.AddNewNodeByClass("vtkMRMLModelNode", f"{self.case.name} brain")
        node.SetAndObservePolyData(brain_surface(self.case.images, self.case.geometry))
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetScalarVisibility(False)  # one colour (with scalars on, an empty lookup table: VTK errors)
        display.SetColor(*SURFACE_COLOR)
        display.SetOpacity(SURFACE_OPACITY)
        display.SetVisibility2D(False)
        self.surface_node = node
        for view in self.slicer_app.view_manager.get_threed_views():
            translucency_ready(view)

    # ------------------------------------------------------------------ a result
    def show_tumor(self, labels: np.ndarray) -> None:
        """All three slice views through the tumor's largest cross-section of their orientation, centred
        on it."""
        import slicer

        self.tumor = labels > 0
        found = largest_cross_sections(labels, self.case.geometry)
        if found is None:
            return
        centre = [float(np.mean(axis)) for axis in np.nonzero(self.tumor)[::-1]]  # i, j, k
        ijk_to_ras = mrml.ijk_to_ras(self.case.geometry)
        for orientation, view in self.slice_views().items():
            point = list(centre)
            axis, index = found[orientation]
            point[axis] = index
            r, a, s, _ = ijk_to_ras @ np.array(point + [1.0])
            node = self.slice_node(view)
            node.JumpSliceByCentering(r, a, s)
            view.set_slice_value(float(view.get_slice_value()))  # snapped to the slice, as the keys move it
        for modality, preset in dict(self.state.wl_presets or {}).items():
            if preset == "tumor":
                self.apply_preset(modality, preset)
        self.update_info()

    # ------------------------------------------------------------------ window / level
    def apply_preset(self, modality: str, preset: str) -> None:
        node = self.volume_nodes.get(modality)
        if node is None or self.case is None:
            return
        display = node.GetDisplayNode()
        wl = window_level(self.case.images[MODALITIES.index(modality)], preset, self.tumor)
        if wl is None:
            display.AutoWindowLevelOn()
        else:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(*wl)

    def set_preset(self, modality: str, preset: str) -> None:
        if preset not in PRESETS:
            return
        self.apply_preset(modality, preset)
        with self.state:
            self.state.wl_presets = {**dict(self.state.wl_presets or {}), modality: preset}
        self.update_info()

    # ------------------------------------------------------------------ moving through slices
    def move(self, key: str) -> None:
        """An arrow key moves the slice view under the pointer by one slice, a Page key by PAGE_SLICES:
        up (ArrowUp, ArrowRight, PageUp) to a higher slice number in every view, whichever way the
        view's offset runs along the grid (a coronal view's runs against j in an LPS file)."""
        steps = {"ArrowUp": 1, "ArrowRight": 1, "ArrowDown": -1, "ArrowLeft": -1,
                 "PageUp": PAGE_SLICES, "PageDown": -PAGE_SLICES}.get(key)
        view = self.slice_views().get(self.hovered)
        if steps is None or view is None or self.case is None:
            return
        low, high = view.get_slice_range()
        _, sign = self.grid_axis(view)
        value = view.get_slice_value() + sign * steps * view.get_slice_step()
        view.set_slice_value(float(min(max(value, low), high)))
        self.update_info()

    # ------------------------------------------------------------------ what the overlays show
    def observe(self) -> None:
        """Follow each slice view's pointer, slice and window / level changes (once per view)."""
        for orientation, view in self.slice_views().items():
            if orientation in self._observed:
                continue
            self._observed.add(orientation)
            interactor = view.interactor()
            # before the slice view's own interactor style, which takes the events it handles
            interactor.AddObserver("MouseMoveEvent",
                                   lambda caller, _event, o=orientation: self._pointer(o, caller.GetEventPosition()),
                                   OBSERVER_PRIORITY)
            for event, handle in (("LeftButtonPressEvent", self._drag_start), ("LeftButtonReleaseEvent", self._drag_end)):
                interactor.AddObserver(event, lambda caller, _event, o=orientation, h=handle: h(o, caller.GetEventPosition()),
                                       OBSERVER_PRIORITY)
            view.modified.connect(lambda *_: self.update_info())

    # ------------------------------------------------------------------ window / level by dragging
    def _editing(self) -> bool:
        effect = self.slicer_app.segmentation_editor.active_effect
        return effect is not None and type(effect).__name__ != "SegmentationEffectNoTool"

    def _drag_start(self, orientation: str, position) -> None:
        """A left drag with no editing tool active adjusts the shown sequence's window / level."""
        node = self.volume_nodes.get(self.background())
        if self._editing() or node is None or self.case is None:
            self._drag = None
            return
        display = node.GetDisplayNode()
        image = self.case.images[MODALITIES.index(self.background())]
        slice_node = self.slice_node(self.slice_views()[orientation])
        import vtk
        kept = vtk.vtkMatrix4x4()
        kept.DeepCopy(slice_node.GetSliceToRAS())
        # the slice view's own style pans / zooms on the same drag: its field of view is put back
        self._view_kept = (slice_node, kept, tuple(slice_node.GetFieldOfView()), tuple(slice_node.GetXYZOrigin()))
        self._drag = (tuple(position), display.GetWindow(), display.GetLevel(), float(np.ptp(image)) or 1.0)

    def _drag_end(self, orientation: str, position) -> None:
        if self._drag is not None:
            self._restore_view()
            display = self.volume_nodes[self.background()].GetDisplayNode()
            if (display.GetWindow(), display.GetLevel()) != self._drag[1:3]:  # the preset no longer applies
                with self.state:
                    self.state.wl_presets = {**dict(self.state.wl_presets or {}), self.background(): None}
        self._drag = None

    def _restore_view(self) -> None:
        node, matrix, field_of_view, origin = self._view_kept
        disabled = node.StartModify()
        node.GetSliceToRAS().DeepCopy(matrix)
        node.SetFieldOfView(*field_of_view)
        node.SetXYZOrigin(*origin)
        node.UpdateMatrices()
        node.EndModify(disabled)

    def _drag_move(self, position) -> None:
        self._restore_view()
        (x0, y0), window, level, span = self._drag
        display = self.volume_nodes[self.background()].GetDisplayNode()
        display.AutoWindowLevelOff()
        scale = span / DRAG_PIXELS
        display.SetWindowLevel(max(1.0, window + (position[0] - x0) * scale), level + (position[1] - y0) * scale)

    def background(self) -> str:
        return self.state.background or "T1c"

    def _ijk_of(self, ras) -> Optional[Tuple[int, int, int]]:
        """Voxel (x, y, z) indices of a RAS point on the case's grid; None outside it."""
        ijk = np.linalg.inv(mrml.ijk_to_ras(self.case.geometry)) @ np.array([*ras[:3], 1.0])
        index = tuple(int(round(v)) for v in ijk[:3])
        size = self.case.geometry.size
        return index if all(0 <= i < n for i, n in zip(index, size)) else None

    def _pointer(self, orientation: str, position) -> None:
        self.hovered = orientation
        if self._drag is not None:
            self._drag_move(position)
        self.pointer[orientation] = (float(position[0]), float(position[1]))
        text = self.pointer_text(orientation)
        info = dict(self.state.view_info or {})
        if info.get(orientation, {}).get("value") != text:
            info[orientation] = {**info.get(orientation, {}), "value": text}
            with self.state:
                self.state.view_info = info

    def pointer_text(self, orientation: str) -> str:
        """The shown sequence's voxel and value under the pointer in a slice view, as it stands now (after a
        slice move, a change of sequence): the voxel's 1-based (i, j, k) on the case's grid, as the slice
        numbers are; "" with no pointer there, outside the grid or without a case."""
        view = self.slice_views().get(orientation)
        position = self.pointer.get(orientation)
        if self.case is None or view is None or position is None:
            return ""
        ras = self.slice_node(view).GetXYToRAS().MultiplyPoint((*position, 0.0, 1.0))
        index = self._ijk_of(ras)
        if index is None:
            return ""
        modality = self.background()
        value = self.case.images[MODALITIES.index(modality)][index[2], index[1], index[0]]
        return f"{modality} ({index[0] + 1}, {index[1] + 1}, {index[2] + 1}): {float(value):g}"

    def grid_axis(self, view) -> Tuple[int, int]:
        """(grid axis (0 i, 1 j, 2 k) closest to a slice view's normal, +1 or -1): -1 where the view's
        slice offset (and its slider) runs against the voxel index, hence the slice numbers."""
        node = self.slice_node(view)
        normal = np.array([node.GetSliceToRAS().GetElement(r, 2) for r in range(3)])
        along = np.linalg.inv(mrml.ijk_to_ras(self.case.geometry))[:3, :3] @ normal
        axis = int(np.argmax(np.abs(along)))
        return axis, 1 if along[axis] > 0 else -1

    def slice_number(self, view) -> Tuple[int, int]:
        """(slice, of slices), 1-based, of a slice view on the case's grid: the voxel index along the
        grid axis closest to the view's normal, at the view's centre."""
        node = self.slice_node(view)
        centre = np.array([node.GetSliceToRAS().GetElement(r, 3) for r in range(4)])
        axis, _ = self.grid_axis(view)
        ijk = np.linalg.inv(mrml.ijk_to_ras(self.case.geometry)) @ centre
        return int(round(ijk[axis])) + 1, int(self.case.geometry.size[axis])

    def update_info(self) -> None:
        """The overlays' texts: name, edge letters, slice number, window / level of each slice view."""
        info = {}
        for orientation, view in self.slice_views().items():
            node = self.slice_node(view)
            if node is None:
                continue
            matrix = np.array([[node.GetSliceToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
            letter, colour = VIEW_NAMES.get(orientation, (orientation[:1], "#888888"))
            entry = {"name": f"{letter} {orientation}", "colour": colour, **edge_letters(matrix),
                     "slice": "", "wl": "", "value": self.pointer_text(orientation)}
            if self.case is not None:
                number, count = self.slice_number(view)
                entry["slice"] = f"slice {number} / {count}"
                entry["reversed"] = self.grid_axis(view)[1] < 0  # its slider is drawn mirrored (ui/views.py)
                node_volume = self.volume_nodes.get(self.background())
                if node_volume is not None and node_volume.GetDisplayNode() is not None:
                    display = node_volume.GetDisplayNode()
                    entry["wl"] = f"W {display.GetWindow():.0f}  L {display.GetLevel():.0f}"
            else:
                entry["value"] = ""
            info[orientation] = entry
        with self.state:
            self.state.view_info = info
