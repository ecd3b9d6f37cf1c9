"""The web page's layout (trame-slicer's `app/ui` shape)."""
from .page import UPLOAD_TRIGGER, SessionLife, build_page  # noqa: F401
from .views import slice_view_overlay, threed_view_overlay  # noqa: F401
