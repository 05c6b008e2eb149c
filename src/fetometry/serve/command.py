"""`fetometry serve`: the web app and REST API on 127.0.0.1 (by default) with uvicorn.

Without ``--tokens`` the server has no login and must stay on a loopback address (the
actor in the audit log is "local"); any other ``--host`` needs ``--tokens FILE`` (see
docs/ACCESS_CONTROL.md). The audit log goes to ``--audit FILE``, else to ``audit.sqlite``
beside the token file, else (loopback, no tokens) into memory.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add the ``serve`` verb to the fetometry CLI."""
    p = subparsers.add_parser("serve", help="web app + REST API (POST /api/measure, /api/report; docs at /docs)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only); any other address needs --tokens",
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
    p.add_argument(
        "--tokens",
        default=None,
        metavar="FILE",
        help="require a token (fetometry token create NAME --tokens FILE) on every route but /health",
    )
    p.add_argument(
        "--audit",
        default=None,
        metavar="FILE.sqlite",
        help="append-only audit log of every measurement, report, correction, login and denial "
        "(default: audit.sqlite beside the --tokens file; without --tokens, in memory)",
    )
    p.add_argument(
        "--rate-limit",
        type=rate_limit,
        default=None,
        metavar="N/min",
        help="at most N requests a minute per token, e.g. 30/min (HTTP 429 with Retry-After beyond; default: no limit)",
    )


def rate_limit(text: str) -> int:
    """``--rate-limit`` value: ``N/min`` (or plain ``N``) -> N requests a minute, N >= 1."""
    value = str(text).strip().lower()
    for suffix in ("/min", "/minute", "/m"):
        if value.endswith(suffix):
            value = value[: -len(suffix)].strip()
            break
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write N/min, e.g. 30/min") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: choose at least 1 request a minute")
    return number


def audit_path(args: argparse.Namespace) -> str | None:
    """Where the audit log goes: --audit; else audit.sqlite beside the token file; else None (in memory)."""
    if args.audit:
        return args.audit
    tokens = args.tokens
    if tokens:
        return str(Path(tokens).resolve().parent / "audit.sqlite")
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostRefused(ValueError):
    """A non-loopback --host without --tokens: ``run_serve`` prints it and exits 2."""


def check_access(args: argparse.Namespace) -> None:
    """Refuse a non-loopback --host without --tokens (HostRefused), a bad --rate-limit or token file (ValueError)."""
    tokens = args.tokens
    if not is_loopback(args.host) and not tokens:
        raise HostRefused(
            f"--host {args.host} is not a loopback address and the server would have no login: "
            "add --tokens FILE (fetometry token create NAME --tokens FILE) or bind to 127.0.0.1"
        )
    rate = args.rate_limit
    if rate is not None and rate < 1:
        raise ValueError(f"--rate-limit {rate}: choose at least 1 request a minute")
    if tokens:
        import os
        import stat

        from fetometry.serve.auth import read_tokens

        entries = read_tokens(tokens)  # a missing or malformed file fails now
        if not any(e.active for e in entries):
            log.warning("%s holds no active token: every request but /health will be refused", tokens)
        if os.stat(tokens).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s is readable by others; chmod 600 it", tokens)
    if not is_loopback(args.host):
        log.warning("binding to %s: the server speaks plain HTTP; put a TLS reverse proxy in front of it", args.host)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fetometry.resources import resolve_weights
    from fetometry.serve.app import ServeSettings, create_app

    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port}: choose 1-65535")
    try:
        check_access(args)
    except HostRefused as error:
        print(f"fetometry serve: error: {error}", file=sys.stderr)
        return 2
    resolve_weights(args.model)  # a wrong model name fails now, with the valid names, not at the first request
    settings = ServeSettings(
        model=args.model,
        max_upload_mb=args.max_upload_mb,
        db_url=args.db,
        max_pending=args.max_pending,
        tokens_file=args.tokens,
        audit_path=audit_path(args),
        rate_limit_per_minute=args.rate_limit,
    )
    app = create_app(settings)
    app.state.service.cache.get(args.model)  # load the weights once, before the first request
    where = settings.audit_path or "memory (lost when the server stops; give --audit FILE to keep it)"
    login = f"tokens from {settings.tokens_file}" if settings.tokens_file else "no login (loopback only)"
    print(f"fetometry serving on http://{args.host}:{args.port}/ (API docs at /docs); Ctrl-C stops it")
    print(f"access: {login}; audit log in {where}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False)
    return 0
