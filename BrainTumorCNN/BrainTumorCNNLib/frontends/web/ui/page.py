"""The page: a side panel (case, sequences, preparation plan, model, Segment, display, volumes,
correction, downloads) beside Slicer's three slice views and 3-D view in Slicer's four-up layout.  Layout only: it reads state names and
calls the controller's functions that app.py binds to the logic."""
from __future__ import annotations

from dataclasses import dataclass

from trame.ui.vuetify3 import VAppLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3

from ....modalities import MODALITIES
from ..logic.downloads import KINDS
from .prior import prior_section

#: The trigger trame-slicer's chunk loader sends an upload's chunks to (app.py binds it).
UPLOAD_TRIGGER = "upload_chunk"


@dataclass(frozen=True)
class SessionLife:
    """What the page needs to know of its session's life: the front door's port (where the page goes when
    the session ends), the session's number there, and how often it reports the reader's activity."""

    door_port: int = 0
    session_number: int = 0
    activity_ms: int = 5000


def build_page(server, layout_manager, editor_ui_type, life: SessionLife = SessionLife()):
    """The page's layout; returns (layout, the trame-slicer segment editor panel in it)."""
    ctrl = server.controller
    with VAppLayout(server, full_height=True) as layout:
        layout.root.theme = "dark"
        with v3.VAppBar(density="compact"):
            v3.VToolbarTitle("BrainTumorCNN")
            v3.VSpacer()
            html.Span("{{ case_name }}", classes="mx-4 text-subtitle-1", id="case-name")
        with v3.VNavigationDrawer(permanent=True, width=430, location="left"):
            with html.Div(classes="pa-3", style="overflow-y: auto;"):
                v3.VAlert(text=("idle_warning",), v_if=("idle_warning",), type="warning", density="compact",
                          id="idle-warning", classes="mb-2")
                _case_section(server)
                v3.VDivider(classes="my-3")
                _segment_section(ctrl)
                _display_section(ctrl)
                v3.VDivider(classes="my-3")
                _result_section(ctrl)
                prior_section(ctrl, _send_upload)
                with html.Div(v_show=("result_ready && !running",), id="correction"):
                    html.Div("Correction", classes="text-subtitle-1 mt-3")
                    html.Div("Paint, erase, islands, smoothing, threshold on the active segment; the volumes "
                             "follow each edit.", classes="text-caption")
                    with html.Div(style="height: 640px; display: flex; flex-direction: column;"):
                        editor = editor_ui_type()
                    _brush_size(server, editor)
                    with html.Div(classes="d-flex ga-2 mt-2"):
                        v3.VBtn("Undo", id="undo", click=editor.undo_clicked, prepend_icon="mdi-undo",
                                disabled=("!can_undo",), size="small", variant="tonal")
                        v3.VBtn("Redo", id="redo", click=editor.redo_clicked, prepend_icon="mdi-redo",
                                disabled=("!can_redo",), size="small", variant="tonal")
        _slice_keys(server)
        _long_names()
        _session_life(server, life)
        with v3.VMain():
            with html.Div(classes="d-flex fill-height", style="height: calc(100vh - 48px);"):
                layout_manager.initialize_layout_grid(layout)
    return layout, editor


def _brush_size(server, editor) -> None:
    """Beside the paint and erase brushes' size slider: its diameter in mm (app.py sets the brush to mm)
    and in the case's voxels (state voxel_mm)."""
    from trame_server.utils.typed_state import TypedState
    from trame_slicer.app.ui import PaintEffectState
    from trame_slicer.segmentation import SegmentationEffectErase, SegmentationEffectPaint

    mm = TypedState(server.state, PaintEffectState).name.brush_diameter_slider.value
    for effect in (SegmentationEffectPaint, SegmentationEffectErase):
        with editor.get_effect_ui(effect):
            html.Div(f"{{{{ +Number({mm}).toFixed(1) }}}} mm across, {{{{ (Number({mm}) / voxel_mm).toFixed(1) }}}} "
                     "voxels of {{ +Number(voxel_mm).toFixed(2) }} mm", classes="brush-size text-caption")


def _send_upload(files: str, trigger: str = UPLOAD_TRIGGER, error: str = "case_error") -> str:
    """The page's code that sends the files `files` names to `trigger` (refused beyond the upload limit,
    said in the state key `error`)."""
    return (f"const size = Array.from({files}).reduce((total, file) => total + file.size, 0);"
            "if (size > upload_limit) {"
            "  " + error + " = `upload of ${(size / 1048576).toFixed(1)} MB refused: the limit is "
            "${(upload_limit / 1048576).toFixed(0)} MB a case`;"
            "} else {"
            "  busy = true;"
            f"  window.load_files_by_chunks({files}, {{ trigger_name: '{trigger}' }});"
            "}")


def _case_section(server) -> None:
    html.Div("Case", classes="text-subtitle-1")
    # a result there (perhaps edited): ask before another case replaces it (confirm_switch), as Segment does
    v3.VSelect(label="Open a case", items=("cases", []), model_value=("case_path", None),
               update_modelValue="result_ready && $event !== case_path ? (pending_case = $event, "
                                 "confirm_switch = true) : (case_path = $event)",
               density="compact", hide_details=True, no_data_text="no cases on this server (serve --data)",
               id="case-list")
    v3.VFileInput(label="or upload T1, T1c, T2, FLAIR (NIfTI / MetaImage) or a zip of DICOM series",
                  multiple=True, density="compact", hide_details=True, classes="mt-2", id="upload",
                  prepend_icon="mdi-upload", disabled=("busy",), key=("upload_key", 0),
                  change=("const files = $event.target.files;"
                          "if (files && files.length && result_ready) {"
                          "  window.braintumorcnnUpload = files; pending_case = null; confirm_switch = true;"
                          "} else if (files && files.length) {" + _send_upload("files") + "}"))
    _confirm_switch()
    with html.Div(v_if=("case_kind === 'files'",), classes="mt-2"):
        for modality in MODALITIES:
            v3.VSelect(label=modality, items=("candidates", []), v_model=(f"sequence_{modality}", None),
                       density="compact", hide_details=True, classes="mb-1", id=f"sequence-{modality}",
                       update_modelValue=(server.controller.assign_sequence, f"['{modality}', $event]"))
    with html.Div(classes="d-flex"):
        v3.VCheckbox(label="resample", v_model=("resample", False), density="compact", hide_details=True,
                     update_modelValue=(server.controller.change_preparation, "[]"))
        v3.VCheckbox(label="register", v_model=("register", False), density="compact", hide_details=True,
                     update_modelValue=(server.controller.change_preparation, "[]"))
    html.Div("Preparation plan", classes="text-caption mt-1")
    html.Pre("{{ plan }}", id="plan", classes="text-caption", style="white-space: pre-wrap;")
    v3.VAlert(text=("case_error",), v_if=("case_error",), type="error", density="compact", id="case-error")
    v3.VAlert(text=("case_warnings",), v_if=("case_warnings",), type="warning", density="compact")


def _confirm_switch() -> None:
    """The question before a case picked in the list (pending_case) or an upload (the page's
    window.braintumorcnnUpload) replaces a result: kept, the list and the upload field show the open case."""
    keep = "confirm_switch = false; pending_case = null; window.braintumorcnnUpload = null; upload_key += 1"
    go = ("confirm_switch = false;"
          "if (pending_case) { case_path = pending_case; pending_case = null; }"
          "else if (window.braintumorcnnUpload) {"
          "  const files = window.braintumorcnnUpload; window.braintumorcnnUpload = null;"
          + _send_upload("files") + "}")
    with v3.VDialog(v_model=("confirm_switch", False), max_width=460, persistent=True):
        with v3.VCard(id="confirm-switch"):
            v3.VCardTitle("Open another case?")
            v3.VCardText("The result of {{ case_name }}, with your corrections, leaves this page when another case "
                         "opens: download it first to keep it.")
            with v3.VCardActions():
                v3.VSpacer()
                v3.VBtn("Keep {{ case_name }}", id="switch-no", click=keep, variant="text")
                v3.VBtn("Open the other case", id="switch-yes", click=go, color="primary", variant="tonal")


def _segment_section(ctrl) -> None:
    v3.VSelect(label="Model", items=("models", []), v_model=("model", None), density="compact",
               hide_details=True, id="model")
    segment = f"trigger('{ctrl.trigger_name(ctrl.segment)}')"
    with html.Div(classes="d-flex ga-2 mt-2"):
        # a result there (perhaps edited): ask before replacing it
        v3.VBtn("Segment", id="segment", click=f"result_ready ? (confirm_resegment = true) : {segment}",
                color="primary", disabled=("!case_loaded || running || busy",))
        v3.VBtn("Cancel", id="cancel", click=ctrl.cancel, v_show=("running",), variant="tonal")
    v3.VProgressLinear(model_value=("progress", 0), v_show=("running",), classes="mt-2", height=6)
    html.Div("{{ progress_message }}", classes="text-caption", id="progress-message")
    with v3.VDialog(v_model=("confirm_resegment", False), max_width=460, persistent=True):
        with v3.VCard(id="confirm-resegment"):
            v3.VCardTitle("Segment {{ case_name }} again?")
            v3.VCardText("The current result, with your corrections, stays until the new one is ready; "
                         "it is then replaced, and Undo brings it back. Cancel during the run keeps it.")
            with v3.VCardActions():
                v3.VSpacer()
                v3.VBtn("Keep this result", id="resegment-no", click="confirm_resegment = false", variant="text")
                # closed here too: the server's closing may cross the page's opening on the way
                v3.VBtn("Segment again", id="resegment-yes", click=f"confirm_resegment = false; {segment}",
                        color="primary", variant="tonal")


def _display_section(ctrl) -> None:
    """Which sequence the slice views show, and its window / level (presets; drag in a view to adjust)."""
    with html.Div(v_show=("case_loaded",), classes="mt-2", id="display"):
        with html.Div(classes="d-flex align-center ga-2 flex-wrap"):
            with v3.VBtnToggle(v_model=("background", "T1c"), density="compact", mandatory=True, id="background"):
                v3.VBtn("T1c", value="T1c", size="small")
                v3.VBtn("FLAIR", value="FLAIR", size="small")
            html.Span("window", classes="text-caption ml-2")
            with v3.VBtnToggle(model_value=("wl_presets[background]",), density="compact", id="window-level"):
                v3.VBtn("{{ preset }}", v_for="preset in wl_preset_names", key="preset", value=("preset",),
                        size="small", click=(ctrl.set_window_level, "[preset]"))
        v3.VSwitch(label="uncertainty map (bright: the model is unsure)", v_model=("uncertainty_layer", False),
                   v_show=("result_ready",), density="compact", hide_details=True, color="warning",
                   id="uncertainty-layer")
        v3.VSwitch(label="truth outline (cyan: the case's ground truth)", v_model=("truth_outline", False),
                   v_show=("has_truth",), density="compact", hide_details=True, color="cyan", id="truth-outline")
        html.Div("Drag up / down in a slice view for the level, left / right for the window; arrow keys move "
                 "one slice, Page Up / Down ten, in the view under the pointer.", classes="text-caption")


def _slice_keys(server) -> None:
    """Arrow and Page keys anywhere on the page (outside its text fields and lists) move the slice view
    under the pointer; once a case opens, the keys are the views' (the case list gives its focus up)."""
    client.ClientStateChange(value="case_loaded",
                             change="$event && window.document.activeElement?.blur?.()")
    client.ClientTriggers(mounted=(
        "window.addEventListener('keydown', (e) => {"
        "  if (!['ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight', 'PageUp', 'PageDown'].includes(e.key)) return;"
        "  const t = e.target; if (t && t.closest && t.closest('input, textarea, select, [role=listbox], "
        "[role=combobox]')) return;"
        "  e.preventDefault(); trigger('slice_key', [e.key]);"
        "})"))


def _long_names() -> None:
    """Long names are not cut off: a chosen model, case or sequence and the lists to choose from wrap onto
    more lines; a name in a text field (the segment editor's segment names) is shown whole in its tooltip
    when it does not fit."""
    # the chosen name only: wrapping the open list's items made a click on one of them select nothing
    # (test_web_uncertainty's model choice fell back to the default)
    client.Style(".v-select .v-select__selection-text { white-space: normal; overflow-wrap: anywhere; }")
    client.ClientTriggers(mounted=(
        "window.addEventListener('mouseover', (e) => {"
        "  const around = e.target?.closest?.('.v-list-item, .v-field');"  # a disabled field takes no pointer
        "  const input = around?.querySelector('input:not([type=file])');"
        "  if (input) around.title = input.scrollWidth > input.clientWidth ? input.value : '';"
        "})"))


def _result_section(ctrl) -> None:
    with html.Div(v_show=("result_ready",), id="result"):
        html.Div("Segments (mL)", classes="text-subtitle-1")
        with v3.VTable(density="compact", id="volumes"):
            with html.Tbody():
                with html.Tr(v_for="row in segment_volumes", key="row.name"):
                    with html.Td():
                        html.Span(style=("`display:inline-block;width:12px;height:12px;background:${row.color}`",))
                    html.Td("{{ row.name }}", classes="segment-name")
                    html.Td("{{ row.ml }}", classes="segment-ml text-right")
                with html.Tr(v_for="row in region_volumes", key="row.name"):
                    html.Td()
                    html.Td("{{ row.name }}", classes="region-name font-weight-bold")
                    html.Td("{{ row.ml }}", classes="region-ml text-right font-weight-bold")
        html.Div("{{ dice_text }}", v_show=("dice_text",), classes="text-caption mt-1", id="dice")
        html.Div("{{ confidence_text }}", v_show=("confidence_text",), classes="text-caption mt-1", id="confidence")
        v3.VAlert(text=("unsure_warning",), v_if=("unsure_warning",), type="warning", density="compact",
                  classes="mt-1", id="unsure-warning")
        html.Div("Downloads", classes="text-subtitle-1 mt-2")
        with html.Div(classes="d-flex flex-wrap ga-2"):
            for kind, (text, mime) in KINDS.items():
                v3.VBtn(text, size="small", variant="tonal", id=f"download-{kind}",
                        v_show=(f"downloads.includes('{kind}')",),
                        click=(f"utils.download(download_names['{kind}'], trigger('download', ['{kind}']), "
                               f"'{mime}')"))


#: What the page shows once its session's connection has closed (trame's error template), until it goes to
#: the door's page that says why.
ENDED_TEMPLATE = """
<div id="session-ended" style="max-width: 44em; margin: 4em auto; font-family: sans-serif;">
  <h2>This session has ended</h2>
  <p>Its connection to the server closed: its case, its result and the files uploaded to it are gone from the
  server. If you had not downloaded the result, open the case again in a new session.</p>
  <p><a id="start-again" :href="door_address || '/'">Start a new session</a></p>
</div>"""


def _session_life(server, life: SessionLife) -> None:
    """The reader's activity (pointer, keys) reported at most once per `activity_ms` (an idle session is
    released: serve --idle-minutes); when the connection closes, the page says so in words and, once the
    front door answers, goes to the door's page saying why the session ended: the page's address is then
    the door's, and a reload starts a new session."""
    server.state.trame__template_error = ENDED_TEMPLATE
    if not life.door_port:
        return
    client.ClientTriggers(mounted=(
        f"const door = window.location.protocol + '//' + window.location.hostname + ':{life.door_port}/';"
        "window.trame.state.set('door_address', door);"
        "let last = 0;"
        "const active = () => {"
        "  const now = Date.now(); if (now - last < %d) return; last = now; trigger('activity');"
        "};"
        "['pointerdown', 'pointermove', 'keydown', 'wheel'].forEach("
        "  (kind) => window.addEventListener(kind, active, { passive: true }));"
        "window.trame.client.onConnectionClose(() => window.setTimeout(() => window.fetch(door, "
        "  { method: 'HEAD', mode: 'no-cors' }).then(() => window.location.replace(door + 'ended?session=%d'))"
        "  .catch(() => {}), 1000));" % (life.activity_ms, life.session_number)))
