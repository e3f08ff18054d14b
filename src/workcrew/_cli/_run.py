"""``workcrew run``: shell commands in parallel, in GNU parallel's spelling.

EDGE module: uses only the public ``workcrew`` API.  The jobs run on a
``workcrew.Pool(kind="thread")``: each worker thread starts one ``/bin/sh -c``
process at a time and waits for it, so ``-j N`` threads are ``N`` job slots.

Data flow::

    inputs (::: groups, :::: / -a files, stdin) -> jobs() generator, in the main thread
        -> pool.imap(runner, jobs) -> Runner.__call__ in a worker thread:
             render the command (every input shell-quoted), spawn it in its own
             process group, capture stdout and stderr whole, retry, time out
        -> Outcome records back in the main thread: output written in one piece
           per job, the joblog line, the failure count (the exit status)

Bytes end to end: inputs from ``:::`` are ``os.fsencode``d command-line
arguments, files and stdin are read as bytes, and the command is handed to
``/bin/sh`` as bytes, so no input is ever decoded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO

import workcrew

from ._run_args import Halt, split_sources
from ._run_args import add_parser as _add_parser

__all__ = ("add_parser", "main", "split_sources")

#: The shell that runs every command.  Fixed rather than ``$SHELL`` (GNU parallel's choice) so
#: that a command means the same on every machine; it is also the fastest to start (dash).
SHELL = b"/bin/sh"
#: Seconds between SIGTERM and SIGKILL when a job is killed (timeout, halt now, Ctrl-C).
KILL_GRACE = 0.5
#: GNU parallel's cap: exit statuses above 101 would collide with signals (128 + n).
MAX_EXIT_STATUS = 101
#: The exit value of a job that could not be started (the shell's "cannot execute").
CANNOT_START = 126
JOBLOG_HEADER = b"Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``workcrew run`` on the top-level parser's subcommands."""
    _add_parser(commands, main)


# -- command templates ---------------------------------------------------------------------

PLACEHOLDER = re.compile(rb"\{(?:(#)|(%)|(\d*)(//|/\.|/|\.)?)\}")


def _no_extension(path: bytes) -> bytes:
    return re.sub(rb"\.[^/.]*$", b"", path)  # GNU parallel's rule: "a.tar.gz" -> "a.tar"


def _basename(path: bytes) -> bytes:
    return path.rpartition(b"/")[2]


def _dirname(path: bytes) -> bytes:
    # Perl's File::Basename::dirname, as GNU parallel: "a/b/" -> "a", "f" -> ".", "/" -> "/"
    stripped = path.rstrip(b"/")
    if not stripped:
        return b"/" if path else b"."
    head = stripped.rpartition(b"/")[0].rstrip(b"/")
    if head:
        return head
    return b"/" if stripped.startswith(b"/") else b"."


TRANSFORMS: dict[bytes | None, Callable[[bytes], bytes]] = {
    None: lambda path: path,
    b".": _no_extension,
    b"/": _basename,
    b"//": _dirname,
    b"/.": lambda path: _no_extension(_basename(path)),
}


def quote(arg: bytes) -> bytes:
    """``shlex.quote`` over bytes (undecodable bytes pass through as surrogates)."""
    return os.fsencode(shlex.quote(os.fsdecode(arg)))


class Template:
    """A command with placeholders, parsed once and rendered per job."""

    def __init__(self, words: Sequence[str]) -> None:
        self.text = b" ".join(os.fsencode(word) for word in words)
        self.parts: list[bytes | tuple[str, int, bytes | None]] = []
        position = 0
        for match in PLACEHOLDER.finditer(self.text):
            self.parts.append(self.text[position : match.start()])
            if match[1] or match[2]:
                self.parts.append(("#" if match[1] else "%", 0, None))
            else:
                self.parts.append(("input", int(match[3] or 0), match[4]))
            position = match.end()
        self.parts.append(self.text[position:])
        # Sources referred to by number ({2}): the caller checks they exist.
        self.max_source = max((p[1] for p in self.parts if isinstance(p, tuple)), default=0)
        if len(self.parts) == 1 and self.text:  # no placeholder: append the inputs
            self.parts += [b" ", ("input", 0, None), b""]

    def render(self, args: tuple[bytes, ...], seq: int, slot: int) -> bytes:
        """The command of one job: every input quoted, so no input is shell code."""
        if not self.text:  # no command: each input is a command itself (GNU parallel)
            return b" ".join(args)
        out = []
        for part in self.parts:
            if isinstance(part, bytes):
                out.append(part)
                continue
            kind, source, transform = part
            if kind == "#":
                out.append(b"%d" % seq)
            elif kind == "%":
                out.append(b"%d" % slot)
            else:
                chosen = args if source == 0 else args[source - 1 : source] or (b"",)
                out.append(b" ".join(quote(TRANSFORMS[transform](a)) for a in chosen))
        return b"".join(out)


# -- inputs ---------------------------------------------------------------------------------


def read_records(stream: IO[bytes], separator: bytes) -> Iterator[bytes]:
    """Records of ``stream`` ending with ``separator`` (the last may lack it), read lazily."""
    pending = b""
    read = getattr(stream, "read1", stream.read)
    while chunk := read(1 << 16):
        records = (pending + chunk).split(separator)
        pending = records.pop()
        yield from records
    if pending:
        yield pending


def open_sources(
    groups: list[tuple[str, list[str]]], arg_files: list[str], separator: bytes
) -> list[Iterable[bytes]]:
    """One iterable of inputs per source: ``:::`` words, ``::::``/``-a`` files, else stdin."""
    sources: list[Iterable[bytes]] = []

    def add_file(path: str) -> None:  # opened before any job runs: a missing file is an error
        stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - read lazily while jobs run
        sources.append(read_records(stream, separator))

    for path in arg_files:
        add_file(path)
    for mark, words in groups:
        if mark == ":::":
            sources.append([os.fsencode(word) for word in words])
        else:
            for path in words:
                add_file(path)
    if not sources:
        sources.append(read_records(sys.stdin.buffer, separator))
    return sources


def combine(
    sources: list[Iterable[bytes]], colsep: re.Pattern[bytes] | None
) -> Iterator[tuple[bytes, ...]]:
    """Every combination of the sources (the last varies fastest), split at ``colsep``."""
    if len(sources) == 1:  # stays lazy: stdin may be endless
        combos: Iterator[tuple[bytes, ...]] = ((arg,) for arg in sources[0])
    else:
        combos = itertools.product(*sources)
    if colsep is None:
        return combos
    return (tuple(col for arg in args for col in colsep.split(arg)) for args in combos)


# -- the joblog -------------------------------------------------------------------------------


def read_joblog(path: str) -> dict[int, bool]:
    """Job number -> whether its last logged run succeeded (a missing file: nothing ran)."""
    runs: dict[int, bool] = {}
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as log:
        for line in log:
            fields = line.split(b"\t", 8)
            with contextlib.suppress(ValueError, IndexError):  # the header, a torn last line
                runs[int(fields[0])] = int(fields[6]) == 0 and int(fields[7]) == 0
    return runs


def open_joblog(path: str, append: bool) -> IO[bytes]:
    """The joblog, appended to when resuming, else started afresh with GNU parallel's header."""
    log = open(path, "ab" if append else "wb")  # noqa: SIM115 - closed by main's ExitStack
    try:
        if log.tell() == 0:
            log.write(JOBLOG_HEADER)
            log.flush()  # a full disk (/dev/full) says so now, before any job runs
    except OSError:
        with contextlib.suppress(OSError):
            log.close()
        raise
    return log


def joblog_line(outcome: Outcome) -> bytes:
    """GNU parallel's joblog line; a newline in the command is written as NUL, as it does."""
    fields = b"%d\t:\t%.3f\t%10.3f\t0\t%d\t%d\t%d\t" % (
        outcome.seq,
        outcome.start,
        outcome.runtime,
        len(outcome.out),
        outcome.exitval,
        outcome.signal,
    )
    return fields + outcome.command.replace(b"\n", b"\0") + b"\n"


# -- running the jobs -------------------------------------------------------------------------

RAN, SKIPPED, KILLED = "ran", "skipped", "killed"


@dataclasses.dataclass(frozen=True)
class Job:
    """One job to run: its number (from 1, the joblog's Seq) and its inputs."""

    seq: int
    args: tuple[bytes, ...]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to a job; ``state`` is RAN, SKIPPED (after a halt) or KILLED (halt now)."""

    seq: int
    state: str
    command: bytes = b""
    start: float = 0.0
    runtime: float = 0.0
    exitval: int = 0
    signal: int = 0
    out: bytes = b""
    err: bytes = b""
    timed_out: bool = False
    halt_reason: str = ""

    @property
    def failed(self) -> bool:
        """A non-zero exit status, a signal or a timeout."""
        return self.exitval != 0 or self.signal != 0


class Runner:
    """Runs jobs in the pool's threads; shared state is guarded by one lock.

    ``halted`` only goes from False to True.  A job checks it before starting;
    a job's process is registered in ``_running`` under the lock, and a halt
    "now" (or Ctrl-C) kills whatever is registered and sets ``_kill_new`` under
    the same lock, so a job that registers afterwards kills itself: none
    escapes the kill.  Calling the runner runs one job.
    """

    def __init__(
        self, template: Template, slots: int, timeout: float | None, retries: int, halt: Halt | None
    ) -> None:
        self.template = template
        self.timeout = timeout
        self.retries = retries
        self.halt = halt
        self.halted = False
        self._kill_new = False  # halted "now": a job that registers from now on is killed
        self._free_slots = list(range(slots, 0, -1))  # {%}: popped from the end, 1 first
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._killed: set[int] = set()  # jobs killed by a halt: not logged, rerun by --resume
        self._counts = {"fail": 0, "success": 0, "done": 0}
        # The name the progress display shows ("workcrew run: 50 tasks, ..."), read by the
        # pool as a function's module-qualified name.
        self.__dict__.update(__qualname__="workcrew run", __module__=None)

    def __call__(self, job: Job) -> Outcome:
        """Run one job (with its retries) in this worker thread."""
        if self.halted:
            return Outcome(job.seq, SKIPPED)
        with self._lock:
            slot = self._free_slots.pop()
        try:
            command = self.template.render(job.args, job.seq, slot)
            for _ in range(self.retries + 1):
                outcome = self._attempt(job.seq, command)
                if not outcome.failed or self.halted:
                    break
            return self._settle(outcome)
        finally:
            with self._lock:
                self._free_slots.append(slot)

    def _attempt(self, seq: int, command: bytes) -> Outcome:
        start, began = time.time(), time.perf_counter()
        try:
            proc = subprocess.Popen(
                [SHELL, b"-c", command],
                stdin=subprocess.DEVNULL,  # jobs never read our stdin (it may hold the inputs)
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: a kill reaches its children
            )
        except (OSError, ValueError) as exc:  # a NUL byte in an input, a command too long
            err = f"workcrew run: job {seq} could not start: {exc}\n".encode()
            return Outcome(seq, RAN, command, start, 0.0, CANNOT_START, 0, b"", err)
        with self._lock:
            self._running[seq] = proc
            late = self._kill_new
            if late:
                self._killed.add(seq)
        if late:
            terminate([proc])
        timed_out = False
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            terminate([proc])
            out, err = proc.communicate()
        finally:
            with self._lock:
                del self._running[seq]
                killed = seq in self._killed
        runtime = time.perf_counter() - began
        code = proc.returncode
        if killed and code < 0:
            return Outcome(seq, KILLED)
        exitval, sig = (-1, -code) if timed_out else (max(code, 0), max(-code, 0))
        return Outcome(seq, RAN, command, start, runtime, exitval, sig, out, err, timed_out)

    def _settle(self, outcome: Outcome) -> Outcome:
        """Count the final outcome of a job; halt if this outcome reaches the --halt count."""
        if outcome.state != RAN:
            return outcome
        with self._lock:
            counts = self._counts
            counts["done"] += 1
            counts["fail" if outcome.failed else "success"] += 1
            halt = self.halt
            if self.halted or halt is None or counts[halt.what] < halt.limit:
                return outcome
            self.halted = True
            victims = self._kill_running() if halt.when == "now" else []
        terminate(victims)
        reason = f"halting (--halt {halt}) after job {outcome.seq}"
        return dataclasses.replace(outcome, halt_reason=reason)

    def stop(self) -> None:
        """Ctrl-C or SIGTERM: start nothing more, kill the running jobs."""
        with self._lock:
            self.halted = True
            victims = self._kill_running()
        terminate(victims)

    def _kill_running(self) -> list[subprocess.Popen[bytes]]:
        # Under the lock: mark every running job (and any that registers later) as killed.
        self._kill_new = True
        self._killed.update(self._running)
        return list(self._running.values())


def terminate(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each job's process group, SIGKILL after KILL_GRACE (GNU parallel: TERM, KILL)."""
    for proc in procs:
        _killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.monotonic()))
    for proc in procs:  # children that ignored SIGTERM, or a leader that did
        _killpg(proc.pid, signal.SIGKILL)


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


# -- main -------------------------------------------------------------------------------------


class _Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the running jobs are killed on the way out."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Interrupted


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Entry point of ``workcrew run``; returns the exit status."""
    words = args.template[1:] if args.template[:1] == ["--"] else args.template
    template = Template(words)
    if (args.resume or args.resume_failed) and not args.joblog:
        parser.error("--resume and --resume-failed need --joblog FILE")
    colsep = None
    if args.colsep is not None:
        try:
            colsep = re.compile(os.fsencode(args.colsep))
        except re.error as exc:
            parser.error(f"--colsep: {exc}")
    separator = b"\0" if args.null else b"\n"
    try:
        sources = open_sources(args.sources, args.arg_file, separator)
    except OSError as exc:
        parser.error(f"cannot read inputs: {exc}")
    if colsep is None and template.max_source > len(sources):
        parser.error(
            f"the command uses {{{template.max_source}}} but there are {len(sources)} "
            "input sources (one per ::: or :::: group or -a file)"
        )
    skip: set[int] = set()
    if args.resume or args.resume_failed:
        try:
            logged = read_joblog(args.joblog)
        except OSError as exc:
            parser.error(f"--joblog {args.joblog}: cannot read it: {exc.strerror or exc}")
        skip = set(logged) if args.resume else {seq for seq, ok in logged.items() if ok}
    slots = args.jobs or workcrew.available_cpu_count()
    inputs = combine(sources, colsep)
    if args.dry_run:
        return dry_run(template, inputs, skip, slots)
    runner = Runner(template, slots, args.timeout, args.retries, args.halt)
    items, total = jobs(runner, inputs, skip), count_jobs(sources, skip)
    todo: Iterable[Job] = items if total is None else Counted(items, total)
    signal.signal(signal.SIGTERM, _on_sigterm)
    with contextlib.ExitStack() as stack:
        log = None
        if args.joblog:
            try:
                log = stack.enter_context(
                    open_joblog(args.joblog, args.resume or args.resume_failed)
                )
            except OSError as exc:  # a usage error: one line, exit status 2, no job run
                parser.error(f"--joblog {args.joblog}: cannot write it: {exc.strerror or exc}")
        try:
            return run_all(
                runner, todo, slots, args.keep_order, log, bar=args.bar, dashboard=args.dashboard
            )
        except KeyboardInterrupt as exc:
            runner.stop()
            print("workcrew run: interrupted; running jobs killed", file=sys.stderr)
            return 143 if isinstance(exc, _Interrupted) else 130
        except BrokenPipeError:  # `workcrew run ... | head`: stop quietly, as SIGPIPE would
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + signal.SIGPIPE


def jobs(runner: Runner, inputs: Iterable[tuple[bytes, ...]], skip: set[int]) -> Iterator[Job]:
    """The jobs to run, read lazily in the main thread; none after a halt."""
    for seq, args in enumerate(inputs, 1):
        if runner.halted:
            return
        if seq not in skip:
            yield Job(seq, args)


def count_jobs(sources: list[Iterable[bytes]], skip: set[int]) -> int | None:
    """How many jobs will run, when every source is a ``:::`` list (else unknown)."""
    lengths = [len(source) for source in sources if isinstance(source, list)]
    if len(lengths) < len(sources):
        return None
    count = math.prod(lengths)
    return count - sum(1 for seq in skip if seq <= count)


class Counted:
    """Jobs whose number is known: ``len()`` gives the progress bar its total."""

    def __init__(self, items: Iterator[Job], length: int) -> None:
        self.items, self.length = items, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Job]:
        return self.items


def run_all(
    runner: Runner,
    todo: Iterable[Job],
    slots: int,
    keep_order: bool,
    log: IO[bytes] | None,
    *,
    bar: bool,
    dashboard: bool,
) -> int:
    """Run every job on a thread pool; write outputs and the joblog; return the exit status."""
    failed = 0
    stdout, stderr = sys.stdout.buffer, sys.stderr.buffer
    with workcrew.Pool(slots, kind="thread", dashboard=dashboard) as pool:
        mapper = pool.imap if keep_order else pool.imap_unordered
        # chunksize=1: a job starts as soon as a slot is free, as in GNU parallel
        outcomes = mapper(runner, todo, 1, progress=bar)
        try:
            for outcome in outcomes:
                if outcome.state == RAN:
                    report(outcome, runner.timeout, stdout, stderr, log)
                    failed += outcome.failed
        except BaseException:  # Ctrl-C, SIGTERM, a closed stdout, a bug: kill what runs
            runner.stop()  # before the pool's exit, which would wait for the running jobs
            raise
    return min(failed, MAX_EXIT_STATUS)


def report(
    outcome: Outcome,
    timeout: float | None,
    stdout: IO[bytes],
    stderr: IO[bytes],
    log: IO[bytes] | None,
) -> None:
    """Write a job's output whole, its messages, then its joblog line."""
    stdout.write(outcome.out)
    stdout.flush()
    stderr.write(outcome.err)
    if outcome.timed_out:
        stderr.write(
            b"workcrew run: job %d timed out after %g s and was killed: %s\n"
            % (outcome.seq, timeout or 0, outcome.command)
        )
    if outcome.halt_reason:
        stderr.write(b"workcrew run: %s: %s\n" % (outcome.halt_reason.encode(), outcome.command))
    stderr.flush()
    if log is not None:  # logged once its output is out: --resume never loses output
        log.write(joblog_line(outcome))
        log.flush()


def dry_run(
    template: Template, inputs: Iterable[tuple[bytes, ...]], skip: set[int], slots: int
) -> int:
    """``--dry-run``: print each command ({%} as if slots were used in turn)."""
    out = sys.stdout.buffer
    for seq, args in enumerate(inputs, 1):
        if seq not in skip:
            out.write(template.render(args, seq, (seq - 1) % slots + 1) + b"\n")
    out.flush()
    return 0
