"""The page's "Compare with a prior scan" section (issue 34): a prior opened from the list or uploaded, its
progress, the table of changes (per region then / now, mL and %; the bidimensional measure), what change
segmentation alone makes, the difference layer and the comparison's downloads.  Layout only: the prior_*
state and the controller's functions are bound by web/prior.py."""
from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from ....scoring import longitudinal
from ....writing import mrml_comparison
from ..logic.prior import KINDS

#: The trigger the prior's upload chunks go to (app.py binds it).
PRIOR_UPLOAD_TRIGGER = "upload_prior_chunk"
_COLUMNS = (("measure", ""), ("then", "then"), ("now", "now"), ("change", "change"), ("percent", "%"),
            ("beyond", "beyond variation"))


def prior_section(ctrl, send_upload) -> None:
    """`send_upload(files, trigger, error)`: the page's code that sends an upload (ui.page)."""
    with html.Div(v_show=("result_ready && !running",), id="prior", classes="mt-3"):
        html.Div("Compare with a prior scan", classes="text-subtitle-1")
        html.Div("An earlier scan of this patient: segmented with the model above, its T1c registered onto this "
                 "case's T1c, and compared with this result as it stands.", classes="text-caption")
        v3.VSelect(label="Open the prior scan", items=("cases", []), v_model=("prior_path", None),
                   density="compact", hide_details=True, disabled=("prior_busy || busy",), id="prior-list",
                   classes="mt-1")
        v3.VFileInput(label="or upload the prior's files", multiple=True, density="compact", hide_details=True,
                      classes="mt-2", id="prior-upload", prepend_icon="mdi-upload", disabled=("prior_busy || busy",),
                      key=("prior_upload_key", 0),
                      change=("const files = $event.target.files;"
                              "if (files && files.length) { prior_error = '';"
                              + send_upload("files", PRIOR_UPLOAD_TRIGGER, "prior_error") + "}"))
        v3.VProgressLinear(model_value=("prior_progress", 0), v_show=("prior_busy",), classes="mt-2", height=4)
        with html.Div(classes="d-flex align-center ga-2"):
            html.Div("{{ prior_status }}", classes="text-caption", id="prior-status")
            v3.VBtn("Cancel", id="prior-cancel", click=ctrl.cancel_prior, v_show=("prior_busy",), size="small",
                    variant="tonal")
        v3.VAlert(text=("prior_error",), v_if=("prior_error",), type="error", density="compact", id="prior-error")
        with html.Div(v_show=("prior_ready",), id="prior-result"):
            with v3.VTable(density="compact", id="prior-table"):
                with html.Thead():
                    with html.Tr():
                        for _, title in _COLUMNS:
                            html.Th(title)
                with html.Tbody():
                    with html.Tr(v_for="row in prior_rows", key="row.measure"):
                        for key, _ in _COLUMNS:
                            html.Td(f"{{{{ row.{key} }}}}", classes=f"prior-{key}")
            html.Div("{{ line }}", v_for="line in prior_caveats", key="line", classes="text-caption prior-caveat")
            v3.VSwitch(label="change layer (in place of the segments)", v_model=("prior_layer", False),
                       density="compact", hide_details=True, id="prior-layer")
            with html.Div(classes="d-flex ga-3 text-caption", id="prior-legend"):
                for change, colour in longitudinal.DIFFERENCE_COLOURS.items():
                    with html.Span():
                        html.Span(style=f"display:inline-block;width:10px;height:10px;background:{_hex(colour)}")
                        html.Span(f" {mrml_comparison.segment_name(change)}")
            with html.Div(classes="d-flex flex-wrap ga-2"):
                v3.VBtn("Compare again", id="prior-compare", click=ctrl.compare_again, size="small",
                        variant="tonal", disabled=("prior_busy || busy",))
                for kind, (text, mime) in KINDS.items():
                    v3.VBtn(text, size="small", variant="tonal", id=f"prior-download-{kind}",
                            click=(f"utils.download(prior_download_names['{kind}'], "
                                   f"trigger('download_comparison', ['{kind}']), '{mime}')"))


def _hex(colour) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in colour)
