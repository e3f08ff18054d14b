"""The ``workcrew`` command line.

EDGE module: uses only the public ``workcrew`` API.  Commands::

    workcrew demo [--lang en|zh] [--lesson NAME ...] [--start-method M]
    workcrew advise MODULE:FUNCTION [--inputs FILE] [--tasks N]
    workcrew run [OPTIONS] [COMMAND ...] [::: INPUT ... | :::: FILE ...]...   (_run.py)
    workcrew map MODULE:FUNCTION [INPUT] [--json] [--kind K] [-j N] ...      (_map.py)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import workcrew

from ._demo import LESSONS, run_demo
from ._lessons import TEXT
from ._map import add_parser as add_map_parser
from ._run import add_parser as add_run_parser
from ._run import split_sources

__all__ = ("main",)

EXAMPLES = """\
examples:
  workcrew demo                 all lessons, in English
  workcrew demo --lang zh       the same in Chinese (the lecture's language)
  workcrew demo --lesson cpu    only the threads-vs-processes measurement
"""
COMMAND_EXAMPLES = """\
  workcrew run gzip ::: *.log   shell commands in parallel (see workcrew run --help)
  workcrew map mod:fn in.txt    a Python function over lines, JSON lines out
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="workcrew",
        description="Run many tasks at once: processes, threads, one engine.",
        epilog=EXAMPLES + COMMAND_EXAMPLES,
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
        "--dashboard",
        action="store_true",
        help="keep lesson 1's pool and its live dashboard open until you press Enter",
    )
    demo.add_argument(
        "--start-method",
        choices=("fork", "spawn", "forkserver"),
        default=None,
        help="process start method (default: workcrew's default)",
    )
    advise = commands.add_parser(
        "advise",
        help="measure a function under each worker kind and recommend one",
        description="Run a sample of your function's inputs through Pool.map with each worker "
        "kind at a few worker counts; print tasks/s and the fastest choice.",
        epilog="example:\n  workcrew advise mypkg.images:resize --inputs paths.jsonl --tasks 200",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    advise.add_argument("function", metavar="MODULE:FUNCTION", help="the function to measure")
    advise.add_argument(
        "--inputs", metavar="FILE", help="one JSON value per line: the function's argument"
    )
    advise.add_argument(
        "--tasks",
        type=int,
        default=200,
        help="tasks per measurement (default 200; inputs 0..N-1 when no --inputs is given)",
    )
    add_run_parser(commands)
    add_map_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``workcrew`` command; returns the exit status."""
    parser = build_parser()
    # `:::` groups are not argparse's business: split them off first.
    argv, sources = split_sources(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if sources and args.command != "run":
        parser.error("::: and :::: are for `workcrew run`")
    if args.command in ("run", "map"):
        args.sources = sources
        status: int = args.main(args)
        return status
    if args.command == "advise":
        from ._advise import main as advise_main

        try:
            return advise_main(args.function, args.inputs, args.tasks, print)
        except (ValueError, ImportError, OSError) as exc:
            parser.error(str(exc))  # exit status 2 with the message
    if args.command == "demo":
        try:
            prompt = TEXT[args.lang]["pool_pause"]
            pause = (lambda: input(prompt)) if args.dashboard else (lambda: None)
            run_demo(args.lang, args.lessons, args.start_method, pause=pause)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    return 0
