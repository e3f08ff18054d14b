"""``workcrew map module:function [INPUT]``: a Python function over every line or JSON record.

EDGE module: uses only the public ``workcrew`` API.  Inputs are read lazily
(in the main thread, by ``Pool.imap``), results come back in input order and
are written as JSON lines::

    {"input": "a line", "output": <the function's result>}
    {"input": "a line", "error": {"type": "ValueError", "message": "..."}}

A line that is not valid JSON (with ``--json``) never reaches the pool: its
error record is written at its place, so the output has one record per input.
"""

from __future__ import annotations

import argparse
import builtins
import collections
import contextlib
import io
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import workcrew

from ._advise import load_function

__all__ = ("add_parser", "main")

#: As ``workcrew run``: exit statuses above 101 would collide with signals (128 + n).
MAX_EXIT_STATUS = 101

EXAMPLES = """\
examples:
  workcrew map mymod:clean words.txt                one call per line, one process per CPU
  workcrew map --json jobs:resize paths.jsonl       one call per JSON value
  cat urls.txt | workcrew map --kind thread -j 32 --timeout 10 --retries 2 net:fetch
  workcrew map mymod:clean words.txt | jq -c .output

output: one JSON object per input, in input order:
  {"input": ..., "output": ...}   or   {"input": ..., "error": {"type": ..., "message": ...}}
exit status: the number of failed inputs (at most 101); 2 for bad arguments; 130 on Ctrl-C.
MODULE is imported from the current directory too (like python -m).
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``workcrew map`` on the top-level parser's subcommands."""
    parser = commands.add_parser(
        "map",
        help="apply a Python function to every line or JSON record, write JSON lines",
        description=(
            "Call MODULE:FUNCTION on each line of INPUT (or each JSON value, with --json) on a\n"
            "workcrew.Pool, and write one JSON record per input to stdout, in input order.\n"
            "A failed call is a record with the error's type and message."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("function", metavar="MODULE:FUNCTION", help="the function to apply")
    parser.add_argument(
        "input", metavar="INPUT", nargs="?", default="-", help="a file; '-' or none: stdin"
    )
    parser.add_argument(
        "--json", action="store_true", help="each line is a JSON value (blank lines skipped)"
    )
    parser.add_argument(
        "--kind",
        choices=("process", "thread", "async", "auto"),
        default="process",
        help="worker kind (default process; thread for waiting, async for coroutines)",
    )
    parser.add_argument(
        "-j", "--jobs", type=_at_least(1), metavar="N", help="workers (default: the kind's)"
    )
    parser.add_argument(
        "--timeout", type=_positive, metavar="SECS", help="fail a call after SECS (task_timeout)"
    )
    parser.add_argument(
        "--retries",
        type=_at_least(0),
        default=0,
        metavar="N",
        help="retry a failed call up to N more times",
    )
    parser.add_argument("--bar", action="store_true", help="show progress on stderr")
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="serve a live page of the jobs on 127.0.0.1; its address is printed on stderr",
    )
    parser.set_defaults(main=lambda args: main(args, parser))


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {text!r}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value"
    return parse


class _Entry:
    """One input on its way: what it was, and why it cannot be called (bad JSON), if so."""

    __slots__ = ("error", "input")

    def __init__(self, value: Any, error: Exception | None = None) -> None:
        self.input = value
        self.error = error


def read_entries(
    stream: IO[str], as_json: bool, pending: collections.deque[_Entry]
) -> Iterator[Any]:
    """The function's arguments; every input (callable or not) is queued on ``pending``."""
    for line in stream:
        text = line[:-1] if line.endswith("\n") else line
        if not as_json:
            pending.append(_Entry(text))
            yield text
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            pending.append(_Entry(text, exc))
            continue
        pending.append(_Entry(value))
        yield value


def error_record(value: Any, exc: BaseException) -> dict[str, Any]:
    """``{"input": ..., "error": {"type": ..., "message": ...}}``."""
    cls = type(exc)
    name = getattr(exc, "type_name", "") or (
        cls.__qualname__
        if cls.__module__ == builtins.__name__
        else f"{cls.__module__}.{cls.__qualname__}"
    )
    return {"input": value, "error": {"type": name, "message": str(exc)}}


def dumps(record: dict[str, Any]) -> str:
    """One JSON line: UTF-8 text where possible, \\u escapes for undecodable input bytes."""
    try:
        text = json.dumps(record, ensure_ascii=False, allow_nan=False)
        text.encode()
    except UnicodeEncodeError:  # lone surrogates from undecodable input bytes
        text = json.dumps(record, allow_nan=False)
    return text


def open_input(path: str) -> IO[str]:
    """INPUT as text; bytes that are not UTF-8 survive as surrogates (round-trip)."""
    binary = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - the wrapper returned owns it
    return io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape")


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Entry point of ``workcrew map``; returns the exit status."""
    try:
        fn = load_function(args.function)
        stream = open_input(args.input)
    except (ValueError, ImportError, OSError) as exc:
        parser.error(str(exc))
    out, own = records_only_on_stdout()
    try:
        with stream, workcrew.Pool(args.jobs, kind=args.kind, dashboard=args.dashboard) as pool:
            return map_all(pool, fn, stream, args, out)
    except KeyboardInterrupt:
        print("workcrew map: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `workcrew map ... | head`: stop quietly, as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 128 + signal.SIGPIPE
    finally:
        if own:  # our duplicate of the real stdout (sys.stdout itself is never closed)
            with contextlib.suppress(OSError):
                out.close()


def records_only_on_stdout() -> tuple[IO[bytes], bool]:
    """The real stdout, for the records, and whether it is a duplicate this call made.

    From now on file descriptor 1 is stderr.

    Whatever else would reach stdout (the function's ``print`` on any worker
    kind, a program it starts, a C library) goes to stderr, so the records
    stay valid JSON lines for ``| jq``.  Done at the descriptor level: thread
    workers and their subprocesses share this process's fd 1.
    """
    sys.stdout.flush()
    try:
        stdout, stderr = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # streams without descriptors (embedded)
        return sys.stdout.buffer, False
    out = os.fdopen(os.dup(stdout), "wb")
    os.dup2(stderr, stdout)
    return out, True


def map_all(
    pool: workcrew.Pool,
    fn: Callable[..., Any],
    stream: IO[str],
    args: argparse.Namespace,
    out: IO[bytes],
) -> int:
    """Write one record per input, in order; return the number of failures (capped)."""
    pending: collections.deque[_Entry] = collections.deque()
    values = read_entries(stream, args.json, pending)
    results = pool.imap(
        fn, values, task_timeout=args.timeout, retries=args.retries, progress=args.bar
    )
    failed = 0
    while True:
        try:
            outcome: Any = next(results)
            ok = True
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - the item's own failure, written as a record
            outcome, ok = exc, False
        # Entries read while computing this result: bad JSON lines first, then its own input.
        failed += write_bad_entries(pending, out)
        if not pending:  # reading the input failed (an I/O error): no item to blame
            raise outcome
        entry = pending.popleft()
        record = (
            {"input": entry.input, "output": outcome} if ok else error_record(entry.input, outcome)
        )
        try:
            line = dumps(record)
        except (TypeError, ValueError) as exc:  # a result JSON cannot hold
            line, ok = dumps(error_record(entry.input, exc)), False
        out.write(line.encode() + b"\n")
        out.flush()
        failed += not ok
    failed += write_bad_entries(pending, out)  # bad JSON lines after the last good one
    out.flush()
    return min(failed, MAX_EXIT_STATUS)


def write_bad_entries(pending: collections.deque[_Entry], out: IO[bytes]) -> int:
    """Write the error records of the uncallable entries at the head of ``pending``."""
    count = 0
    while pending and (error := pending[0].error) is not None:
        out.write(dumps(error_record(pending.popleft().input, error)).encode() + b"\n")
        count += 1
    return count
