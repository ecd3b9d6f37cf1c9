"""The web app's state and work, without layout (trame-slicer's `app/logic` shape)."""
