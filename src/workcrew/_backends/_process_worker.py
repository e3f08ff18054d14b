"""The main loop of a process worker (runs in the child process).

Protocol, one frame at a time (see ``_wire``)::

    worker                          master
      |  READY(pid) / INIT_FAILED  -->|     once, after the initializer
      |<-- CHUNK(seq, fns, chunk)     |     any number
      |  RESULT(seq, secs, outcome) ->|     one per chunk, in order
      |  LOAD_FAILED(seq, error)  --> |     a chunk that would not unpickle here
      |  LOG(record)  -->             |     any time, from any thread
      |<-- STOP / end of file         |     exit with status 0

Invariants: chunks are answered strictly in the order received, so the master
knows which chunk a worker was running when it died (the oldest unanswered).
Nothing but frames is ever written to the result pipe (log records included,
as LOG frames, from any thread: ``_wire`` writes a frame under a lock);
``print`` goes to the stdout pipe, a separate file (see ``_output``).
"""

from __future__ import annotations

import contextvars
import faulthandler
import gc
import os
import pickle
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable

from .._core._context import ENV_WORKER
from .._core._execute import (
    Failure,
    add_note,
    describe_call,
    is_awaitable,
    is_coroutine_function,
    new_event_loop,
    run_chunk,
    run_chunk_concurrently,
    run_chunk_timed,
    timer,
)
from .._core._fds import Inherited, close_inherited
from .._core._pickling import ForChild, PickledForChild
from .._core._state import WorkerState, bind_process
from .._sharing._buffers import BufferRef, Exporter, Imported, dumps_oob
from .._sharing._locks import release_holds
from . import _output, _wire
from ._output import LogLevels

# What a worker imports is paid by every worker, at every start (and by the
# forkserver, which preloads this module): typing, inspect, dataclasses,
# concurrent.futures and the exception classes (which load multiprocessing's
# connection machinery) are imported where they are needed, not here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any

__all__ = ("EncodedFailure", "RunSettings", "worker_main")

#: (exception pickle or None, type name, message, traceback text, call description)
EncodedFailure = tuple[bytes | None, str, str, str, str]


#: Exit status of a worker whose master is gone (its lifeline pipe closed).
ORPHAN_EXIT = 70
#: The process that imported this module.  A worker forked from the forkserver
#: finds the server's pid here: the server preloaded it (``_process_start``), so
#: the worker starts with its code in memory instead of importing it again.
IMPORTED_BY = os.getpid()


class RunSettings:
    """How a worker runs its chunks, fixed for its life (a plain class: no typing import)."""

    __slots__ = ("concurrency", "event_loop", "timed")

    def __init__(self, concurrency: int, event_loop: str, timed: bool) -> None:
        #: tasks of a chunk run at once (hybrid workers; 1: one after the other)
        self.concurrency = concurrency
        #: "auto", "asyncio" or "uvloop": the event loop of hybrid coroutines
        self.event_loop = event_loop
        #: time each task (the pool records a timeline)
        self.timed = timed


def worker_main(
    worker_id: int,
    conns: tuple[Any, Any, Any, Any, Any],
    init: ForChild | PickledForChild | None,
    inherited_fds: list[Inherited],
    native_threads: tuple[int, bool],
    settings: RunSettings,
    log_levels: LogLevels,
) -> None:
    """Entry point of a worker process; returns (exit status 0) on STOP or end of file.

    ``conns`` are the worker's ends of its task, result, stdout, stderr and
    lifeline pipes; ``log_levels`` the caller's logger levels (see _output.py).
    """
    task_conn, result_conn, stdout_conn, stderr_conn, lifeline_conn = conns
    # Objects inherited from the forking process (the caller under fork, the
    # server under forkserver) move to the collector's permanent generation:
    # a collection would otherwise write to every one of them, copying the
    # pages this worker shares with its parent (its memory would grow by the
    # size of everything the parent imported).
    gc.freeze()
    # Under fork the child inherits the master's ends of every pipe of every
    # pool in this process; holding them would keep pipes open after the
    # master dies, so drop them first.
    close_inherited(inherited_fds, keep={conn.fileno() for conn in conns})
    # stdout and stderr go to the master, which writes them line by line to
    # the caller's sys.stdout and sys.stderr and keeps stderr's last lines for
    # crash reports; faulthandler writes the Python stack to stderr on a fatal
    # signal (segfault, abort), so the report shows where it died.  Log
    # records go to the master as frames on the result pipe.
    _output.capture_stdio(stdout_conn.fileno(), stderr_conn.fileno())
    _output.forward_logging(result_conn.fileno(), log_levels)
    faulthandler.enable(file=2, all_threads=True)
    # Ctrl-C in a terminal signals the whole process group; the caller decides
    # what an interrupt means (cancel and terminate), workers must not print
    # their own KeyboardInterrupt tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_lifeline(lifeline_conn.fileno())
    os.environ[ENV_WORKER] = str(worker_id)
    _limit_native_threads(*native_threads)
    try:
        worker = _Worker(worker_id, task_conn.fileno(), result_conn.fileno(), settings)
        # Under fork this thread holds the context variables of the thread that
        # forked it: tasks submitted without variables must not see those.
        fresh = contextvars.Context()
        fresh.run(worker.run, init)
        fresh.run(worker.end_state)  # only after a graceful end (STOP): not after a kill or crash
    finally:
        # A pool a task left open must end before multiprocessing's exit code
        # joins this process's children (in a worker it runs before our
        # threading exit hook would).
        # (Only a task that made a pool imported the engine: no import here.)
        engine = sys.modules.get("workcrew._core._engine")
        if engine is not None:
            engine.shutdown_all()
        _run_exit_hooks()
        # os._exit runs no finalizers: give back this process's holds on
        # shared locks and values, or their slots would never be freed.
        release_holds()


def _run_exit_hooks() -> None:
    """Run the exit hooks of ``threading``, as an interpreter exiting would.

    Executors a task left open (``concurrent.futures``, loky under joblib)
    shut down in those hooks (``threading._register_atexit``), which a
    ``multiprocessing`` child never runs: its exit code joins every child
    process, theirs wait for a shutdown that never comes, and the worker
    could not exit.  Only the hooks run here, not the join of the threads a
    task left running (an exit would wait for those; a worker does not).
    The list and flag are private to ``threading`` (the same from 3.10 to
    3.13); the list is emptied, so an interpreter exit after this (a spawned
    worker's) runs nothing twice.
    """
    hooks = getattr(threading, "_threading_atexits", None)
    if not hooks:
        return
    threading._SHUTTING_DOWN = True  # type: ignore[attr-defined]  # as threading._shutdown: no new hooks
    while hooks:
        hook = hooks.pop()
        try:
            hook()
        except Exception:  # noqa: BLE001 - one library's failed shutdown must not stop the others
            import traceback

            traceback.print_exc()


#: Environment variables that size the thread pools of BLAS/OpenMP libraries.
NATIVE_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _limit_native_threads(threads: int, resize_loaded: bool) -> None:
    """Keep BLAS/OpenMP pools at ``threads`` so workers x their threads fit the CPUs.

    Variables the user set are left alone.  The variables work for libraries
    loaded from now on; with ``resize_loaded``, threadpoolctl also resizes
    libraries already loaded (a spawned worker whose main module imported NumPy).
    """
    for name in NATIVE_THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    if resize_loaded and ("numpy" in sys.modules or "scipy" in sys.modules):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return
        threadpool_limits(threads)


def _watch_lifeline(fd: int) -> None:
    """Exit at once when the master's process is gone, even in the middle of a task.

    Only the master holds the write end of the lifeline pipe and never writes
    to it: a read returns only at end of file, when the master process died
    (SIGKILL included) or let go of this worker.

    A thread waiting for that cannot run while a task holds the GIL in a long
    C call, nor while this process is stopped (SIGSTOP).  So on Linux the
    kernel itself is asked to end this process: the lifeline is put in
    asynchronous mode with SIGKILL as its signal, which the kernel sends when
    the pipe's last writer closes (SIGKILL reaches stopped processes too).
    Only where that cannot be armed (no F_SETSIG) does a thread watch the
    pipe instead: on Linux a worker runs no thread of its own while idle.
    """
    if _kill_me_when_closed(fd):
        return

    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os._exit(ORPHAN_EXIT)

    threading.Thread(target=watch, name="workcrew-lifeline", daemon=True).start()


def _kill_me_when_closed(fd: int) -> bool:
    """Have the kernel SIGKILL this process when the pipe ``fd`` reads from loses its writer.

    False where the kernel cannot be asked (not Linux, or it refused).
    """
    import fcntl

    set_signal = getattr(fcntl, "F_SETSIG", None)
    if set_signal is None:  # not Linux: the watchdog thread alone
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(fd, set_signal, signal.SIGKILL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    except OSError:  # a kernel that refuses: the watchdog thread alone
        return False
    return True


class _Worker:
    def __init__(
        self,
        worker_id: int,
        task_fd: int,
        result_fd: int,
        settings: RunSettings,
    ) -> None:
        self.timed = settings.timed
        self.event_loop = settings.event_loop
        self.worker_id = worker_id
        self.concurrency = settings.concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: ThreadPoolExecutor | None = None
        self.pid = os.getpid()
        self.task_fd = task_fd
        self.result_fd = result_fd
        self.functions: dict[int, Callable[..., Any] | BaseException] = {}
        self._imported = Imported()  # the master's argument buffers mapped here
        self._exporter = Exporter(reuse=False)  # result buffers, until the master maps them
        self._results_out: dict[int, list[int]] = {}  # first segment id -> segment ids

    def run(self, init: ForChild | PickledForChild | None) -> None:
        if not self._initialize(init):
            return
        _wire.write_frame(self.result_fd, _wire.READY, pickle.dumps(self.pid))
        self._base_context = contextvars.copy_context()
        held: deque[bytearray] = deque()  # chunks received while results await their RELEASE
        while True:
            frame = _wire.read_frame(self.task_fd)
            if frame is None or frame[0] == _wire.STOP:
                return
            if frame[0] == _wire.RELEASE:
                (first,) = _wire.SEQ.unpack_from(frame[1])
                self._exporter.release(self._results_out.pop(first, []))
            else:
                held.append(frame[1])
            # Results in shared segments are reachable only while this process
            # lives: no next chunk (which might crash it) until the master has
            # mapped them and said so.
            while held and not self._results_out:
                self._run_chunk(held.popleft())
                _flush_stdio()  # a line a task left unfinished survives a later kill

    #: this process's worker state (see _core/_state.py); None until the initializer ran
    state: WorkerState | None = None

    def _initialize(self, init: ForChild | PickledForChild | None) -> bool:
        try:
            hooks = (None, ()) if init is None else init.load()
            state = WorkerState.begin(*hooks)
            if is_awaitable(state.value):  # an async initializer: on this worker's loop
                state.value = self._event_loop().run_until_complete(state.value)
        except BaseException as exc:  # noqa: BLE001 - reported to the master, which breaks the pool
            failure = Failure(exc, _format(exc), "initializer")
            _wire.write_frame(
                self.result_fd, _wire.INIT_FAILED, pickle.dumps(self._encode(failure))
            )
            return False
        bind_process(state)
        self.state = state
        return True

    def end_state(self) -> None:
        """Call the pool's worker_exit with this worker's state (errors go to stderr)."""
        if self.state is not None:
            self.state.end(lambda aw: self._event_loop().run_until_complete(aw), _print_to_stderr)

    def _run_chunk(self, payload: bytearray) -> None:
        start = timer()
        (seq,) = _wire.SEQ.unpack_from(payload)
        try:
            _, refs, at = _wire.unpack_sidecar(payload, _wire.SEQ.size)
            buffers = self._imported.map(refs) if refs else None
            reset, new_functions, chunk = pickle.loads(memoryview(payload)[at:], buffers=buffers)
        except BaseException as exc:  # noqa: BLE001 - the master fails or splits that chunk
            message = f"could not unpickle the task in worker {self.worker_id}: {_describe(exc)}"
            _wire.write_frame(self.result_fd, _wire.LOAD_FAILED, pickle.dumps((seq, message)))
            return
        del buffers
        if reset:
            self.functions.clear()
        for key, blob in new_functions:
            self.functions[key] = _load_function(blob)
        # A fresh copy of the context the initializer left, per chunk: a
        # variable a task sets does not reach later chunks.
        outcome = self._base_context.copy().run(self._run_items, *chunk)
        body, result_refs = self._pack_result(seq, outcome, chunk)
        # The chunk's arguments are dropped now, so the segments they were
        # built over can be unmapped (those a task kept stay mapped for now).
        del outcome, chunk
        released = self._imported.release_unused()
        sidecar = _wire.pack_sidecar(released, result_refs)
        duration = _wire.DURATION.pack(timer() - start)
        _wire.write_frame(self.result_fd, _wire.RESULT, duration, sidecar, body)

    def _run_items(
        self, key: int, mode: int, items: list[Any], skip: frozenset[int] | None
    ) -> tuple[Any, ...]:
        """The chunk's outcome as sent: (values, encoded failures or None, spans or None)."""
        fn = self.functions[key]
        if isinstance(fn, BaseException):
            failure = _encode_error(fn, "")
            return [None] * len(items), dict.fromkeys(range(len(items)), failure), None
        if self.concurrency > 1 or is_coroutine_function(fn):
            outcome = run_chunk_concurrently(
                fn,
                mode,
                items,
                skip,
                self.concurrency,
                loop=self._event_loop(),
                threads=self._thread_pool(),
                timed=self.timed,
            )
        elif self.timed:
            outcome = run_chunk_timed(fn, mode, items, skip)
        else:
            outcome = run_chunk(fn, mode, items, skip)
        failures = outcome.failures
        encoded = {i: self._encode(f) for i, f in failures.items()} if failures else None
        return outcome.values, encoded, outcome.spans

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = new_event_loop(self.event_loop)
        return self._loop

    def _thread_pool(self) -> ThreadPoolExecutor | None:
        if self._threads is None and self.concurrency > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._threads = ThreadPoolExecutor(self.concurrency, "workcrew-task")
        return self._threads

    def _encode(self, failure: Failure) -> EncodedFailure:
        exc = failure.exc
        add_note(
            exc, f"workcrew: raised in worker {self.worker_id} (pid {self.pid}) by {failure.call}"
        )
        tb = f"worker {self.worker_id} (pid {self.pid}) running {failure.call}:\n{failure.tb}"
        blob: bytes | None
        try:
            blob = _wire.dumps(exc)
            pickle.loads(blob)  # the caller must be able to rebuild it, not just us to write it
        except BaseException:  # noqa: BLE001 - sent as text instead; TaskFailed carries it
            blob = None
        return blob, _qualname(type(exc)), _safe_str(exc), tb, failure.call

    def _pack_result(
        self, seq: int, outcome: tuple[Any, ...], chunk: tuple[Any, ...]
    ) -> tuple[bytes, list[BufferRef]]:
        """The RESULT body, and the refs of large result buffers written to segments."""
        try:
            body, buffers = dumps_oob((seq, outcome))
        # BaseException: a result whose pickling raises SystemExit must fail
        # that task, not end this worker (the standard library sends it back).
        except BaseException:  # noqa: BLE001 - find the values that do not pickle, fail only those
            values, failures, spans = outcome
            outcome = (*self._isolate_results(values, failures, chunk), spans)
            body, buffers = dumps_oob((seq, outcome))
        if not buffers:
            return body, []
        refs = self._exporter.export(buffers)
        self._results_out[refs[0].id] = [ref.id for ref in refs]
        return body, refs

    def _isolate_results(
        self, values: list[Any], failures: dict[int, EncodedFailure] | None, chunk: Any
    ) -> tuple[list[Any], dict[int, EncodedFailure] | None]:
        key, mode, items, _ = chunk
        failures = dict(failures or {})
        for i, value in enumerate(values):
            try:
                _wire.dumps(value)
            except BaseException as exc:  # noqa: BLE001 - this value is the culprit
                values[i] = None
                fn = self.functions[key]
                call = describe_call(fn, mode, items[i]) if callable(fn) else "the task"
                message = (
                    f"the result of {call} could not be pickled in worker {self.worker_id} "
                    f"to return it: {type(value).__qualname__} object ({_describe(exc)}). "
                    "Return plain data (numbers, strings, lists, dicts, dataclasses), "
                    "or make the type picklable."
                )
                failures[i] = _encode_error(_serialization_error(message, exc), call)
        return values, failures


def _load_function(blob: bytes) -> Callable[..., Any] | BaseException:
    try:
        # cloudpickle.loads is pickle.loads: a function sent by value names
        # cloudpickle's helpers, and loading it imports cloudpickle then; one
        # sent by reference (most) does not, and this worker never loads it.
        fn: Callable[..., Any] = pickle.loads(blob)
    except BaseException as exc:  # noqa: BLE001 - every task of this function reports it
        return _serialization_error(
            f"could not unpickle the task's function in the worker: {_describe(exc)}. "
            "Define the function in an importable module (not only in an interactive "
            "session), and make sure the worker can import everything it uses.",
            loading=True,
        )
    return fn


def _serialization_error(
    message: str, cause: BaseException | None = None, *, loading: bool = False
) -> BaseException:
    # The exception classes load multiprocessing's connection machinery (their
    # bases): only a worker that has an error to report pays for them.
    from .._core._exceptions import serialization_error

    return serialization_error(message, loading=loading, cause=cause)


def _encode_error(exc: BaseException, call: str) -> EncodedFailure:
    """A workcrew error made here, sent as itself (or as text if it will not pickle)."""
    try:
        blob: bytes | None = _wire.dumps(exc)
    except Exception:  # noqa: BLE001 - e.g. the original error's type is local to a function
        blob = None
    return blob, "workcrew.SerializationError", str(exc), "", call


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a task replaced or closed the stream: its business
            pass


def _print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # forwarded by the master, kept for reports


def _format(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_safe_str(exc)}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error itself
        return f"<{type(exc).__name__} with unprintable message>"


def _qualname(cls: type) -> str:
    return (
        f"{cls.__module__}.{cls.__qualname__}" if cls.__module__ != "builtins" else cls.__qualname__
    )
