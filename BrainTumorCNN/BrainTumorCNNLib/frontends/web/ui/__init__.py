"""The web page's layout (trame-slicer's `app/ui` shape)."""
from .page import build_page  # noqa: F401
