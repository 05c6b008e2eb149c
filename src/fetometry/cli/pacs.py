"""``fetometry pacs watch``: measure new ultrasound images in an Orthanc server and store SR + SC there.

Exit status: 0 done (``--once``) or stopped with Ctrl-C; 1 bad arguments; 2 Orthanc refused
the credentials; 3 Orthanc unreachable after the bounded retries. The password is read
from ``--password-file`` only (never the command line) and never logged.
"""

from __future__ import annotations

import argparse
import sys

from fetometry.cli.common import add_backend_argument, add_model_argument

EXIT_AUTH = 2
EXIT_UNAVAILABLE = 3


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pacs",
        help="PACS integration: follow an Orthanc server and store SR + SC for new ultrasound images",
        description="PACS integration (decision support, never diagnosis). See docs/DEPLOYMENT.md.",
    )
    verbs = parser.add_subparsers(dest="pacs_verb", required=True)
    watch = verbs.add_parser(
        "watch",
        allow_abbrev=False,  # so that "--password SECRET" is an error, not an abbreviated --password-file
        help="follow Orthanc's change feed; measure each new US instance; store a DICOM SR and an SC in its study",
    )
    watch.add_argument(
        "--orthanc", required=True, metavar="URL", help="Orthanc REST address, e.g. http://127.0.0.1:8042"
    )
    watch.add_argument("--once", action="store_true", help="process the feed up to its end, print a summary, exit")
    watch.add_argument("--username", default=None, help="HTTP basic-auth user (with --password-file)")
    watch.add_argument(
        "--password-file", default=None, metavar="FILE", help="file whose first line is the password (never logged)"
    )
    watch.add_argument(
        "--state",
        default="fetometry-pacs-state.sqlite",
        metavar="FILE.sqlite",
        help="SQLite bookkeeping: change cursor and one row per instance (default: %(default)s)",
    )
    add_model_argument(watch)
    add_backend_argument(watch)
    watch.add_argument(
        "--poll-seconds", type=float, default=10.0, metavar="S", help="seconds between passes (default %(default)s)"
    )
    watch.add_argument("--timeout", type=float, default=30.0, metavar="S", help="per-request timeout (default 30)")
    watch.add_argument("--retries", type=int, default=5, help="retries on connection errors / 5xx (default 5)")


def run(args: argparse.Namespace) -> int:
    if args.pacs_verb == "watch":
        return _watch(args)
    raise ValueError(f"unknown pacs verb {args.pacs_verb!r}")


def _client(args: argparse.Namespace):
    from fetometry.pacs.orthanc import OrthancClient, read_password_file

    if (args.username is None) != (args.password_file is None):
        raise ValueError("give --username and --password-file together, or neither")
    password = read_password_file(args.password_file) if args.password_file else None
    return OrthancClient(
        args.orthanc, username=args.username, password=password, timeout_s=args.timeout, retries=args.retries
    )


def _watch(args: argparse.Namespace) -> int:
    from fetometry.pacs.orthanc import OrthancAuthError, OrthancUnavailable
    from fetometry.pacs.state import WatchState
    from fetometry.pacs.watch import Watcher

    if args.poll_seconds <= 0:
        raise ValueError("--poll-seconds must be positive")
    client = _client(args)
    state = WatchState(args.state)
    try:
        client.system()  # fail fast on a wrong password or address, before loading the model
        from fetometry.inference.backend import build_predictor

        predictor = build_predictor(args.model, args.backend)
        watcher = Watcher(client, state, predictor)
        print(f"pacs watch: {args.orthanc}, model {watcher.identity.name}, cursor {state.cursor}", file=sys.stderr)
        summary = watcher.run_once() if args.once else watcher.watch(args.poll_seconds)
    except OrthancAuthError as error:
        print(f"fetometry pacs watch: error: {error}", file=sys.stderr)
        return EXIT_AUTH
    except OrthancUnavailable as error:
        print(f"fetometry pacs watch: error: {error}; the cursor stays at {state.cursor}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        client.close()
        state.close()
    print(f"pacs watch: {summary.line()}")
    return 0
