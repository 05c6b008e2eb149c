"""`fetometry serve`: the web app and REST API on 127.0.0.1 (by default) with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import logging

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add the ``serve`` verb to the fetometry CLI."""
    p = subparsers.add_parser("serve", help="web app + REST API (POST /api/measure, /api/report; docs at /docs)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; the server has no login)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--model", default=None, help="shipped model name or weights folder (default: the default model)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload in MB (default 20)")
    p.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="store visits per pregnancy id (e.g. sqlite:///visits.db); without it nothing is stored",
    )
    p.add_argument(
        "--max-pending", type=int, default=16, help="exams that may wait at once; more get HTTP 503 (default 16)"
    )
    p.set_defaults(func=run_serve)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fetometry.resources import resolve_weights
    from fetometry.serve.app import ServeSettings, create_app

    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port}: choose 1-65535")
    resolve_weights(args.model)  # a wrong model name fails now, with the valid names, not at the first request
    if not is_loopback(args.host):
        log.warning(
            "binding to %s: anyone who can reach this address can upload images; the server has no login", args.host
        )
    settings = ServeSettings(
        model=args.model, max_upload_mb=args.max_upload_mb, db_url=args.db, max_pending=args.max_pending
    )
    app = create_app(settings)
    app.state.service.cache.get(args.model)  # load the weights once, before the first request
    print(f"fetometry serving on http://{args.host}:{args.port}/ (API docs at /docs); Ctrl-C stops it")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False)
    return 0
