"""The web app: one trame server, one trame-slicer scene and segment editor, one session at a time
(the front door, door.py, starts one such process per browser session); binds the page's state and
buttons to the logic (cases, job, downloads, session)."""
from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from ... import labels
from ...modalities import MODALITIES
from ...preparing import preparation
from ...running import inference, uncertainty
from ...writing import outputs
from . import ui
from .logic import cases, downloads, job
from .prior import PriorFlow
from .ui.prior import PRIOR_UPLOAD_TRIGGER
from .logic.views import PRESETS, Views, four_up_layout
from .logic.security import (MAX_UPLOAD_BYTES, OneSession, ReadableRoots, access_key_middleware,
                             drop_replies_to_closed_pages)
from .logic.session import Session

log = logging.getLogger(__name__)
#: Seconds between two looks at a running job's progress, and after an edit before the volumes are
#: recomputed (a paint stroke modifies the segmentation many times).
POLL_S = 0.25
EDIT_SETTLE_S = 0.4
#: What trame-slicer's chunk loader may send beyond the upload limit in one message (it sends about 10 MB
#: at a time; the page refuses larger uploads before sending, the server after receiving).
UPLOAD_CHUNK_BYTES = 16 * 2 ** 20
#: A session's process (exit_when_closed) exits this long after its page closed, unless the page came
#: back meanwhile (a reload), or when no page connects this long after it started.
CLOSE_GRACE_S = 10.0
FIRST_VISIT_S = 120
#: An idle session (serve --idle-minutes) is warned on its page this long before it is released (at most
#: half its idle time), and its activity is looked at this often.
IDLE_WARNING_S = 120.0
IDLE_CHECK_S = 5.0
#: The preparation plan's place when the case could not be read (and the plan did not say why).
NOT_READ = "No plan: the case could not be read (below)."


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data: Tuple[Path, ...] = ()  # folders whose cases the page lists and may read
    case: Optional[Path] = None  # opened when a session starts (its folder becomes readable)
    access_key: Optional[str] = None
    upload_limit: int = MAX_UPLOAD_BYTES
    exit_when_closed: bool = False  # one session's process, started by the front door
    session_number: int = 0  # the door's number for this session
    door_port: int = 0  # the front door's port: where the page goes when this session ends
    idle_s: float = 0.0  # released after this long without activity on its page (0: never)


@dataclass
class PageState:
    """The page's state (trame state keys) when a session starts."""

    cases: List[dict] = field(default_factory=list)
    case_path: Optional[str] = None
    case_name: str = ""
    case_kind: str = ""
    candidates: List[dict] = field(default_factory=list)
    plan: str = "Open a case."
    case_error: str = ""
    case_warnings: str = ""
    case_loaded: bool = False
    resample: bool = False
    register: bool = False
    busy: bool = False
    running: bool = False
    progress: float = 0.0
    progress_message: str = ""
    result_ready: bool = False
    confirm_resegment: bool = False
    confirm_switch: bool = False  # asking before another case (pending_case, or an upload) replaces a result
    pending_case: Optional[str] = None
    upload_key: int = 0  # changed to clear the upload field (a case opened from the list)
    segment_volumes: List[dict] = field(default_factory=list)
    region_volumes: List[dict] = field(default_factory=list)
    dice_text: str = ""  # the result's Dice against the case's ground truth, when it has one
    confidence_text: str = ""  # the result's confidence figure (running/uncertainty.py)
    unsure_warning: str = ""  # said when the model is unsure of the result (uncertainty.unsure)
    uncertainty_layer: bool = False  # the uncertainty map shown over the slice views
    has_truth: bool = False  # the case has a ground truth
    truth_outline: bool = False  # the truth outlined over the slice views
    view_info: dict = field(default_factory=dict)  # what each slice view's overlay shows (logic/views.py)
    wl_presets: dict = field(default_factory=dict)  # sequence -> window / level preset
    background: str = "T1c"
    downloads: List[str] = field(default_factory=list)
    download_names: dict = field(default_factory=dict)
    idle_warning: str = ""  # shown before an idle session is released
    voxel_mm: float = 1.0  # the case's finest voxel spacing: the brush's diameter in voxels is its mm over this


class WebApp:
    def __init__(self, config: ServeConfig):
        from trame.app import get_server
        from trame_slicer import module as trame_slicer_module
        from trame_slicer.app.logic.segmentation import SegmentEditorLogic
        from trame_slicer.app.ui import SegmentEditorState, SegmentEditorUI
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories
        from trame_server.utils.typed_state import TypedState

        self.config = config
        self.server = get_server("braintumorcnn", client_type="vue3",
                                 ws_max_msg_size=config.upload_limit + UPLOAD_CHUNK_BYTES)
        self.server.enable_module(trame_slicer_module)
        self.state, self.ctrl = self.server.state, self.server.controller
        self.slicer_app = SlicerApp()
        if config.exit_when_closed:  # trame-slicer's SlicerApp sends VTK's warnings to stderr: not here
            import vtk

            vtk.vtkOutputWindow.GetInstance().SetDisplayModeToNever()
        register_rca_factories(self.slicer_app.view_manager, self.server, slice_view_ui_f=ui.slice_view_overlay,
                               three_d_view_ui_f=ui.threed_view_overlay)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout_dict({"Four-Up": four_up_layout()})
        self.layout_manager.set_layout("Four-Up")
        self.editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        self._one_slice_brush()
        roots = ReadableRoots.of(config.data + ((config.case,) if config.case else ()))
        self.session = Session(self.slicer_app, roots, on_folder=self._announce_folder)
        self.views = Views(self.slicer_app, self.state)
        self.models = job.model_choices()
        self.task = None
        self._task_started = 0.0
        self._edit_timer: Optional[asyncio.TimerHandle] = None
        self._upload: List[Tuple[str, bytes]] = []  # the chunks of an upload so far, and their bytes
        self._upload_bytes = 0
        self._last_activity = time.monotonic()
        self._idle_timer: Optional[asyncio.TimerHandle] = None

        self._bind_controller()
        self.prior = PriorFlow(self)  # a prior scan compared with the open case (issue 34)
        self.layout, editor = ui.build_page(self.server, self.layout_manager, SegmentEditorUI,
                                            ui.SessionLife(config.door_port, config.session_number,
                                                           activity_ms=round(1000 * self._idle_check_s())))
        self.editor_logic.set_ui(editor)
        editor_names = TypedState(self.state, SegmentEditorState).name
        self.state.change(editor_names.can_undo)(lambda **_: self._mirror_undo(editor_names))
        self.state.change(editor_names.can_redo)(lambda **_: self._mirror_undo(editor_names))
        self.slicer_app.segmentation_editor.segmentation_modified.connect(self._on_edit)
        self.state.change("background")(self._on_background)
        self.state.change("uncertainty_layer")(self._on_uncertainty_layer)
        self.state.change("truth_outline")(self._on_truth_outline)
        self.state.trame__title = "BrainTumorCNN"
        self.one_session = OneSession(on_start=self.start_session, on_end=self.end_session)
        self.ctrl.on_server_bind.add(self._add_middlewares)
        self.ctrl.on_server_ready.add(lambda **_: drop_replies_to_closed_pages(asyncio.get_event_loop()))
        if config.exit_when_closed:
            self.ctrl.on_server_ready.add(lambda **_: self._watch_door(asyncio.get_event_loop()))
        self.reset_state()

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        argv, sys.argv = sys.argv, sys.argv[:1]  # trame parses sys.argv for its own options; ours are parsed
        try:
            # wslink's idle timeout stops a session's process that no page ever reaches
            self.server.start(port=self.config.port, host=self.config.host, open_browser=False,
                              show_connection_info=False, timeout=FIRST_VISIT_S if self.config.exit_when_closed else 0)
        finally:
            sys.argv = argv
            self.session.close()  # stopped with its page still open (SIGTERM): its files go all the same

    def _add_middlewares(self, web_server) -> None:
        middlewares = [self.one_session.middleware()]
        if self.config.access_key:
            middlewares.insert(0, access_key_middleware(self.config.access_key))
        web_server.app.middlewares.extend(middlewares)

    def reset_state(self) -> None:
        with self.state:
            for key, value in PageState().__dict__.items():
                self.state[key] = value
            self.state.cases = [{"title": name, "value": str(path)}
                                for path, name in cases.named_cases(self.session.data_roots)]
            self.state.models = self.models
            self.state.wl_preset_names = list(PRESETS)
            self.state.upload_limit = self.config.upload_limit
            self.state.model = self.models[0]["value"]
            self.state.can_undo = self.state.can_redo = False
        self.prior.clear()

    def start_session(self) -> None:
        self._upload, self._upload_bytes = [], 0
        self.note_activity()
        if self.config.idle_s:
            self._check_idle()
        if self.config.case is not None:
            asyncio.ensure_future(self.open_case(self.config.case))

    def end_session(self) -> None:
        """The page was closed: cancel its job, free its scene nodes, delete its files."""
        if self.task is not None:
            self.task.cancel()
        self._release_editor()
        self._cancel_edit_timer()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._upload, self._upload_bytes = [], 0  # an upload the closed page had begun is not the next one's
        self.views.clear()
        self.session.close()
        self.reset_state()
        log.info("session closed: its case, result and files are gone")
        if self.config.exit_when_closed:
            asyncio.get_event_loop().call_later(CLOSE_GRACE_S, self._exit_if_closed)

    def _exit_if_closed(self) -> None:
        """Stop this session's process, giving its memory back, unless a page reconnected (a reload)."""
        if not self.one_session.open_sockets:
            self.exit("its page was closed")

    def exit(self, reason: str) -> None:
        """End this session's process, telling the door why (door.CHILD_ENDING: its page then says so)."""
        try:
            print(f"braintumorcnn serve: session ending: {reason}", flush=True)
        except OSError:  # the door is gone, and its pipe with it
            pass
        asyncio.ensure_future(self.server.stop())

    def _watch_door(self, loop: asyncio.AbstractEventLoop) -> None:
        """The door holds this process's stdin open and never writes: end of file means the door is gone
        (stopped, or killed); this session then ends too, deleting its files, rather than live on alone."""
        def wait_for_end_of_file() -> None:
            while os.read(stdin, 4096):  # the raw descriptor: no buffer lock held at the interpreter's exit
                pass
            loop.call_soon_threadsafe(self.exit, "the server stopped")

        stdin = sys.stdin.fileno()
        threading.Thread(target=wait_for_end_of_file, name="door-watch", daemon=True).start()

    def _announce_folder(self, folder: Path) -> None:
        """Tell the door where this session's files are (door.CHILD_FILES): it deletes them if this process dies."""
        if self.config.exit_when_closed:
            print(f"braintumorcnn serve: session files in {folder}", flush=True)

    # ------------------------------------------------------------------ idle sessions
    def _idle_check_s(self) -> float:
        return min(IDLE_CHECK_S, self.config.idle_s / 10) if self.config.idle_s else IDLE_CHECK_S

    def note_activity(self) -> None:
        """The page's reader did something (the page reports it at most once per check)."""
        self._last_activity = time.monotonic()
        if self.state.idle_warning:
            with self.state:
                self.state.idle_warning = ""

    def _check_idle(self) -> None:
        """Warn a page idle for a while (idle_s less the warning) and release its session at idle_s; a
        running segmentation counts as activity."""
        self._idle_timer = None
        if not self.one_session.open_sockets:
            return
        if self.task is not None:
            self._last_activity = time.monotonic()
        left = self.config.idle_s - (time.monotonic() - self._last_activity)
        if left <= 0:
            minutes = self.config.idle_s / 60
            self.exit(f"released after {minutes:g} minute{'s' if minutes != 1 else ''} without activity on its "
                      "page (serve --idle-minutes)")
            return
        warning = "" if left > min(IDLE_WARNING_S, self.config.idle_s / 2) else (
            f"This session has been idle for a while: it will be released in about {math.ceil(left)} s, its case "
            "and result gone from the server. Move the pointer or press a key to keep it.")
        if warning != self.state.idle_warning:
            with self.state:
                self.state.idle_warning = warning
        self._idle_timer = asyncio.get_event_loop().call_later(self._idle_check_s(), self._check_idle)

    # ------------------------------------------------------------------ opening a case
    def _one_slice_brush(self) -> None:
        """Paint and erase on the slice under the pointer only (Slicer's default), not with a sphere that
        paints a tube through the neighbouring slices; the sphere stays a button away.  The brush's size is
        its diameter in mm (the page shows it in voxels too), not a share of the view's height that changes
        with the zoom."""
        from trame_slicer.segmentation import BrushDiameterMode

        for logic in self.editor_logic._effect_logic:  # trame-slicer's brush states default to a sphere
            state = getattr(logic, "_brush_state", None)
            if state is not None:
                state.data.use_sphere_brush = False
                state.data.brush_diameter_mode = BrushDiameterMode.Absolute

    def _bind_controller(self) -> None:
        self.state.change("case_path")(self._on_case_picked)
        self.ctrl.set_window_level = self.set_window_level
        self.server.trigger("slice_key")(self.views_move)
        self.ctrl.assign_sequence = self.assign_sequence
        self.ctrl.change_preparation = lambda: asyncio.ensure_future(self.read_case())
        self.server.trigger(ui.UPLOAD_TRIGGER)(self.upload_chunk)
        self.server.trigger(PRIOR_UPLOAD_TRIGGER)(lambda files: self.upload_chunk(files, prior=True))
        self.ctrl.segment = self.segment
        self.server.trigger("activity")(self.note_activity)
        self.ctrl.cancel = lambda: self.task.cancel() if self.task is not None else None
        self.server.trigger("download")(self.download)

    def _preparation(self) -> preparation.PreparationOptions:
        register = bool(self.state.register)  # as read_case does: all sequences when registering
        return preparation.PreparationOptions(register=register, register_all=register,
                                              resample=bool(self.state.resample))

    def _on_case_picked(self, case_path=None, **_) -> None:
        """A case chosen in the list: opened on the event loop (a change callback returns nothing)."""
        if case_path:
            with self.state:  # the upload field no longer names the files of the case before
                self.state.upload_key = (self.state.upload_key or 0) + 1
            asyncio.ensure_future(self.open_case(Path(case_path)))

    def _on_uncertainty_layer(self, uncertainty_layer=False, **_) -> None:
        if self.session.uncertainty_node is not None:
            self.session.show_uncertainty(bool(uncertainty_layer))

    def _on_truth_outline(self, truth_outline=False, **_) -> None:
        self.session.show_truth(bool(truth_outline))

    def _on_background(self, background=None, **_) -> None:
        self.session.show_background(background)
        self.views.update_info()

    def set_window_level(self, preset: str) -> None:
        self.views.set_preset(self.state.background or "T1c", preset)

    def views_move(self, key: str) -> None:
        self.views.move(key)

    async def open_case(self, path: Path) -> None:
        try:
            found = cases.case_files(path, self.session.roots)
        except ValueError as exc:
            with self.state:
                self.state.case_error = str(exc)
            return
        await self.show_case_files(found)

    async def show_case_files(self, found: cases.CaseFiles) -> None:
        self.session.case_files = found
        with self.state:  # not loaded from the moment it is named: nothing of the case before is segmented
            self.state.case_name, self.state.case_loaded = found.name, False
            self.state.case_kind = found.kind
            self.state.candidates = [{"title": found.shown_name(p), "value": str(p)} for p in found.candidates]
            for modality in MODALITIES:
                chosen = found.assignment.get(modality)
                self.state[f"sequence_{modality}"] = str(chosen) if chosen else None
        await self.read_case()

    def assign_sequence(self, modality: str, path: Optional[str]) -> None:
        found = self.session.case_files
        if found is None:
            return
        try:
            cases.assign(found, modality, Path(path) if path else None)
        except ValueError as exc:
            with self.state:
                self.state.case_error = str(exc)
            return
        asyncio.ensure_future(self.read_case())

    async def read_case(self) -> None:
        """Show the preparation plan, then read the case as the command line does and show it."""
        found = self.session.case_files
        if found is None:
            return
        options = self._preparation()
        if self.task is not None:  # a run on the case being replaced: its result would be of another case
            self.task.cancel()
        self.views.clear()  # no slice number nor pointer readout of the case before while this one is read
        self.prior.clear()  # a prior of the case before
        with self.state:
            self.state.plan = cases.plan(found, options)
            self.state.case_error = self.state.case_warnings = ""
            self.state.case_loaded = self.state.result_ready = False
            self.state.segment_volumes, self.state.region_volumes, self.state.dice_text = [], [], ""
            self.state.confidence_text, self.state.unsure_warning, self.state.uncertainty_layer = "", "", False
            self.state.truth_outline = self.state.has_truth = False
            self.state.busy = True
            self.state.progress_message = f"reading {found.name}"
        try:
            case = await asyncio.get_running_loop().run_in_executor(None, cases.read, found, self.session.roots,
                                                                    options)
        except (ValueError, OSError) as exc:
            if self.session.case_files is found:
                self._release_editor()
                self._cancel_edit_timer()
                self.views.clear()
                self.session.clear_case()
                with self.state:  # no plan for a case that could not be read ("none needed" above its error)
                    self.state.case_error, self.state.busy, self.state.progress_message = str(exc), False, ""
                    if not cases.plan_explains_failure(found, self.state.plan):
                        self.state.plan = NOT_READ
            return
        if self.session.case_files is not found:  # another case was chosen, or the session ended, meanwhile
            return
        self._release_editor()
        self._cancel_edit_timer()
        self.session.show_case(case)
        with self.state:
            self.state.case_loaded, self.state.busy = True, False
            self.state.case_warnings = "\n".join(case.warnings)
            self.state.progress_message = f"{case.name}: {' x '.join(map(str, case.geometry.size))} voxels"
            self.state.background = "T1c"
            self.state.voxel_mm = min(case.geometry.spacing)  # the brush's size in voxels (ui.page)
            self.state.has_truth, self.state.truth_outline = case.truth is not None, False
        self.views.show_case(case, self.session.volume_nodes)

    def upload_chunk(self, files: list, prior: bool = False) -> None:
        """trame-slicer's chunk loader sends the files in chunks, then an empty list.  The last call stores
        the upload and returns: the case is read on the event loop, as a picked case is, not inside the call.
        wslink handles a page's calls one after the other and answers each when it returns, so a call held
        for the reading would keep the page's close unnoticed and be answered on its closed connection.
        `prior`: the files of a prior scan of the open case (web/prior.py), not a case to open."""
        from trame.app.file_upload import ClientFile

        if files:
            received = [(ClientFile(f).name, ClientFile(f).content) for f in files]
            self._upload_bytes += sum(len(content) for _, content in received)
            if self._upload_bytes <= self.config.upload_limit:  # past the limit nothing more is kept
                self._upload += received
            return
        uploaded, size, self._upload, self._upload_bytes = self._upload, self._upload_bytes, [], 0
        try:
            cases.check_upload_size(size, self.config.upload_limit)
            found = self.session.upload(uploaded, self.config.upload_limit)
        except ValueError as exc:
            log.warning("upload refused: %s", exc)
            if prior:
                self.prior.fail(str(exc))
                return
            with self.state:
                self.state.case_error, self.state.busy = str(exc), False
                if self.session.case is None:
                    self.state.plan = NOT_READ
            return
        if prior:
            asyncio.ensure_future(self.prior.open(found))
            return
        with self.state:
            self.state.case_path = None
        asyncio.ensure_future(self.show_case_files(found))

    # ------------------------------------------------------------------ segmenting
    def segment(self) -> None:
        """Start a run.  A result already there (with its edits) stays, shown and downloadable, until the
        new one is ready; the page asks before a second run (confirm_resegment), and a cancelled or
        failed run leaves it as it was.  Editing waits for the run: its edits would be replaced."""
        if self.session.case is None or self.task is not None:
            return
        self.editor_logic.segmentation_editor.deactivate_effect()
        self.task = job.start(self.session.case, self.state.model)
        self._task_started = time.monotonic()
        with self.state:
            self.state.running, self.state.progress, self.state.confirm_resegment = True, 0.0, False
            self.state.case_error = ""
            self.state.progress_message = "starting"
        asyncio.ensure_future(self._follow(self.task))

    async def _follow(self, task) -> None:
        case = self.session.case
        while not task.finished:
            fraction, message = task.progress
            with self.state:
                self.state.progress = round(100 * fraction, 1)
                self.state.progress_message = job.progress_text(fraction, message,
                                                                time.monotonic() - self._task_started)
            await asyncio.sleep(POLL_S)
        if self.task is task:
            self.task = None
        if self.session.case is not case or self.session.case is None:  # another case, or the session ended
            with self.state:
                self.state.running = False
            return
        if task.error is not None:
            with self.state:
                self.state.running = False
                cancelled = isinstance(task.error, inference.Cancelled)
                kept = " (the previous result is kept)" if self.state.result_ready else ""
                self.state.progress_message = f"cancelled{kept}" if cancelled else ""
                self.state.case_error = "" if cancelled else f"segmentation failed: {task.error}"
            return
        self._cancel_edit_timer()
        editor = self.slicer_app.segmentation_editor
        if self.session.segmentation_node is not None:  # a re-run: a step Undo takes back, corrections and all
            editor.deactivate_effect()
            node = self.session.segmentation_node
            editor.undo_stack.push(self.session.replace_result(task.result, self._result_swapped))
            editor.active_segmentation.trigger_modified()
        else:
            self._release_editor()
            node = self.session.show_result(task.result)
            self.editor_logic.on_volume_changed(self.session.volume_nodes["T1c"])
        editor.set_surface_representation_enabled(True)
        self.views.show_tumor(task.result.labels)
        for view in self.slicer_app.view_manager.get_threed_views():
            view.reset_view()
        elapsed = time.monotonic() - self._task_started
        with self.state:  # the volumes of this result appear with it, never those of the one before
            self.state.running = False
            self.state.progress_message = f"segmented with {task.result.model_name} in {elapsed:.0f} s"
            names = downloads.KINDS if self.session.case.series.get("T1c") is not None else \
                [k for k in downloads.KINDS if k != "dicom_seg"]
            self.state.downloads = list(names)
            self.state.download_names = {k: self._download_path(k).name for k in names}
            self.update_volumes()
            self.state.confidence_text, self.state.unsure_warning = confidence_texts(task.result)
            self.state.uncertainty_layer = False
            self.state.result_ready = True
        self.prior.result_replaced()
        log.info("segmentation node %s in the scene", node.GetID())

    def _result_swapped(self, how: str) -> None:
        """Undo or Redo across a re-run (session.ResultReplaced): the page shows the result now in place,
        its confidence and (after the edit settles) its volumes."""
        self.slicer_app.segmentation_editor.active_segmentation.trigger_modified()
        self.prior.result_replaced()
        with self.state:
            self.state.confidence_text, self.state.unsure_warning = confidence_texts(self.session.result)
            self.state.uncertainty_layer = False
            self.state.progress_message = (
                f"undone: the result before the re-run ({self.session.result.model_name}), with its corrections"
                if how == "undo" else f"redone: the re-run's result ({self.session.result.model_name})")

    def _release_editor(self) -> None:
        """Stop the segment editor's effect and forget its undo steps before its segmentation goes."""
        editor = self.slicer_app.segmentation_editor
        editor.deactivate_effect()
        if editor.undo_stack is not None:
            editor.undo_stack.clear()

    def update_volumes(self) -> None:
        """The volume table (and the Dice against the truth) of the segmentation as it stands: a tumor
        segment under its tissue's volume (a renamed one shows its tissue beside its name), a segment the
        reader added with its own volume, outside the tumor's regions."""
        self._edit_timer = None
        if self.session.segmentation_node is None or self.session.case is None:
            return
        try:
            label_map = self.session.labels()
            volumes = self.session.volumes(label_map)
            rows = []
            for segment in self.session.segments():
                if segment.tissue is None:
                    name, ml = f"{segment.name} (not a tumor tissue)", self.session.segment_ml(segment.segment_id)
                else:
                    tissue = segment.tissue.name
                    name = segment.name if segment.name == tissue else f"{segment.name} ({tissue})"
                    ml = volumes[tissue]
                rows.append({"name": name, "color": segment.colour, "ml": f"{ml:.3f}"})
            dice = downloads.quick_dice(self.session.case, label_map)
        except (ValueError, RuntimeError) as exc:  # said on the page, not only in a timer's log
            log.warning("volumes not computed: %s", exc)
            with self.state:
                self.state.case_error = f"volumes not computed: {exc}"
            return
        with self.state:  # the regions as BraTS readers name them (labels.REGION_NAMES)
            self.state.segment_volumes = rows
            self.state.region_volumes = [{"name": name, "ml": f"{volumes[f'{region} tumor']:.3f}"}
                                         for region, name in labels.REGION_NAMES.items()]
            self.state.dice_text = "" if dice is None else f"Dice against {self._truth_name()}: " + \
                ", ".join(f"{labels.REGION_NAMES[region]} {value:.2f}" for region, value in dice.items())

    def _truth_name(self) -> str:
        found = self.session.case_files
        return found.shown_name(found.truth) if found is not None and found.truth is not None else "the ground truth"

    def _on_edit(self, *_args) -> None:
        if not self.state.result_ready or self.session.segmentation_node is None:
            return
        self._cancel_edit_timer()
        self._edit_timer = asyncio.get_event_loop().call_later(EDIT_SETTLE_S, self.update_volumes)

    def _cancel_edit_timer(self) -> None:
        if self._edit_timer is not None:
            self._edit_timer.cancel()
            self._edit_timer = None

    def _mirror_undo(self, names) -> None:
        with self.state:
            self.state.can_undo, self.state.can_redo = self.state[names.can_undo], self.state[names.can_redo]

    # ------------------------------------------------------------------ downloads
    def _download_path(self, kind: str) -> Path:
        folder = self.session.private()
        if kind == "dicom_seg":
            return outputs.dicom_seg_path(folder, self.session.case.name)
        return outputs.output_paths(folder, self.session.case.name)[kind]

    async def download(self, kind: str):
        """The file of `kind` written from the segmentation as edited, as an attachment for the page."""
        if self.session.result is None:
            raise ValueError("nothing to download: segment a case first")
        result = self.session.result
        try:
            if kind == "segmentation":  # the node itself, every segment as named (the scene's thread)
                path = downloads.write_segmentation(self.session.segmentation_node, self.session.private(),
                                                    self.session.case, getattr(result, "provenance", None))
            else:
                labels = self.session.labels()
                path = await asyncio.get_running_loop().run_in_executor(
                    None, downloads.write, kind, self.session.private(), self.session.case, labels,
                    result.num_classes, result.model_name)
        except (ValueError, RuntimeError, OSError) as exc:  # a DICOM SEG highdicom refuses, a full disk: say why
            with self.state:
                self.state.case_error = f"{downloads.KINDS.get(kind, (kind,))[0]} not written: {exc}"
            raise
        return self.server.protocol.addAttachment(path.read_bytes())


def confidence_texts(result) -> Tuple[str, str]:
    """The page's words for a result's confidence figure, and its warning when the model is unsure."""
    figure = ", ".join(f"{labels.REGION_NAMES[region]} {value:.2f}" for region, value in result.confidence.items())
    return (f"Confidence (the Dice the model expects of its labels): {figure}" if figure else "",
            f"Warning: {uncertainty.UNSURE}." if result.unsure else "")


def quiet_child() -> None:
    """A session's process prints its own lines and errors, not VTK's warnings (no X display, deprecations):
    VTK's logger to errors only (its output window is silenced once the SlicerApp has set its own)."""
    import vtk

    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_ERROR)
    handler = logging.StreamHandler(sys.stdout)  # the door adds the time to each line
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger(__name__.split(".")[0]).setLevel(logging.INFO)
