"""The page's prior scan (issue 34): a second case, from the list or an upload, opened as the prior of the
open case, read and segmented as the open case is (cases.read, job.start, with the model chosen), then
compared with the open case's result as it stands (logic/prior.py); binds the page's prior_* state, its
buttons and its downloads.  The difference (new / resolved / unchanged tumor) is a segmentation node
over the slice views (writing/mrml_comparison.py), shown instead of the tumor's segments when its layer
is on.  Scene work on the event loop's thread, reading, segmenting and comparing on worker threads."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ...reading import io
from ...writing import mrml, mrml_comparison
from .logic import cases, job, prior

log = logging.getLogger(__name__)
POLL_S = 0.25
#: The prior's state keys and their values when no prior is open.
STATE = {"prior_path": None, "prior_name": "", "prior_status": "", "prior_error": "", "prior_busy": False,
         "prior_progress": 0.0, "prior_ready": False, "prior_rows": [], "prior_caveats": [], "prior_layer": False,
         "prior_download_names": {}, "prior_upload_key": 0}


class PriorFlow:
    """The prior of the open case: its files, case, segmentation (labels), the comparison made and its node."""

    def __init__(self, app):
        self.app = app
        self.files: Optional[cases.CaseFiles] = None
        self.case: Optional[io.Case] = None
        self.labels: Optional[np.ndarray] = None
        self.task = None  # the prior's segmentation while it runs
        self.made: Optional[prior.PriorComparison] = None
        self.node = None  # the difference's segmentation node
        app.state.change("prior_path")(self._on_picked)
        app.state.change("prior_layer")(self._on_layer)
        app.ctrl.compare_again = lambda: asyncio.ensure_future(self.compare())
        app.ctrl.cancel_prior = lambda: self.task.cancel() if self.task is not None else None
        app.server.trigger("download_comparison")(self.download)

    @property
    def state(self):
        return self.app.state

    def clear(self) -> None:
        """No prior: its task cancelled, its node gone, its state as at the start (a new case, a new session)."""
        if self.task is not None:
            self.task.cancel()
        self.files = self.case = self.labels = self.task = None
        self._drop_comparison()
        with self.state:
            for key, value in STATE.items():
                if key != "prior_upload_key":
                    self.state[key] = value
            self.state.prior_upload_key = (self.state.prior_upload_key or 0) + 1

    def result_replaced(self) -> None:
        """The open case has a new result: the comparison with the one before is dropped (Compare again)."""
        if self.made is None:
            return
        self._drop_comparison()
        with self.state:
            self.state.prior_ready, self.state.prior_rows, self.state.prior_caveats = False, [], []
            self.state.prior_status = "The result changed: Compare again."

    def _drop_comparison(self) -> None:
        self.made = None
        if self.node is not None:
            mrml.remove_node(self.app.session.scene, self.node)
            self.node = None
        self._show_layer(False)

    def fail(self, message: str) -> None:
        with self.state:
            self.state.prior_error, self.state.prior_busy, self.state.busy = message, False, False
            self.state.prior_status = ""

    # ------------------------------------------------------------------ opening and segmenting the prior
    def _on_picked(self, prior_path=None, **_) -> None:
        if not prior_path:
            return
        try:
            found = cases.case_files(Path(prior_path), self.app.session.roots)
        except ValueError as exc:
            self.fail(str(exc))
            return
        asyncio.ensure_future(self.open(found))

    async def open(self, found: cases.CaseFiles) -> None:
        """Read and segment `found` as the prior, then compare."""
        app = self.app
        if app.session.result is None or app.task is not None:
            self.fail("Segment the open case first: the prior is compared with its result.")
            return
        if self.task is not None:
            self.task.cancel()
        self._drop_comparison()
        self.files, self.case, self.labels = found, None, None
        with self.state:
            self.state.prior_name, self.state.prior_error, self.state.prior_ready = found.name, "", False
            self.state.prior_busy, self.state.busy, self.state.prior_progress = True, True, 0.0
            self.state.prior_status = f"reading {found.name}"
        try:
            case = await asyncio.get_running_loop().run_in_executor(None, cases.read, found, app.session.roots,
                                                                    app._preparation())
        except (ValueError, OSError) as exc:
            if self.files is found:
                self.fail(str(exc))
            return
        if self.files is not found:  # another prior, or another case, meanwhile
            return
        self.case = case
        task = self.task = job.start(case, app.state.model)
        started = time.monotonic()
        while not task.finished:
            fraction, message = task.progress
            with self.state:
                self.state.prior_progress = round(100 * fraction, 1)
                self.state.prior_status = f"{found.name}: " + job.progress_text(fraction, message,
                                                                                 time.monotonic() - started)
            await asyncio.sleep(POLL_S)
        if self.task is not task:
            return
        self.task = None
        if task.error is not None:
            self.fail("cancelled" if task.cancelled else f"segmentation of the prior failed: {task.error}")
            return
        self.labels = task.result.labels
        await self.compare()

    # ------------------------------------------------------------------ comparing
    async def compare(self) -> None:
        """Compare the prior with the open case's result as it stands (its edits included)."""
        app, prior_case, labels = self.app, self.case, self.labels
        current = app.session.case
        if prior_case is None or labels is None or current is None or app.session.result is None:
            return
        current_labels = app.session.labels()
        with self.state:
            self.state.prior_busy, self.state.busy, self.state.prior_error = True, True, ""
            self.state.prior_status = "registering the prior's T1c onto this case's T1c and comparing"
        try:
            made = await asyncio.get_running_loop().run_in_executor(
                None, prior.compare, prior_case, labels, current, current_labels,
                app.session.private() / "comparison")
        except (ValueError, RuntimeError, OSError) as exc:
            if self.case is prior_case and app.session.case is current:
                self.fail(f"comparison failed: {exc}")
            return
        if self.case is not prior_case or app.session.case is not current:
            return
        self._drop_comparison()
        self.made = made
        self.node = mrml_comparison.add_difference_node(app.session.scene, made.comparison.difference,
                                                        current.geometry, f"{current.name} change since prior")
        with self.state:
            self.state.prior_rows, self.state.prior_caveats = made.rows, made.caveats
            self.state.prior_download_names = {k: made.paths[k].name for k in prior.KINDS}
            self.state.prior_status = f"{prior_case.name} (prior) compared with {current.name} as it stands"
            self.state.prior_busy, self.state.busy, self.state.prior_ready = False, False, True
            self.state.prior_layer = True
        self._show_layer(True)
        log.info("%s compared with its prior %s", current.name, prior_case.name)

    # ------------------------------------------------------------------ the difference layer, downloads
    def _on_layer(self, prior_layer=False, **_) -> None:
        self._show_layer(bool(prior_layer) and self.node is not None)

    def _show_layer(self, shown: bool) -> None:
        """The difference's segments over the slice views in place of the tumor's, or the tumor's alone."""
        tumor = self.app.session.segmentation_node
        if tumor is not None and tumor.GetDisplayNode() is not None:
            tumor.GetDisplayNode().SetVisibility(not shown)
        if self.node is not None and self.node.GetDisplayNode() is not None:
            self.node.GetDisplayNode().SetVisibility(shown)
        for view in self.app.slicer_app.view_manager.get_slice_views():
            view.schedule_render()

    async def download(self, kind: str):
        """A file of the comparison (prior.KINDS) as an attachment for the page."""
        if self.made is None or kind not in prior.KINDS:
            raise ValueError(f"no comparison file {kind!r}: open a prior first")
        return self.app.server.protocol.addAttachment(self.made.paths[kind].read_bytes())
