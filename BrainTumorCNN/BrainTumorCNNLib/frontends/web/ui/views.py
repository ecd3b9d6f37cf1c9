"""What each view shows over its picture, as Slicer's views do: its name, the patient's directions at
its edges, its slice number, the window / level and the value under the pointer (state `view_info`,
filled by logic/views.py); trame-slicer's own gutter (reset, show in 3-D) and slice slider kept."""
from __future__ import annotations

from trame.widgets import client, html

#: An overlay's text: small, light, readable over any image, never in the way of the pointer.
TEXT = "position:absolute;color:#f0f0f0;font-size:12px;text-shadow:0 0 3px #000,0 0 2px #000;pointer-events:none;"


def slice_view_overlay(server, view_id: str, view) -> None:
    """trame-slicer's gutter and slider, then the overlay of one slice view (a populate_view_ui_f).  The
    slider follows the view's slice offset; where that runs against the slice numbers (`reversed`), it is
    drawn mirrored, so that its right end is the last slice and it moves the way the number and the keys do."""
    from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui

    orientation = view.get_orientation()
    info = f"view_info?.{orientation}"
    with html.Div(classes=(f"{info}?.reversed ? 'slider-reversed' : ''",), style="display: contents;"):
        client.Style(".slider-reversed .slice-slider { transform: scaleX(-1); }")
        create_vertical_slice_view_gutter_ui(server, view_id, view)
    with html.Div(id=f"view-{orientation}", classes="view-overlay",
                  style="position:absolute;inset:0;pointer-events:none;"):
        html.Div(f"{{{{ {info}?.name }}}}", classes="view-name",
                 style=(f"`{TEXT}top:4px;right:8px;font-weight:bold;border-bottom:3px solid "
                        f"${{{info}?.colour || '#888'}};padding:0 4px;`",))
        for edge, place in (("left", "left:6px;top:50%;"), ("right", "right:6px;top:50%;"),
                            ("top", "top:4px;left:50%;"), ("bottom", "bottom:34px;left:50%;")):
            html.Div(f"{{{{ {info}?.{edge} }}}}", classes=f"edge-{edge}", style=f"{TEXT}{place}font-weight:bold;")
        html.Div(f"{{{{ {info}?.slice }}}}", classes="slice-number", style=f"{TEXT}bottom:52px;left:8px;")
        html.Div(f"{{{{ {info}?.wl }}}}", classes="window-level", style=f"{TEXT}bottom:36px;left:8px;")
        html.Div(f"{{{{ {info}?.value }}}}", classes="pointer-value", style=f"{TEXT}bottom:36px;right:8px;")


def threed_view_overlay(server, view_id: str, view) -> None:
    """trame-slicer's gutter, then the 3-D view's name."""
    from trame_slicer.app.ui import create_vertical_view_gutter_ui

    create_vertical_view_gutter_ui(server, view_id, view)
    with html.Div(id="view-3D", classes="view-overlay", style="position:absolute;inset:0;pointer-events:none;"):
        html.Div("1 3D", classes="view-name",
                 style=f"{TEXT}top:4px;right:8px;font-weight:bold;border-bottom:3px solid #8aa8d8;padding:0 4px;")
