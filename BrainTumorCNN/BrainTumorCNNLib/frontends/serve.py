"""`braintumorcnn serve`: the engine in a web page (the [web] extra: trame-slicer).

Opens a case from the `--data` folders, an upload or `--case`, shows the
preparation plan, segments it with a shipped model as `braintumorcnn segment`
does, shows the result in Slicer's slice and 3-D views with the volumes, lets
the segment editor correct it and downloads the command's files
(frontends/web/); with neither --data nor --case, the bundled phantom (a fresh clone's way to try it).
Listens on 127.0.0.1; another address needs --access-key.
Each browser session gets its own app process (frontends/web/door.py): trame-slicer keeps one
scene per process; `--child` runs one such process, as the door starts it.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path

from .web.logic.security import MAX_UPLOAD_BYTES, check_listening

INSTALL = "pip install 'braintumorcnn[web]' (Python >= 3.10)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; another needs --access-key)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free port)")
    parser.add_argument("--data", action="append", default=[], metavar="DIR",
                        help="folder of cases the page lists and may read (repeatable); nothing else can be read "
                             "(without --data nor --case: the bundled phantom)")
    parser.add_argument("--case", metavar="CASE_DIR", help="case opened when the page is opened")
    parser.add_argument("--access-key", metavar="KEY",
                        help="key the page's address must carry (?key=KEY); required with another --host")
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2 ** 20,
                        help="largest upload of one case, all files together (default %(default).0f MB)")
    parser.add_argument("--max-sessions", type=int, default=4,
                        help="browser sessions open at once, one process each (default %(default)s); more get a "
                             "page that tries again by itself")
    parser.add_argument("--idle-minutes", type=float, default=30.0,
                        help="release a session whose page shows no activity this long, warning on the page "
                             "first (default %(default).0f; 0: never)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one session's app process
    parser.add_argument("--session-number", type=int, default=0, help=argparse.SUPPRESS)  # the door's number for it
    parser.add_argument("--door-port", type=int, default=0, help=argparse.SUPPRESS)  # where its page goes when it ends


def write_try_case(folder: Path) -> Path:
    """The case `serve` opens when given no --data nor --case: the bundled phantom (synthetic/phantom.py,
    seed 0, small grid, with its truth) written into `folder`; returns its case folder."""
    from ..synthetic import phantom

    logging.getLogger("braintumorcnn.serve").info(
        "braintumorcnn serve: no --data: the page opens the bundled phantom (%s, small, with its truth); give "
        "--data DIR for your own cases", phantom.default_name(0))
    return phantom.write_phantom(phantom.make_phantom(0, "small"), folder)["T1c"].parent


def main(args: argparse.Namespace) -> int:
    check_listening(args.host, args.access_key)
    for folder in args.data:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{folder} (given as --data): no such folder")
    if args.case and not Path(args.case).exists():
        raise FileNotFoundError(f"{args.case} (given as --case): no such case folder or image")
    if importlib.util.find_spec("trame_slicer") is None:
        raise ImportError(f"serve needs trame-slicer: {INSTALL}")
    if args.max_sessions < 1:
        raise ValueError(f"--max-sessions {args.max_sessions}: give at least 1")
    if args.idle_minutes < 0:
        raise ValueError(f"--idle-minutes {args.idle_minutes:g}: give 0 (never) or more")
    guard = "access key required (?key=KEY)" if args.access_key else "reachable from this machine only"
    if not args.child:
        from .web import door

        phantom_folder = None
        if not args.data and not args.case:  # a fresh clone, no cases of one's own: the page on the phantom
            door.configure_logging()
            phantom_folder = Path(tempfile.mkdtemp(prefix="braintumorcnn-phantom-"))
            args.data, args.case = [str(phantom_folder)], str(write_try_case(phantom_folder))
        child_args = [arg for folder in args.data for arg in ("--data", str(Path(folder).resolve()))]
        if args.case:
            child_args += ["--case", str(Path(args.case).resolve())]
        child_args += ["--max-upload-mb", repr(args.max_upload_mb), "--idle-minutes", repr(args.idle_minutes)]
        try:
            door.run(door.DoorOptions(host=args.host, port=args.port, access_key=args.access_key,
                                      max_sessions=args.max_sessions, child_args=tuple(child_args)), guard)
        finally:
            if phantom_folder is not None:
                shutil.rmtree(phantom_folder, ignore_errors=True)
        return 0
    from .web.app import ServeConfig, WebApp, quiet_child

    quiet_child()
    config = ServeConfig(host=args.host, port=args.port, data=tuple(Path(d).resolve() for d in args.data),
                         case=Path(args.case).resolve() if args.case else None, access_key=args.access_key,
                         upload_limit=int(args.max_upload_mb * 2 ** 20), exit_when_closed=True,
                         session_number=args.session_number, door_port=args.door_port,
                         idle_s=60.0 * args.idle_minutes)
    app = WebApp(config)

    def announce(**_):  # the line the door waits for (door.CHILD_READY)
        print(f"braintumorcnn serve: session ready on port {app.server.port}", flush=True)

    app.ctrl.on_server_ready.add(announce)
    app.start()
    return 0
