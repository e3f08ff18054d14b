"""The ``workcrew`` command line.

EDGE module: uses only the public ``workcrew`` API.  Commands::

    workcrew demo [--lang en|zh] [--lesson NAME ...] [--start-method M]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import workcrew

from ._demo import LESSONS, run_demo

__all__ = ("main",)

EXAMPLES = """\
examples:
  workcrew demo                 all lessons, in English
  workcrew demo --lang zh       the same in Chinese (the lecture's language)
  workcrew demo --lesson cpu    only the threads-vs-processes measurement
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="workcrew",
        description="Run many tasks at once: processes, threads, one engine.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"workcrew {workcrew.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="the lecture's lessons, measured live on this machine",
        description="The lecture's lessons on processes and threads, measured live.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--lang", choices=("en", "zh"), default="en", help="language (default en)")
    demo.add_argument(
        "--lesson",
        action="append",
        choices=tuple(LESSONS),
        dest="lessons",
        help="run only this lesson (repeatable; default: all)",
    )
    demo.add_argument(
        "--start-method",
        choices=("fork", "spawn", "forkserver"),
        default=None,
        help="process start method (default: workcrew's default)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``workcrew`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        try:
            run_demo(args.lang, args.lessons, args.start_method)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    return 0
