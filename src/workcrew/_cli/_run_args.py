"""``workcrew run``'s command line: its options, and the parsers of their values.

EDGE module: uses only the public ``workcrew`` API.
"""

from __future__ import annotations

import argparse
import itertools
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import workcrew

__all__ = ("MAX_JOBS", "Halt", "add_parser", "parse_halt", "parse_jobs", "split_sources")

#: ``-j 0`` ("as many as possible"): every running job holds a thread, a process and two
#: pipes, so a bound keeps a huge input from exhausting file descriptors.
MAX_JOBS = 256
SOURCE_MARKS = (":::", "::::")

EXAMPLES = """\
examples:
  workcrew run gzip -9 ::: *.log                  one job per file, one per CPU at a time
  workcrew run -j 8 'curl -sO {}' < urls.txt      one job per line of stdin, 8 at a time
  workcrew run convert {} {.}.png ::: *.jpg       {.}: the input without its extension
  workcrew run echo {1}-{2} ::: a b ::: 1 2       every combination: a-1 a-2 b-1 b-2
  find . -name '*.c' -print0 | workcrew run -0 -k wc -l
  workcrew run --joblog jobs.tsv --halt now,fail=1 ./step.sh ::: 1 2 3 4
  workcrew run --joblog jobs.tsv --resume ./step.sh ::: 1 2 3 4    only what did not run

placeholders (each input is shell-quoted; do not quote them yourself):
  {}  the input        {.}  without extension   {/}  basename   {//}  dirname
  {/.} basename without extension   {#}  job number   {%}  job slot (1..-j)
  {1} {2} ... the input from the 1st, 2nd ... source; also {1.} {2/} etc.
  no placeholder: the input is appended.  No command: each input is a command.

exit status: the number of failed jobs (at most 101); 2 for bad arguments;
130 on Ctrl-C.  Shell completion is not provided (argparse has none).
"""

# -- the command line ------------------------------------------------------------------


def split_sources(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Split ``argv`` at the first ``:::``/``::::``: (the rest, [(mark, words), ...])."""
    starts = [i for i, word in enumerate(argv) if word in SOURCE_MARKS]
    if not starts:
        return list(argv), []
    groups = []
    for start, end in itertools.pairwise([*starts, len(argv)]):
        groups.append((argv[start], list(argv[start + 1 : end])))
    return list(argv[: starts[0]]), groups


def parse_jobs(text: str) -> int:
    """``-j``: N, +N / -N (CPUs plus or minus N), N% (of the CPUs), 0 (as many as possible)."""
    cpus = workcrew.available_cpu_count()
    try:
        if text.endswith("%"):
            count = int(float(text[:-1]) * cpus / 100)
        elif text.startswith(("+", "-")):
            count = cpus + int(text)
        else:
            count = int(text)
            if count == 0:
                return MAX_JOBS
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N, +N, -N or N%, got {text!r}") from None
    if count < 0 or (count == 0 and not text.endswith("%")):
        raise argparse.ArgumentTypeError(f"{text!r} leaves no job slot")
    return max(1, count)


class Halt(NamedTuple):
    """When to stop: ``when`` is "now" (kill running jobs) or "soon" (let them finish)."""

    when: str
    what: str  # "fail", "success" or "done"
    limit: int

    def __str__(self) -> str:
        return f"{self.when},{self.what}={self.limit}"


def parse_halt(text: str) -> Halt | None:
    """``--halt``: never, now|soon,fail|success|done=N, or GNU parallel's legacy 0, 1, 2."""
    legacy = {"0": "never", "1": "soon,fail=1", "2": "now,fail=1"}
    text = legacy.get(text, text)
    if text == "never":
        return None
    match = re.fullmatch(r"(now|soon),(fail|success|done)=(\d+)", text)
    if match is None or int(match[3]) < 1:
        hint = " (percentages are not supported)" if "%" in text else ""
        raise argparse.ArgumentTypeError(
            f"expected now|soon,fail|success|done=N (e.g. now,fail=1), got {text!r}{hint}"
        )
    return Halt(match[1], match[2], int(match[3]))


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    main: Callable[[argparse.Namespace, argparse.ArgumentParser], int],
) -> None:
    """Register ``workcrew run`` on the top-level parser's subcommands; ``main`` runs it."""
    parser = commands.add_parser(
        "run",
        help="run shell commands in parallel (GNU parallel's spelling)",
        usage="workcrew run [OPTIONS] [COMMAND ...] [::: INPUT ... | :::: FILE ...]...",
        description=(
            "Run a command template once per input, several at a time. Inputs come after :::\n"
            "(several ::: groups: every combination), from files after :::: or -a, or as\n"
            "lines of stdin. Each job runs under /bin/sh -c in its own process group; its\n"
            "stdout and stderr are written whole when it ends."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    _add_job_options(parser)
    _add_input_options(parser)
    parser.set_defaults(main=lambda args: main(args, parser))


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    """How jobs run: slots, order, timeouts, retries, the joblog, halting, progress."""
    parser.add_argument(
        "-j",
        "-P",
        "--jobs",
        type=parse_jobs,
        default=None,
        metavar="N",
        help="jobs at once: N, +N/-N (CPUs plus/minus N), N%% of the CPUs, "
        f"0 = {MAX_JOBS} (default: one per CPU)",
    )
    parser.add_argument(
        "-k", "--keep-order", action="store_true", help="write outputs in input order"
    )
    parser.add_argument("--timeout", type=_positive, metavar="SECS", help="kill a job after SECS")
    parser.add_argument(
        "--retries",
        type=_count,
        default=0,
        metavar="N",
        help="rerun a failed job up to N more times",
    )
    parser.add_argument("--joblog", metavar="FILE", help="log each job (GNU parallel's format)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume", action="store_true", help="skip the jobs --joblog FILE shows as run"
    )
    resume.add_argument(
        "--resume-failed",
        action="store_true",
        help="skip the jobs --joblog FILE shows as succeeded (rerun failed and missing ones)",
    )
    halt = parser.add_mutually_exclusive_group()
    halt.add_argument(
        "--halt",
        type=parse_halt,
        default=None,
        metavar="WHEN,COND=N",
        help="stop after N failures (fail=N), successes or finished jobs: 'now' kills the "
        "running jobs, 'soon' lets them finish (e.g. now,fail=1)",
    )
    halt.add_argument(
        "--halt-on-error",
        dest="halt",
        action="store_const",
        const=Halt("now", "fail", 1),
        help="the same as --halt now,fail=1",
    )
    parser.add_argument("--bar", action="store_true", help="show progress on stderr")
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="serve a live page of the jobs on 127.0.0.1; its address is printed on stderr",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    """Where inputs come from and how they split, and the command template."""
    parser.add_argument(
        "-a",
        "--arg-file",
        action="append",
        default=[],
        metavar="FILE",
        help="read inputs from FILE, one per line ('-': stdin); repeat for more sources",
    )
    parser.add_argument(
        "-0", "--null", action="store_true", help="inputs in files and stdin end with NUL"
    )
    parser.add_argument(
        "--colsep", metavar="REGEX", help="split each input into columns {1} {2} ... at REGEX"
    )
    parser.add_argument(
        "template", metavar="COMMAND", nargs=argparse.REMAINDER, help="the command template"
    )
