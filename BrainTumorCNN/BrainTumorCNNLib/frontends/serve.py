"""`braintumorcnn serve`: the engine in a web page (the [web] extra: trame-slicer).

Opens a case from the `--data` folders, an upload or `--case`, shows the
preparation plan, segments it with a shipped model as `braintumorcnn segment`
does, shows the result in Slicer's slice and 3-D views with the volumes, lets
the segment editor correct it and downloads the command's files
(frontends/web/).  Listens on 127.0.0.1; another address needs --access-key.
One browser session at a time: trame-slicer keeps one scene per server.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from urllib.parse import urlunsplit

from .web.logic.security import MAX_UPLOAD_BYTES, check_listening

INSTALL = "pip install 'braintumorcnn[web]' (Python >= 3.10)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; another needs --access-key)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free port)")
    parser.add_argument("--data", action="append", default=[], metavar="DIR",
                        help="folder of cases the page lists and may read (repeatable); nothing else can be read")
    parser.add_argument("--case", metavar="CASE_DIR", help="case opened when the page is opened")
    parser.add_argument("--access-key", metavar="KEY",
                        help="key the page's address must carry (?key=KEY); required with another --host")
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2 ** 20,
                        help="largest upload of one case, all files together (default %(default).0f MB)")


def main(args: argparse.Namespace) -> int:
    check_listening(args.host, args.access_key)
    for folder in args.data:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{folder} (given as --data): no such folder")
    if args.case and not Path(args.case).exists():
        raise FileNotFoundError(f"{args.case} (given as --case): no such case folder or image")
    if importlib.util.find_spec("trame_slicer") is None:
        raise ImportError(f"serve needs trame-slicer: {INSTALL}")
    from .web.app import ServeConfig, WebApp

    config = ServeConfig(host=args.host, port=args.port, data=tuple(Path(d).resolve() for d in args.data),
                         case=Path(args.case).resolve() if args.case else None, access_key=args.access_key,
                         upload_limit=int(args.max_upload_mb * 2 ** 20))
    app = WebApp(config)
    guard = "access key required (?key=KEY)" if args.access_key else "reachable from this machine only"

    def announce(**_):
        address = urlunsplit(("http", f"{args.host}:{app.server.port}", "/", "", ""))
        print(f"braintumorcnn serve: {address} ({guard}; one browser session at a time)", flush=True)

    app.ctrl.on_server_ready.add(announce)
    app.start()
    return 0
