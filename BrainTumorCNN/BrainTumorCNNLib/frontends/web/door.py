"""The front door of `braintumorcnn serve`: one app process per browser session.

trame shares one state, and trame-slicer one scene, between all pages of a process, so sessions are
kept apart by processes: each visit of the door's address starts a child (`serve --child`, the web
app on a free port of the same host, with the door's options and access key) and is redirected to
it.  Closing the page ends the child's session (its nodes and uploads go) and the child exits,
giving its memory back; the door reaps it, caps how many run at once, and stops them all when it
is stopped (SIGINT / SIGTERM).
"""
from __future__ import annotations

import asyncio
import re
import signal
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlunsplit

from .logic.security import KEY_PARAMETER, access_key_middleware

#: The command line module the children run (`serve --child`).
CLI_MODULE = __name__.rsplit(".", 2)[0] + ".cli"
#: What a child prints once it listens (web/app.py's child mode), and how long it may take.
CHILD_READY = re.compile(r"^braintumorcnn serve: session ready on port (\d+)$")
CHILD_START_S = 180.0
#: Seconds a child gets to exit after SIGTERM before it is killed.
STOP_S = 15.0


@dataclass(frozen=True)
class DoorOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    access_key: Optional[str] = None  # required by the door and every child
    max_sessions: int = 4
    child_args: Tuple[str, ...] = ()  # --data / --case / --max-upload-mb, passed on to every child


@dataclass
class Child:
    number: int
    process: asyncio.subprocess.Process
    port: int = 0


class FrontDoor:
    def __init__(self, options: DoorOptions):
        self.options = options
        self.children: Dict[int, Child] = {}
        self.started = 0

    def child_command(self) -> List[str]:
        command = [sys.executable, "-m", CLI_MODULE, "serve", "--child", "--host", self.options.host, "--port", "0",
                   *self.options.child_args]
        if self.options.access_key:
            command += ["--access-key", self.options.access_key]
        return command

    async def visit(self, request):
        """A new browser session: start a child for it and send the browser there."""
        from aiohttp import web

        if len(self.children) >= self.options.max_sessions:
            raise web.HTTPServiceUnavailable(
                headers={"Retry-After": "30"},
                text=f"braintumorcnn serve: all {self.options.max_sessions} sessions are in use (--max-sessions "
                     f"{self.options.max_sessions}: one process per browser session); close one of their pages "
                     "or try again later\n")
        child = await self.start_child()
        if not child.port:
            raise web.HTTPInternalServerError(text=f"braintumorcnn serve: session {child.number} did not start; "
                                                   "see the server's output\n")
        query = {KEY_PARAMETER: self.options.access_key} if self.options.access_key else None
        location = request.url.with_port(child.port).with_path("/").with_query(query)
        return web.Response(status=302, headers={"Location": str(location)},
                            text=f"your session: {location.with_query(None)}\n")

    async def start_child(self) -> Child:
        """Start a child and wait until it listens (child.port), or has exited (port 0)."""
        self.started += 1
        process = await asyncio.create_subprocess_exec(*self.child_command(), stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.STDOUT, limit=2 ** 20)
        child = Child(self.started, process)
        self.children[child.number] = child  # counted while it starts: a full door refuses the next
        ready = asyncio.get_running_loop().create_future()
        asyncio.ensure_future(self.follow(child, ready))
        try:
            await asyncio.wait_for(asyncio.shield(ready), CHILD_START_S)
        except asyncio.TimeoutError:
            process.kill()
        return child

    async def follow(self, child: Child, ready: asyncio.Future) -> None:
        """Pass the child's output on (its ready line gives its port); reap it when it exits."""
        async for raw in child.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            found = CHILD_READY.match(line)
            if found and not ready.done():
                child.port = int(found.group(1))
                ready.set_result(child.port)
                print(f"braintumorcnn serve: session {child.number} on port {child.port} (pid {child.process.pid})",
                      flush=True)
            else:
                print(f"[session {child.number}] {line}", flush=True)
        code = await child.process.wait()
        self.children.pop(child.number, None)
        if not ready.done():
            ready.set_result(0)
        print(f"braintumorcnn serve: session {child.number} ended (pid {child.process.pid}, exit {code})", flush=True)

    async def stop_children(self) -> None:
        for child in list(self.children.values()):
            if child.process.returncode is None:
                child.process.terminate()
        for child in list(self.children.values()):
            try:
                await asyncio.wait_for(child.process.wait(), STOP_S)
            except asyncio.TimeoutError:
                child.process.kill()
                await child.process.wait()

    async def serve(self, announce) -> None:
        """Listen until SIGINT / SIGTERM, then stop every child."""
        from aiohttp import web

        middlewares = [access_key_middleware(self.options.access_key)] if self.options.access_key else []
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/", self.visit, allow_head=False)  # a HEAD starts no process
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, self.options.host, self.options.port).start()
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stopped.set)
        announce(runner.addresses[0][1])
        try:
            await stopped.wait()
        finally:
            await self.stop_children()
            await runner.cleanup()


def run(options: DoorOptions, guard: str) -> None:
    def announce(port: int) -> None:
        host = f"[{options.host}]" if ":" in options.host else options.host
        address = urlunsplit(("http", f"{host}:{port}", "/", "", ""))
        print(f"braintumorcnn serve: {address} ({guard}; one process per browser session, at most "
              f"{options.max_sessions} at a time)", flush=True)

    asyncio.run(FrontDoor(options).serve(announce))
