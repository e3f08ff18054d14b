"""The caller's side of a pool: submission, shutdown and lifetime.

:class:`Engine` is what the front ends (``Pool``, ``Executor``) are built on,
through the :class:`~._engine_api.PoolEngine` protocol it satisfies (as
``kind="auto"``'s ``AutoEngine`` does; where one kind runs every task,
routing is refused or empty).
It is safe to use from many threads at once: its only shared state is the
``_accepting`` flag, guarded by ``_lock``; everything else is posted to the
master thread.  Posting under the lock orders it: a job accepted before
``close()`` is always in the master's inbox before the close itself.

Lifetime: an engine that is garbage-collected or still open at interpreter
exit is shut down (terminated, or drained if ``drain_at_exit``), so no worker
and no thread outlives it.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future

from ._backend import WorkerBackend
from ._carry import carry
from ._context import in_worker
from ._exceptions import NestedPoolWarning, PoolClosedError
from ._jobs import CallJob, Job, ListJob, StreamJob, Tally
from ._master import Master
from ._options import PoolOptions, TaskPolicy

TYPE_CHECKING = False  # no typing at run time (see _backend.Chunk)
if TYPE_CHECKING:
    from typing import Any

    from ._auto_policy import KindChoice  # only kind="auto" loads the router's module
    from ._stats import PoolStatistics, TaskSpan  # loaded when statistics are asked for

__all__ = (
    "Engine",
    "check_callable",
    "check_owner",
    "pool_closed",
    "shutdown_all",
    "task_key",
    "warn_if_nested",
)

_live: weakref.WeakSet[Engine] = weakref.WeakSet()
#: set once the interpreter exits (the exit hook below ran): refusals then say so
_exiting = False


class Engine:
    """Submission and shutdown for one master (see the module docstring)."""

    def __init__(
        self,
        options: PoolOptions,
        backend_class: type[WorkerBackend],
        *,
        drain_at_exit: bool,
        warn_nested: bool = True,
    ) -> None:
        self.options = options
        self.drain_at_exit = drain_at_exit
        self.pid = os.getpid()
        if warn_nested:
            warn_if_nested(options)
        self._lock = threading.Lock()
        self._accepting = True
        self._forked = 0  # workers this engine started itself (start_eagerly kinds)
        self._master = Master(options, backend_class)
        _live.add(self)

    # -- submission ------------------------------------------------------------------

    def submit_call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: TaskPolicy | None = None,
        context: contextvars.Context | None = None,
    ) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` once; its future resolves with the outcome.

        The task runs in ``context``: by default the caller's context
        variables, copied now, as for every submission (see _carry.py).
        """
        check_callable(fn)
        self._master.backend.check_function(fn)
        job = CallJob(carry(fn, context), args, kwargs, task_key(fn))
        job.policy = policy or self.options.policy
        if self._master.backend.can_kill:
            job.future.cancel_running = _canceller(self._master, weakref.ref(job))
        self._post(job)
        return job.future

    def submit_list(
        self,
        fn: Callable[..., Any],
        mode: int,
        items: list[Any],
        chunksize: int | None,
        policy: TaskPolicy | None = None,
        context: contextvars.Context | None = None,
        tally: Tally | None = None,
    ) -> Future[list[Any]]:
        """Run ``fn`` on every item; the future resolves with all results in order.

        ``tally`` counts outcomes as they arrive (progress displays read it).
        """
        check_callable(fn)
        self._master.backend.check_function(fn)
        chunksize = chunksize or self.options.chunksize
        job = ListJob(carry(fn, context), mode, items, task_key(fn), chunksize)
        job.policy = policy or self.options.policy
        job.tally = tally
        if items:
            self._post(job)
        else:
            self._check_open()
        return job.future

    def stream(
        self,
        fn: Callable[..., Any],
        mode: int,
        iterable: Iterable[Any],
        chunksize: int | None,
        *,
        ordered: bool,
        policy: TaskPolicy | None = None,
        context: contextvars.Context | None = None,
        tally: Tally | None = None,
    ) -> StreamJob:
        """Run ``fn`` on items pulled lazily from ``iterable``; read results from the job."""
        check_callable(fn)
        self._master.backend.check_function(fn)
        job = StreamJob(
            carry(fn, context),
            mode,
            iterable,
            task_key(fn),
            chunksize or self.options.chunksize,
            ordered,
            self.options.workers,
            self._on_input,
        )
        job.policy = policy or self.options.policy
        job.tally = tally
        self._post(job)
        return job

    def _post(self, job: Job) -> None:
        with self._lock:
            self._check_open()
            master = self._master
            if master.backend.start_eagerly:
                self._start_workers_for(job)
            master.call_soon_threadsafe(lambda: master.add_job(job))
        if not isinstance(job, StreamJob):  # lazy input is counted as it is sent
            master.recorder.submit(1 if isinstance(job, CallJob) else job.remaining or 0)

    def statistics(self) -> PoolStatistics:
        """A snapshot of this pool's workers and tasks (any thread, also after join)."""
        snapshot = self._master.recorder.snapshot()
        lost = self._master.backend.lost_workers()
        if not lost:
            return snapshot
        from ._stats import with_lost_workers

        return with_lost_workers(snapshot, lost)

    def timeline(self) -> tuple[TaskSpan, ...]:
        """Every task's span so far (the pool's ``timeline`` option records them)."""
        return self._master.recorder.timeline()

    def live(self) -> list[tuple[str, dict[str, Any]]]:
        """The live view a dashboard shows, by worker kind (``dashboard=True``; else empty)."""
        live = self._master.live
        return [] if live is None else [(self._master.options.kind, live.view())]

    def start_all(self) -> None:
        """Start every worker now rather than on demand.

        ``Pool`` does this when it has an ``initializer``, as
        ``multiprocessing.Pool`` starts its workers at once: the initializer's
        effects (a counter, a log line, a connection) are then there even if
        no task ever runs.
        """
        with self._lock:
            self._check_open()
            master = self._master
            if master.backend.start_eagerly:
                self._fork_workers(self.options.workers)
            else:
                master.call_soon_threadsafe(master.start_all)

    def _start_workers_for(self, job: Job) -> None:
        """Fork the workers ``job`` can use, from this (the caller's) thread.

        One more per single call, as many as items for a map, up to the pool
        size; the master adopts them (under the lock: in order with the job).
        """
        self._fork_workers(
            1 if isinstance(job, CallJob) else (job.remaining or self.options.workers)
        )

    def _fork_workers(self, want: int) -> None:
        master = self._master
        while self._forked < self.options.workers and want > 0:
            handle = master.backend.prepare_worker(master.next_worker_id(), master)
            self._forked += 1
            want -= 1
            master.call_soon_threadsafe(functools.partial(master.adopt, handle))

    def _check_open(self) -> None:
        check_owner(self.pid)
        broken = self._master.broken
        if broken is not None:
            from ._broken import BrokenPoolError  # loaded already: it made ``broken``

            cls = type(broken) if isinstance(broken, BrokenPoolError) else BrokenPoolError
            raise cls(f"the pool is broken: {broken}") from broken
        if not self._accepting:
            raise pool_closed()

    def _on_input(self, job: StreamJob) -> None:
        # A stream job found starved by the master got new input: wake the master.
        self._master.call_soon_threadsafe(self._master.wake)

    # -- routing: one kind runs every task ---------------------------------------------

    def set_kind(self, fn: Callable[..., Any], kind: str) -> None:
        """ValueError: only a ``kind="auto"`` pool routes functions (see ``AutoEngine``)."""
        raise ValueError(
            "set_kind() routes functions of a kind='auto' pool; this pool runs every task on "
            "its one kind. Create the pool with kind='auto', or pick the kind at construction."
        )

    def kind_choices(self) -> list[KindChoice]:
        """No routing decisions: every task runs on this engine's one kind."""
        return []

    # -- shutdown ----------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """True until close, terminate or shutdown."""
        return self._accepting

    def close(self) -> None:
        """Accept no new work; queued work still runs, then workers exit."""
        with self._lock:
            self._accepting = False
            self._master.call_soon_threadsafe(self._master.close)

    def cancel_pending(self) -> None:
        """Cancel every task that has not started (``shutdown(cancel_futures=True)``)."""
        self._master.call_soon_threadsafe(self._master.cancel_pending)

    def terminate(self) -> None:
        """Fail pending work with TaskCancelled, stop every worker now, and wait for them."""
        with self._lock:
            self._accepting = False
            self._master.call_soon_threadsafe(self._master.terminate)
        self.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every worker and the master thread have ended; True if they have."""
        thread = self._master.thread
        if thread is threading.current_thread():
            return False  # a callback running on the master cannot wait for the master
        thread.join(timeout)
        return not thread.is_alive()

    def _at_exit(self) -> None:
        if self.drain_at_exit:
            self.close()
            self.join()
        else:
            self.terminate()


def _canceller(master: Master, job: weakref.ref[CallJob]) -> Callable[[], None]:
    """What a running task's ``future.cancel()`` calls: kill its worker.

    The future must not hold its job: the job holds the function and its
    arguments, and a future the caller keeps would keep them alive (a cycle
    through the job would keep them until a garbage collection).
    """

    def cancel_running() -> None:
        target = job()
        if target is not None:  # else it finished and was dropped: nothing runs
            master.call_soon_threadsafe(lambda: master.cancel_running(target))

    return cancel_running


def check_owner(pid: int) -> None:
    """PoolClosedError in a process forked from the one that created the pool (``pid``).

    The child has a copy of the pool's objects but none of its threads: work
    posted there would never run, and a wait for it would never end.
    """
    if os.getpid() != pid:
        raise PoolClosedError(
            f"this pool belongs to process {pid}, which created it; process {os.getpid()} "
            "is a child forked from it and cannot use it (the child has none of the pool's "
            "threads or workers). Create a new pool in the child."
        )


def pool_closed() -> Exception:
    """The error for work submitted after close(), terminate() or shutdown().

    Once the interpreter is exiting (the pools were shut down by the exit
    hook), a plain ``RuntimeError`` in concurrent.futures' own words, which
    code (and CPython's tests) match exactly.
    """
    if _exiting:
        return RuntimeError("cannot schedule new futures after interpreter shutdown")
    return PoolClosedError(
        "the pool is closed: no new tasks are accepted after close(), terminate() or "
        "shutdown(); create a new pool"
    )


def warn_if_nested(options: PoolOptions) -> None:
    """Warn (NestedPoolWarning) when a pool is created inside a worker of another pool."""
    if in_worker():
        warnings.warn(
            NestedPoolWarning(
                f"a pool of {options.workers} {options.kind} workers was created inside a "
                "worker of another pool: the outer workers times these workers may "
                "oversubscribe the CPUs. Give the inner pool few workers, or create one "
                "pool outside the tasks."
            ),
            stacklevel=5,
        )


def check_callable(fn: object) -> None:
    """TypeError unless ``fn`` can be called."""
    if not callable(fn):
        raise TypeError(f"the task function must be callable, got {fn!r} ({type(fn).__name__})")


def task_key(fn: Callable[..., Any]) -> Hashable:
    """What identifies "the same function" for learned durations and auto routing."""
    # All closures of one ``def`` share a code object, and so a duration estimate.
    code = getattr(fn, "__code__", None)
    return code if code is not None else id(fn)


def shutdown_all() -> None:
    """Shut down every pool this process created (exit hook; also run by workers)."""
    global _exiting
    _exiting = True
    for engine in list(_live):
        # A forked child (a worker, or any fork of the caller) inherits this
        # registry but none of the threads or pipes behind it: only the
        # process that created a pool may shut it down.
        if engine.pid == os.getpid():
            engine._at_exit()


# This must run before multiprocessing's own exit hook, which joins every
# non-daemonic child and would wait forever on our workers (they are not
# daemonic so that tasks may start pools of their own).  multiprocessing
# re-registers its hook whenever its logger is first used, so atexit order
# cannot be relied on; threading's exit hooks run before any atexit hook, and
# are what concurrent.futures uses for the same reason.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(shutdown_all)
else:  # pragma: no cover - every supported CPython has it
    atexit.register(shutdown_all)
