"""What a browser may reach: files only inside the `--data` folders and its session's uploads, the
server only from this machine unless an access key guards it, one session per app process (the scene is
the process's), uploads size-limited, privately stored and safely named."""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Tuple

log = logging.getLogger(__name__)

#: Addresses that only this machine can reach; any other needs --access-key.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Largest upload of one case, all files together (bytes): a BraTS case is 10-40 MB compressed, 140 MB raw.
MAX_UPLOAD_BYTES = 400 * 2 ** 20
KEY_PARAMETER = "key"  # ?key=... in the address, then a cookie
KEY_COOKIE = "braintumorcnn_key"
#: The name of a session's private folder begins so (the front door deletes such a folder when its session ends).
PRIVATE_PREFIX = "braintumorcnn-serve-"
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._+-]+")


class AccessError(ValueError):
    """A path or an upload the server refuses; the message names it and why."""


def check_listening(host: str, access_key: Optional[str]) -> None:
    """Refuse to listen beyond this machine without an access key."""
    if host not in LOCAL_HOSTS and not access_key:
        raise ValueError(f"--host {host} makes the page reachable from other machines: give --access-key KEY too "
                         "(anyone opening it could read the cases); refusing to start without one")


@dataclass(frozen=True)
class ReadableRoots:
    """The folders whose files a browser may open (resolved, symlinks followed)."""

    folders: Tuple[Path, ...]

    @classmethod
    def of(cls, folders: Iterable[Path]) -> "ReadableRoots":
        return cls(tuple(Path(f).resolve() for f in folders))

    def with_folder(self, folder: Path) -> "ReadableRoots":
        return ReadableRoots(self.folders + (Path(folder).resolve(),))

    def check(self, path: Path) -> Path:
        """The real path of `path` (relative paths are taken inside the first folder) when it lies
        inside one of the folders, symlinks followed; else AccessError, whether it exists or not."""
        path = Path(path)
        if not path.is_absolute() and self.folders:
            path = self.folders[0] / path
        real = path.resolve()
        if not any(real == root or root in real.parents for root in self.folders):
            raise AccessError(f"{path}: outside the folders this server may read (its --data folders and this "
                              "session's uploads); refused")
        if not real.exists():
            raise AccessError(f"{path}: no such file or folder")
        return real


def safe_file_name(name: str) -> str:
    """An uploaded file's name reduced to its last part and plain characters (no folders, no leading dot)."""
    base = re.split(r"[\\/]", name)[-1]
    clean = _UNSAFE_CHARACTERS.sub("_", base).lstrip("._")[:120]
    if not clean:
        raise AccessError(f"{name!r}: not a usable file name")
    return clean


def private_folder() -> Path:
    """A new folder only this user can enter (mode 0700) for a session's uploads and downloads."""
    folder = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX))
    os.chmod(folder, 0o700)
    return folder


def access_key_middleware(key: str):
    """aiohttp middleware refusing every request (page, files, websocket) without the key: given once
    as ?key=KEY in the address, then kept in a cookie."""
    from aiohttp import web

    @web.middleware
    async def require_key(request, handler):
        given = request.query.get(KEY_PARAMETER) or request.cookies.get(KEY_COOKIE, "")
        if not hmac.compare_digest(given.encode(), key.encode()):
            log.warning("refused (403, no access key): %s %s from %s", request.method, request.path, request.remote)
            raise web.HTTPForbidden(text="braintumorcnn serve: access key required: open the address with "
                                         f"?{KEY_PARAMETER}=KEY (the key given to --access-key)\n")
        response = await handler(request)
        if KEY_PARAMETER in request.query and not isinstance(response, web.WebSocketResponse):
            response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="Strict")
        return response

    return require_key


class OneSession:
    """One browser session per app process: trame shares its state, and trame-slicer its scene, between
    every page of a process (the front door starts one process per session).  Another page is refused while a session's websocket is open (a reload gets
    `grace_s` for the old socket to close); the first socket starts a session (`on_start`), and when
    the last closes, `on_end` frees it."""

    def __init__(self, on_start: Callable[[], None], on_end: Callable[[], None], grace_s: float = 3.0):
        self.on_start = on_start
        self.on_end = on_end
        self.grace_s = grace_s
        self.open_sockets = 0

    def middleware(self):
        from aiohttp import web

        @web.middleware
        async def one_session(request, handler):
            is_socket = request.path == "/ws"
            if is_socket or request.path in ("/", "/index.html"):
                waited = 0.0
                while self.open_sockets and waited < self.grace_s:
                    await asyncio.sleep(0.1)
                    waited += 0.1
                if self.open_sockets:
                    log.warning("refused (409, a second page into this session): %s from %s", request.path,
                                request.remote)
                    raise web.HTTPConflict(text="braintumorcnn serve: this session is open in another page (one "
                                                "page per session); close it, or open the server's first address "
                                                "for a session of your own\n")
            if not is_socket:
                return await handler(request)
            self.open_sockets += 1
            if self.open_sockets == 1:
                self.on_start()
            try:
                return await handler(request)
            finally:
                self.open_sockets -= 1
                if not self.open_sockets:
                    self.on_end()

        return one_session


def drop_replies_to_closed_pages(loop: asyncio.AbstractEventLoop) -> None:
    """A page that closes while wslink writes to it makes that write fail with a connection reset: in an
    unawaited task (asyncio would print an unretrieved task's traceback), or inside a call's reply, which
    wslink logs as a traceback and aiohttp then logs again as an error of the websocket's request.  Such a
    reply has no reader; it is dropped with a log line.  Every other error is still reported as before."""
    def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if isinstance(context.get("exception"), ConnectionResetError):
            log.info("a reply to a page that had closed was dropped")
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
    for name in CLOSED_PAGE_LOGGERS:
        logging.getLogger(name).addFilter(_CLOSED_PAGE_FILTER)  # a filter already there is not added twice


#: Loggers that report a write to a closed page as an error: wslink's call handler (while it handles the
#: exception) and aiohttp's request handler (with the exception in the record).
CLOSED_PAGE_LOGGERS = ("wslink.protocol", "aiohttp.server")


class _ClosedPageFilter(logging.Filter):
    """Drops a logger's error records about a connection reset: the one being handled (wslink logs inside
    its `except`) or the one attached to the record (aiohttp); one info line per reset, not per record."""

    def __init__(self) -> None:
        super().__init__()
        self.last_error_id: Optional[int] = None

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        if not (isinstance(error, ConnectionResetError) and record.levelno >= logging.ERROR):
            return True
        if id(error) != self.last_error_id:
            self.last_error_id = id(error)
            log.info("a reply to a page that had closed was dropped")
        return False


_CLOSED_PAGE_FILTER = _ClosedPageFilter()  # one for both loggers: they report the same reset
