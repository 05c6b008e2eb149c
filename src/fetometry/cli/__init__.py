"""The ``fetometry`` command: one module per verb, each with ``add_parser(subparsers)`` and ``run(args)``.

Parsing imports no torch: a verb's heavy imports stay inside its ``run``, so ``fetometry
models`` and ``--help`` answer at once. ValueError and FileNotFoundError (bad input, with
a message that says how to fix it) print one line and exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from fetometry import DISCLAIMER, __version__

log = logging.getLogger("fetometry")

#: The verbs, in the order ``fetometry --help`` lists them: ``fetometry.cli.<verb>``.
VERBS = (
    "predict",
    "measure",
    "evaluate",
    "train",
    "benchmark",
    "explain",
    "models",
    "demo",
    "serve",
    "stream",
    "export",
    "pacs",
    "token",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fetometry", description="Automated fetal head biometry from 2D ultrasound. " + DISCLAIMER
    )
    parser.add_argument("--version", action="version", version=f"fetometry {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    subparsers = parser.add_subparsers(dest="verb", required=True)
    for name in VERBS:
        module = importlib.import_module(f"fetometry.cli.{name}")
        module.add_parser(subparsers)
        subparsers.choices[name].set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as error:
        # ValueError covers ImageReadError and PixelSizeError: messages say how to fix the input.
        print(f"fetometry {args.verb}: error: {error}", file=sys.stderr)
        return 1
