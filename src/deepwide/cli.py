"""Command line: ``python -m deepwide <stage> <command> ...``.

Each stage lives in its own module that exposes ``register(subparsers)``; this file only
collects them, so adding a stage is one line in ``STAGES``. A stage command returns an
exit code (or None for 0). ``DeepwideError`` is the one exception type meant for users:
it is printed as ``error: <message>`` without a traceback and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from deepwide.errors import DeepwideError

# module path of every stage's CLI, in pipeline order
STAGES = [
    "deepwide.corpus.cli",
    "deepwide.models.cli",
    "deepwide.distill.cli",
    "deepwide.report.cli",
    "deepwide.teacher.cli",
    "deepwide.superb.cli",
    "deepwide.plan.cli",  # `plan cost|resources|students|check`
    "deepwide.runlock",  # `recover`
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepwide", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name in STAGES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        rc = args.func(args)
    except DeepwideError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return int(rc or 0)
