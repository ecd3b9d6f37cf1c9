"""The front door of `braintumorcnn serve`: one app process per browser session.

trame shares one state, and trame-slicer one scene, between all pages of a process, so sessions are
kept apart by processes: each visit of the door's address starts a child (`serve --child`, the web
app on a free port of the same host, with the door's options and access key) and is redirected to
it.  The door owns the children's lives:

- at most `max_sessions` at once, the place taken before anything is awaited, so visits arriving
  together cannot pass the cap nor share a session number; one more visit gets a page that tries
  again by itself (notices.py);
- each child runs in its own process group, reads nothing but watches its stdin (the door's pipe:
  when the door dies, the child stops); stopping the door (SIGINT / SIGTERM) stops every group and
  waits for it;
- a child tells the door where its files are (CHILD_FILES) and why it ends (CHILD_ENDING); however
  it ends (closed, released when idle, killed, crashed) the door deletes its files and frees its
  place, and its port answers for a while with a redirect to the door's page saying what happened
  (/ended), so a reload of a dead session's address does not meet "connection refused".

Every line the door prints carries a timestamp, the children's lines too (prefixed `[session N]`,
terminal colour codes removed); refusals are logged.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple
from urllib.parse import urlunsplit

from . import notices
from .logic.security import KEY_PARAMETER, PRIVATE_PREFIX, access_key_middleware

log = logging.getLogger("braintumorcnn.serve")

#: The command line module the children run (`serve --child`).
CLI_MODULE = __name__.rsplit(".", 2)[0] + ".cli"
#: What a child prints once it listens, when it makes its private folder and when it ends on its own.
CHILD_READY = re.compile(r"^braintumorcnn serve: session ready on port (\d+)$")
CHILD_FILES = re.compile(r"^braintumorcnn serve: session files in (.+)$")
CHILD_ENDING = re.compile(r"^braintumorcnn serve: session ending: (.+)$")
CHILD_START_S = 180.0
#: Seconds a child gets to exit after SIGTERM before its process group is killed.
STOP_S = 15.0
#: How long /ended waits for a session whose page lost its connection to end (the child's grace after
#: its page closes is 10 s), and how long a dead session's port redirects to the door.
ENDED_WAIT_S = 15.0
TOMBSTONE_S = 600.0
#: Sessions whose end the door remembers (for /ended).
REMEMBERED = 1000
_COLOUR_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class DoorOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    access_key: Optional[str] = None  # required by the door and every child
    max_sessions: int = 4
    child_args: Tuple[str, ...] = ()  # --data / --case / --max-upload-mb / --idle-minutes, passed on to every child


@dataclass
class Child:
    number: int
    process: Optional[asyncio.subprocess.Process] = None  # None while it is being started
    port: int = 0
    folders: Set[Path] = field(default_factory=set)  # its private folders, deleted when it ends
    ending: str = ""  # why it said it ends
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    follower: Optional[asyncio.Task] = None


def end_reason(child: Child, code: int) -> str:
    """Why a session ended, in words, from what it said and its exit status."""
    if child.ending:
        return child.ending
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"its process was {'killed' if -code == signal.SIGKILL else 'stopped'} ({name})"
    if code > 0:
        return f"its process failed (exit status {code}; the server's log says why)"
    return "its process exited"


class FrontDoor:
    def __init__(self, options: DoorOptions):
        self.options = options
        self.children: Dict[int, Child] = {}
        self.started = 0
        self.stopping = False
        self.port = options.port
        self.ended: Dict[int, str] = {}  # number -> why, of the sessions that ended
        self.tombstones: Dict[int, Tuple[int, object]] = {}  # port -> (session number, its site)
        self.tombstone_runner = None

    def child_command(self, number: int) -> List[str]:
        command = [sys.executable, "-m", CLI_MODULE, "serve", "--child", "--host", self.options.host, "--port", "0",
                   "--session-number", str(number), "--door-port", str(self.port), *self.options.child_args]
        if self.options.access_key:
            command += ["--access-key", self.options.access_key]
        return command

    async def visit(self, request):
        """A new browser session: take a place, start a child for it and send the browser there."""
        from aiohttp import web

        if self.stopping or len(self.children) >= self.options.max_sessions:
            log.warning("braintumorcnn serve: visit from %s refused (503): all %d sessions in use", request.remote,
                        self.options.max_sessions)
            html = notices.wants_html(request.headers.get("Accept", ""))
            return web.Response(status=503, headers={"Retry-After": str(notices.RETRY_S)},
                                content_type="text/html" if html else "text/plain",
                                text=(notices.in_use_page if html else notices.in_use_text)(self.options.max_sessions))
        self.started += 1  # the place and the number are taken here, before anything is awaited
        child = self.children[self.started] = Child(self.started)
        await self.start_child(child)
        if not child.port:
            log.warning("braintumorcnn serve: session %d did not start (500)", child.number)
            raise web.HTTPInternalServerError(text=f"braintumorcnn serve: session {child.number} did not start; "
                                                   "see the server's output\n")
        query = {KEY_PARAMETER: self.options.access_key} if self.options.access_key else None
        location = request.url.with_port(child.port).with_path("/").with_query(query)
        return web.Response(status=302, headers={"Location": str(location)},
                            text=f"your session: {location.with_query(None)}\n")

    async def start_child(self, child: Child) -> None:
        """Start `child`'s process in its own process group and wait until it listens (child.port), or
        has exited (port 0).  Its place is given back however it ends."""
        try:
            child.process = await asyncio.create_subprocess_exec(
                *self.child_command(child.number), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, limit=2 ** 20, start_new_session=True)
        except OSError as exc:
            log.error("braintumorcnn serve: session %d could not be started: %s", child.number, exc)
            self.children.pop(child.number, None)
            child.ended.set()
            return
        ready = asyncio.get_running_loop().create_future()
        child.follower = asyncio.ensure_future(self.follow(child, ready))
        if self.stopping:  # the door stopped while this child was being started
            self.signal_group(child, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(ready), CHILD_START_S)
        except asyncio.TimeoutError:
            self.signal_group(child, signal.SIGKILL)

    async def follow(self, child: Child, ready: asyncio.Future) -> None:
        """Pass the child's output on (its ready line gives its port, its files line its folder); when it
        exits, delete its files, free its place and leave a redirect to /ended on its port."""
        try:
            async for raw in child.process.stdout:
                line = _COLOUR_CODES.sub("", raw.decode(errors="replace")).rstrip()
                if not line.strip():
                    continue
                found = CHILD_READY.match(line)
                if found and not ready.done():
                    child.port = int(found.group(1))
                    ready.set_result(child.port)
                    log.info("braintumorcnn serve: session %d on port %d (pid %d)", child.number, child.port,
                             child.process.pid)
                    continue
                files, ending = CHILD_FILES.match(line), CHILD_ENDING.match(line)
                if files:
                    child.folders.add(Path(files.group(1)))
                elif ending:
                    child.ending = ending.group(1)
                log.info("[session %d] %s", child.number, line)
        except ValueError as exc:  # a line longer than the pipe's limit: the rest is not followed
            log.warning("[session %d] output no longer shown: %s", child.number, exc)
            while await child.process.stdout.read(2 ** 16):  # drained, or the child would block writing
                pass
        code = await child.process.wait()
        deleted = [str(folder) for folder in child.folders if delete_private_folder(folder)]
        self.children.pop(child.number, None)
        if not ready.done():
            ready.set_result(0)
        reason = end_reason(child, code)
        self.ended[child.number] = reason
        while len(self.ended) > REMEMBERED:
            del self.ended[next(iter(self.ended))]
        log.info("braintumorcnn serve: session %d ended (pid %d, exit %d): %s%s", child.number, child.process.pid,
                 code, reason, f"; deleted its files {', '.join(deleted)}" if deleted else "")
        child.ended.set()
        if child.port and not self.stopping:
            await self.leave_tombstone(child)

    def signal_group(self, child: Child, number: int) -> None:
        try:
            os.killpg(child.process.pid, number)  # its group: anything it started goes too
        except (ProcessLookupError, PermissionError):
            pass

    async def stop_children(self) -> None:
        """SIGTERM every session's process group, SIGKILL those still there after STOP_S; return when
        each has been reaped and its files deleted."""
        self.stopping = True
        children = list(self.children.values())
        for child in children:
            if child.process is not None:
                self.signal_group(child, signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.ended.wait(), STOP_S)
            except asyncio.TimeoutError:
                self.signal_group(child, signal.SIGKILL)
                await child.ended.wait()

    # ------------------------------------------------------------------ ended sessions
    async def ended_page(self, request):
        """What became of session ?session=N: the page a session's page goes to when its connection closes."""
        from aiohttp import web

        try:
            number = int(request.query.get("session", ""))
        except ValueError:
            raise web.HTTPFound("/")
        child = self.children.get(number)
        if child is not None:  # its page lost its connection: the session ends shortly (or lives on)
            try:
                await asyncio.wait_for(child.ended.wait(), ENDED_WAIT_S)
            except asyncio.TimeoutError:
                pass
        reason = self.ended.get(number) or ("its page lost its connection to it" if number in self.children else
                                            "this server no longer knows it (it may have been restarted)")
        html = notices.wants_html(request.headers.get("Accept", ""))
        return web.Response(content_type="text/html" if html else "text/plain",
                            text=(notices.ended_page if html else notices.ended_text)(number, reason))

    async def leave_tombstone(self, child: Child) -> None:
        """Listen on a dead session's port for TOMBSTONE_S, redirecting to /ended: a reload of its page
        then says what happened instead of "connection refused"."""
        from aiohttp import web

        site = web.TCPSite(self.tombstone_runner, self.options.host, child.port)
        try:
            await site.start()
        except OSError:  # the port was taken meanwhile: nothing to do
            return
        self.tombstones[child.port] = (child.number, site)
        asyncio.get_running_loop().call_later(TOMBSTONE_S, lambda: asyncio.ensure_future(self.lift(child.port)))

    async def lift(self, port: int) -> None:
        number, site = self.tombstones.pop(port, (0, None))
        if site is not None:
            await site.stop()

    async def tombstone(self, request):
        from aiohttp import web

        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        number = self.tombstones.get(port, (0, None))[0]
        location = request.url.with_port(self.port).with_path("/ended").with_query({"session": number})
        raise web.HTTPFound(str(location))

    # ------------------------------------------------------------------ the door itself
    async def serve(self, announce) -> None:
        """Listen until SIGINT / SIGTERM, then stop every child."""
        from aiohttp import web

        middlewares = [access_key_middleware(self.options.access_key)] if self.options.access_key else []
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/", self.visit, allow_head=False)  # a HEAD starts no process
        app.router.add_get("/ended", self.ended_page)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.options.host, self.options.port).start()
        self.port = runner.addresses[0][1]
        tombstones = web.Application()
        tombstones.router.add_route("*", "/{anything:.*}", self.tombstone)
        self.tombstone_runner = web.AppRunner(tombstones, handle_signals=False, access_log=None)
        await self.tombstone_runner.setup()
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stopped.set)
        announce(self.port)
        try:
            await stopped.wait()
        finally:
            log.info("braintumorcnn serve: stopping %d session(s)", len(self.children))
            await self.stop_children()
            await self.tombstone_runner.cleanup()
            await runner.cleanup()
            log.info("braintumorcnn serve: stopped")


def delete_private_folder(folder: Path) -> bool:
    """Delete a session's private folder, as named by private_folder (under the temporary folder, its
    prefix): a child's line names it, and nothing else is deleted on a child's word."""
    folder = Path(folder)
    if not folder.name.startswith(PRIVATE_PREFIX) or folder.parent != Path(tempfile.gettempdir()) or \
            folder.is_symlink() or not folder.is_dir():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return not folder.exists()


def configure_logging() -> None:
    """The server's lines on stdout, each with its time."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def run(options: DoorOptions, guard: str) -> None:
    def announce(port: int) -> None:
        host = f"[{options.host}]" if ":" in options.host else options.host
        address = urlunsplit(("http", f"{host}:{port}", "/", "", ""))
        log.info("braintumorcnn serve: %s (%s; one process per browser session, at most %d at a time)", address,
                 guard, options.max_sessions)

    configure_logging()
    asyncio.run(FrontDoor(options).serve(announce))
