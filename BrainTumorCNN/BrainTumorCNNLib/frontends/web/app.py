"""The web app: one trame server, one trame-slicer scene and segment editor, one session at a time
(the front door, door.py, starts one such process per browser session); binds the page's state and
buttons to the logic (cases, job, downloads, session)."""
from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from ...modalities import MODALITIES
from ...preparing import preparation
from ...running import inference
from ...writing import outputs
from . import ui
from .logic import cases, downloads, job
from .logic.security import MAX_UPLOAD_BYTES, OneSession, ReadableRoots, access_key_middleware
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


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data: Tuple[Path, ...] = ()  # folders whose cases the page lists and may read
    case: Optional[Path] = None  # opened when a session starts (its folder becomes readable)
    access_key: Optional[str] = None
    upload_limit: int = MAX_UPLOAD_BYTES
    exit_when_closed: bool = False  # one session's process, started by the front door


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
    segment_volumes: List[dict] = field(default_factory=list)
    region_volumes: List[dict] = field(default_factory=list)
    background: str = "T1c"
    downloads: List[str] = field(default_factory=list)
    download_names: dict = field(default_factory=dict)


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
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout_dict({"Quad View": LayoutManager.default_grid_configuration()["Quad View"]})
        self.layout_manager.set_layout("Quad View")
        self.editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        roots = ReadableRoots.of(config.data + ((config.case,) if config.case else ()))
        self.session = Session(self.slicer_app, roots)
        self.models = job.model_choices()
        self.task = None
        self._edit_timer: Optional[asyncio.TimerHandle] = None
        self._upload: List[Tuple[str, bytes]] = []  # the chunks of an upload so far, and their bytes
        self._upload_bytes = 0

        self._bind_controller()
        self.layout, editor = ui.build_page(self.server, self.layout_manager, SegmentEditorUI)
        self.editor_logic.set_ui(editor)
        editor_names = TypedState(self.state, SegmentEditorState).name
        self.state.change(editor_names.can_undo)(lambda **_: self._mirror_undo(editor_names))
        self.state.change(editor_names.can_redo)(lambda **_: self._mirror_undo(editor_names))
        self.slicer_app.segmentation_editor.segmentation_modified.connect(self._on_edit)
        self.state.change("background")(lambda background, **_: self.session.show_background(background))
        self.state.trame__title = "BrainTumorCNN"
        self.one_session = OneSession(on_start=self.start_session, on_end=self.end_session)
        self.ctrl.on_server_bind.add(self._add_middlewares)
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
            self.state.cases = [{"title": str(p), "value": str(p)} for p in cases.list_cases(self.session.data_roots)]
            self.state.models = self.models
            self.state.upload_limit = self.config.upload_limit
            self.state.model = self.models[0]["value"]
            self.state.can_undo = self.state.can_redo = False

    def start_session(self) -> None:
        if self.config.case is not None:
            asyncio.ensure_future(self.open_case(self.config.case))

    def end_session(self) -> None:
        """The page was closed: cancel its job, free its scene nodes, delete its files."""
        if self.task is not None:
            self.task.cancel()
        self._release_editor()
        self.session.close()
        self.reset_state()
        log.info("session closed: its case, result and files are gone")
        if self.config.exit_when_closed:
            asyncio.get_event_loop().call_later(CLOSE_GRACE_S, self._exit_if_closed)

    def _exit_if_closed(self) -> None:
        """Stop this session's process, giving its memory back, unless a page reconnected (a reload)."""
        if not self.one_session.open_sockets:
            log.info("session's page gone: exiting")
            asyncio.ensure_future(self.server.stop())

    # ------------------------------------------------------------------ opening a case
    def _bind_controller(self) -> None:
        self.state.change("case_path")(
            lambda case_path, **_: asyncio.ensure_future(self.open_case(Path(case_path))) if case_path else None)
        self.ctrl.assign_sequence = self.assign_sequence
        self.ctrl.change_preparation = lambda: asyncio.ensure_future(self.read_case())
        self.ctrl.upload_chunk = self.upload_chunk
        self.ctrl.segment = self.segment
        self.ctrl.cancel = lambda: self.task.cancel() if self.task is not None else None
        self.server.trigger("download")(self.download)

    def _preparation(self) -> preparation.PreparationOptions:
        register = bool(self.state.register)  # as read_case does: all sequences when registering
        return preparation.PreparationOptions(register=register, register_all=register,
                                              resample=bool(self.state.resample))

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
        with self.state:
            self.state.case_name = found.name
            self.state.case_kind = found.kind
            self.state.candidates = [{"title": p.name, "value": str(p)} for p in found.candidates]
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
        with self.state:
            self.state.plan = cases.plan(found, options)
            self.state.case_error = self.state.case_warnings = ""
            self.state.case_loaded = self.state.result_ready = False
            self.state.busy = True
            self.state.progress_message = f"reading {found.name}"
        try:
            case = await asyncio.get_running_loop().run_in_executor(None, cases.read, found, self.session.roots,
                                                                    options)
        except (ValueError, OSError) as exc:
            if self.session.case_files is found:
                self.session.clear_case()
                with self.state:
                    self.state.case_error, self.state.busy, self.state.progress_message = str(exc), False, ""
            return
        if self.session.case_files is not found:  # another case was chosen, or the session ended, meanwhile
            return
        self.session.show_case(case)
        with self.state:
            self.state.case_loaded, self.state.busy = True, False
            self.state.case_warnings = "\n".join(case.warnings)
            self.state.progress_message = f"{case.name}: {' x '.join(map(str, case.geometry.size))} voxels"
            self.state.background = "T1c"

    async def upload_chunk(self, files: list) -> None:
        """trame-slicer's chunk loader sends the files in chunks, then an empty list."""
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
            with self.state:
                self.state.case_error, self.state.busy = str(exc), False
            return
        with self.state:
            self.state.case_path = None
        await self.show_case_files(found)

    # ------------------------------------------------------------------ segmenting
    def segment(self) -> None:
        if self.session.case is None or self.task is not None:
            return
        self._release_editor()
        self.session.remove_result()
        self.task = job.start(self.session.case, self.state.model)
        with self.state:
            self.state.running, self.state.result_ready, self.state.progress = True, False, 0.0
            self.state.case_error = ""
        asyncio.ensure_future(self._follow(self.task))

    async def _follow(self, task) -> None:
        while not task.finished:
            fraction, message = task.progress
            with self.state:
                self.state.progress, self.state.progress_message = round(100 * fraction, 1), message
            await asyncio.sleep(POLL_S)
        self.task = None
        with self.state:
            self.state.running = False
            if task.error is not None:
                cancelled = isinstance(task.error, inference.Cancelled)
                self.state.progress_message = "cancelled" if cancelled else ""
                self.state.case_error = "" if cancelled else f"segmentation failed: {task.error}"
                return
        if self.session.case is None:  # the session ended meanwhile
            return
        node = self.session.show_result(task.result)
        self.editor_logic.on_volume_changed(self.session.volume_nodes["T1c"])
        self.slicer_app.segmentation_editor.set_surface_representation_enabled(True)
        for view in self.slicer_app.view_manager.get_threed_views():
            view.reset_view()
        with self.state:
            self.state.progress_message = f"segmented with {task.result.model_name}"
            self.state.result_ready = True
            names = downloads.KINDS if self.session.case.series.get("T1c") is not None else \
                [k for k in downloads.KINDS if k != "dicom_seg"]
            self.state.downloads = list(names)
            self.state.download_names = {k: self._download_path(k).name for k in names}
        self.update_volumes()
        log.info("segmentation node %s in the scene", node.GetID())

    def _release_editor(self) -> None:
        """Stop the segment editor's effect and forget its undo steps before its segmentation goes."""
        editor = self.slicer_app.segmentation_editor
        editor.deactivate_effect()
        if editor.undo_stack is not None:
            editor.undo_stack.clear()

    def update_volumes(self) -> None:
        volumes = self.session.volumes()
        colours = dict(self.session.segments())
        tissues = [name for name in colours if name in volumes]
        with self.state:
            self.state.segment_volumes = [{"name": n, "color": colours[n], "ml": f"{volumes[n]:.3f}"} for n in tissues]
            self.state.region_volumes = [{"name": n, "ml": f"{volumes[n]:.3f}"} for n in volumes if n not in colours]

    def _on_edit(self, *_args) -> None:
        if not self.state.result_ready:
            return
        if self._edit_timer is not None:
            self._edit_timer.cancel()
        self._edit_timer = asyncio.get_event_loop().call_later(EDIT_SETTLE_S, self.update_volumes)

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
        labels = self.session.labels()
        result = self.session.result
        try:
            path = await asyncio.get_running_loop().run_in_executor(
                None, downloads.write, kind, self.session.private(), self.session.case, labels, result.num_classes,
                result.model_name)
        except (ValueError, OSError) as exc:  # a DICOM SEG highdicom refuses, a full disk: say why on the page
            with self.state:
                self.state.case_error = f"{downloads.KINDS.get(kind, (kind,))[0]} not written: {exc}"
            raise
        return self.server.protocol.addAttachment(path.read_bytes())
