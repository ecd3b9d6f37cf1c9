"""`braintumorcnn serve`: the engine in a web page, on trame-slicer's views and segment editor.

Shaped like trame-slicer's own app: `logic/` holds the session's state and the
work (cases, the segmentation job, downloads, access rules), `ui/` the page
layout; `app.py` wires them to one trame server.  Every step calls the engine
as `braintumorcnn segment` does (io.read_case, pipeline.segment through the
GUI's worker task, the mrml / preview writers, the label table).
"""
