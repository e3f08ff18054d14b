"""An in-memory worker kind for the core tests: nothing runs unless the test says so.

:class:`FakeBackend` implements the interface of ``workcrew._core._backend``.
Its workers (:class:`FakeWorker`) only keep the chunks the master sent them,
in order; they never run anything, never become ready and never exit on
their own.  :class:`FakePool` drives a real ``Master`` over it from the test
thread: every event a real backend reports (ready, a chunk's answer, a chunk
that failed as a whole, an exit) is posted to the master thread with
``call_soon_threadsafe``, and the test waits until the master has handled it
*and* dispatched after it (see :meth:`FakePool.run`).  No sleeping anywhere:
every wait is on a ``threading.Event`` or ``queue.Queue``, bounded by
``helpers.TIMEOUT``.

How a wait knows the master's dispatch is done: the master thread turns
``wait for events -> run callbacks -> dispatch -> advance shutdown`` (see
``_master.py``).  A posted call, once run, watches a pipe for writability
(``Loop.add_writer``); an empty pipe is always writable, so that callback runs
in the very next wait, that is, after the dispatch that followed the call.

Everything the master decides is recorded: each worker started
(``backend.workers``), each chunk sent (``backend.log``, :class:`SentChunk`:
seq, worker, items, and what the worker held at that moment).
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from helpers import TIMEOUT
from workcrew._core._backend import Chunk, Loop, Sent, WorkerBackend, WorkerEvents, WorkerHandle
from workcrew._core._engine import task_key
from workcrew._core._exceptions import WorkcrewError
from workcrew._core._execute import MAP, Failure, Outcome
from workcrew._core._jobs import CallJob, ListJob, StreamJob
from workcrew._core._master import Master, State
from workcrew._core._options import PoolOptions, TaskPolicy

__all__ = (
    "FakeBackend",
    "FakePool",
    "FakeWorker",
    "MasterStopped",
    "RecordedList",
    "RecordedStream",
    "SentChunk",
    "delivered",
)

#: Exit code of a worker killed by SIGSEGV: a crash (not an outside kill, not a clean exit).
CRASH = -11


class MasterStopped(RuntimeError):
    """The master thread has ended: nothing posted to it will run."""


@dataclass(frozen=True)
class SentChunk:
    """One ``send_chunk`` call, as the worker received it."""

    seq: int
    worker: FakeWorker
    fn: Callable[..., Any]
    mode: int
    items: tuple[Any, ...]
    #: chunks the worker held (sent, unanswered) when this one was sent, oldest first
    backlog: tuple[SentChunk, ...]
    #: whether the worker had been reported ready when this one was sent
    ready: bool
    #: items the fake refused to send (``FakeBackend.unsendable``), by index
    unsent: dict[int, BaseException] = field(default_factory=dict)


class FakeWorker(WorkerHandle):
    """One pretend worker: holds the chunks sent to it until the test answers them."""

    pid = None

    def __init__(self, backend: FakeBackend, worker_id: int, events: WorkerEvents) -> None:
        self.worker_id = worker_id
        self.events = events
        self.backend = backend
        #: chunks sent and not answered yet, in the order sent (master thread)
        self.held: deque[SentChunk] = deque()
        self.ready = False
        self.stop_requested = False
        self.killed = False
        self.gone = False
        #: answers "being decoded" (see WorkerHandle.answers_in_transit); set by the test
        self.in_transit = 0

    def send_chunk(self, seq: int, chunk: Chunk) -> Sent:
        _check_master_thread()
        refuse = self.backend.unsendable
        failed: dict[int, BaseException] = {}
        if refuse is not None:
            for i, item in enumerate(chunk.items):
                error = refuse(item)
                if error is not None:
                    failed[i] = error
        record = SentChunk(
            seq,
            self,
            chunk.fn,
            chunk.mode,
            tuple(chunk.items),
            tuple(self.held),
            self.ready,
            failed,
        )
        if len(failed) < len(chunk.items):  # nothing sent if no item could be
            self.held.append(record)
        self.backend.record(record)
        return Sent(failed, self.backend.item_bytes * (len(chunk.items) - len(failed)))

    def request_stop(self) -> None:
        self.stop_requested = True

    def kill(self) -> None:
        self.killed = True

    def join(self, timeout: float | None) -> bool:
        return self.gone

    def answers_in_transit(self) -> int:
        return self.in_transit


class FakeBackend(WorkerBackend):
    """Starts :class:`FakeWorker` records; can run test code on the master thread."""

    can_kill = False  # like threads: the master never signals a pid (fake workers have none)

    def __init__(self, options: PoolOptions, loop: Loop) -> None:
        super().__init__(options, loop)
        #: every worker started, in order (appended on the master thread)
        self.workers: list[FakeWorker] = []
        #: every chunk sent, in order (appended on the master thread)
        self.log: list[SentChunk] = []
        #: the same, for the test thread to wait on
        self.started: queue.Queue[FakeWorker] = queue.Queue()
        self.sent: queue.Queue[SentChunk] = queue.Queue()
        #: set by a test: an item's error if its arguments "cannot be sent", else None
        self.unsendable: Callable[[Any], BaseException | None] | None = None
        #: pickled bytes each item sent "takes" (0: not pickled, as thread workers)
        self.item_bytes = 0
        self.closed = False
        self._lock = threading.Lock()
        self._pending: set[_Call] = set()  # posted, not finished (test thread waits on them)
        self._armed: list[_Call] = []  # ran, waiting for the dispatch after them
        self._barrier_r, self._barrier_w = os.pipe()

    # -- the interface --------------------------------------------------------------

    def start_worker(self, worker_id: int, events: WorkerEvents) -> WorkerHandle:
        _check_master_thread()
        worker = FakeWorker(self, worker_id, events)
        self.workers.append(worker)
        self.started.put(worker)
        return worker

    def record(self, sent: SentChunk) -> None:
        self.log.append(sent)
        self.sent.put(sent)

    def close(self) -> None:
        # Master thread, as its loop ends: release every wait, nothing will run any more.
        with self._lock:
            self.closed = True
            pending, self._pending = list(self._pending), set()
        self.loop.remove_writer(self._barrier_w)
        for call in pending:
            call.done.set()
        os.close(self._barrier_r)
        os.close(self._barrier_w)

    # -- running test code on the master thread -------------------------------------------

    def post(self, call: _Call) -> None:
        """Test thread: run ``call`` on the master thread, then wait for its dispatch."""
        with self._lock:
            if self.closed:
                raise MasterStopped("the master thread has ended")
            self._pending.add(call)
        self.loop.call_soon_threadsafe(lambda: self._run(call))

    def _run(self, call: _Call) -> None:
        try:
            call.result = call.fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            call.error = exc
        if not self._armed:
            self.loop.add_writer(self._barrier_w, self._release)
        self._armed.append(call)

    def _release(self) -> None:
        # Runs in the master's next wait: the dispatch after the calls is done.
        self.loop.remove_writer(self._barrier_w)
        armed, self._armed = self._armed, []
        with self._lock:
            self._pending.difference_update(armed)
        for call in armed:
            call.done.set()


class _Call:
    """Test code to run on the master thread, and what it returned or raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class _Recording:
    """Mixed into a job class: records every ``deliver`` call before the job handles it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliveries: list[tuple[int, list[Any], dict[int, BaseException]]] = []

    def deliver(
        self, start: int, values: list[Any], errors: dict[int, BaseException] | None
    ) -> None:
        self.deliveries.append((start, list(values), dict(errors or {})))
        super().deliver(start, values, errors)  # type: ignore[misc]  # the job class mixed with


class RecordedList(_Recording, ListJob):
    """A ``ListJob`` (map) that also records every ``deliver`` call."""


class RecordedStream(_Recording, StreamJob):
    """A ``StreamJob`` (imap) that also records every ``deliver`` call."""


def delivered(job: RecordedList | RecordedStream) -> dict[int, Any]:
    """Each delivered index's value or exception; fails if an index was delivered twice."""
    outcomes: dict[int, Any] = {}
    for start, values, errors in job.deliveries:
        for i, value in enumerate(values):
            assert start + i not in outcomes, f"item {start + i} delivered twice"
            outcomes[start + i] = errors.get(i, value)
    return outcomes


def task(x: Any = None) -> Any:
    """The function chunks name; the fake never calls it."""
    raise AssertionError("the fake backend runs nothing")


class FakePool:
    """A real ``Master`` over :class:`FakeBackend`, driven from the test thread.

    Every event method returns once the master handled the event and
    dispatched after it, so the recorded decisions can be asserted at once.
    Call :meth:`shutdown` at the end (the ``fake`` fixtures do).
    """

    def __init__(self, workers: int = 1, **options: Any) -> None:
        self.options = PoolOptions.build(workers, kind="thread", **options)
        self.master = Master(self.options, FakeBackend)
        backend = self.master.backend
        assert isinstance(backend, FakeBackend)
        self.backend = backend
        self._seen = 0  # chunks of backend.log already taken by chunk()

    # -- running code on the master thread ----------------------------------------

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the master thread; return once the dispatch after it is done."""
        call = _Call(fn)
        self.backend.post(call)
        if not call.done.wait(TIMEOUT):
            raise AssertionError(f"the master did not run {fn!r} within {TIMEOUT} s")
        if call.error is not None:
            raise call.error
        return call.result

    def state(self) -> State:
        """The pool's state, read on the master thread (STOPPED once it has ended)."""
        try:
            return self.run(lambda: self.master.state)
        except MasterStopped:
            return self.master.state

    # -- jobs, built as Engine builds them ----------------------------------------

    def submit(self, job: Any) -> Any:
        self.run(lambda: self.master.add_job(job))
        return job

    def call(
        self, *args: Any, fn: Callable[..., Any] = task, policy: TaskPolicy | None = None
    ) -> CallJob:
        job = CallJob(fn, args, {}, task_key(fn))
        job.policy = policy or self.options.policy
        return self.submit(job)

    def map(
        self,
        items: list[Any],
        chunksize: int | None = None,
        *,
        fn: Callable[..., Any] = task,
        policy: TaskPolicy | None = None,
    ) -> RecordedList:
        job = RecordedList(fn, MAP, items, task_key(fn), chunksize)
        job.policy = policy or self.options.policy
        return self.submit(job)

    def stream(
        self,
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        fn: Callable[..., Any] = task,
        policy: TaskPolicy | None = None,
        ordered: bool = True,
    ) -> RecordedStream:
        """An imap; the test feeds it (``job.feed()``) and reads it (``job.next_run``)."""
        master = self.master
        job = RecordedStream(
            fn,
            MAP,
            iterable,
            task_key(fn),
            chunksize,
            ordered,
            self.options.workers,
            lambda _: master.call_soon_threadsafe(master.wake),
        )
        job.policy = policy or self.options.policy
        return self.submit(job)

    def feed(self, job: StreamJob) -> None:
        """Pull the stream's input up to its window (as its reader would), then settle."""
        job.feed()
        self.run(lambda: None)  # the master's wake-up (posted by feed) and its dispatch

    # -- what the master did ------------------------------------------------------------

    def worker(self) -> FakeWorker:
        """The next worker the master started (waits for it)."""
        return self.backend.started.get(timeout=TIMEOUT)

    def chunk(self) -> SentChunk:
        """The next chunk the master sent (waits for it)."""
        return self.backend.sent.get(timeout=TIMEOUT)

    def chunks(self) -> list[SentChunk]:
        """Every chunk sent and not yet taken (after a settled event: all the master sent)."""
        taken: list[SentChunk] = []
        while not self.backend.sent.empty():
            taken.append(self.backend.sent.get_nowait())
        return taken

    def sends_of(self, item: Any) -> list[SentChunk]:
        """Every chunk sent so far that carried ``item``."""
        return [s for s in list(self.backend.log) if item in s.items]

    # -- events: what a worker reports --------------------------------------------------

    def ready(self, *workers: FakeWorker) -> None:
        def report() -> None:
            for worker in workers:
                worker.ready = True
                worker.events.on_ready(worker)

        self.run(report)

    def answer(
        self,
        sent: SentChunk,
        values: list[Any] | None = None,
        failures: dict[int, BaseException] | None = None,
        duration: float = 1e-4,
    ) -> None:
        """The worker answers ``sent`` (its oldest chunk): values (default: the items), failures."""
        outcome = Outcome(
            list(sent.items) if values is None else list(values),
            {i: Failure(e, "", repr(sent.items[i])) for i, e in failures.items()}
            if failures
            else None,
        )

        def report() -> None:
            _pop_head(sent)
            sent.worker.events.on_result(sent.worker, sent.seq, duration, outcome)

        self.run(report)

    def chunk_error(self, sent: SentChunk, error: WorkcrewError, *, ran: bool) -> None:
        """``sent`` (the worker's oldest chunk) failed as a whole (see on_chunk_error)."""

        def report() -> None:
            _pop_head(sent)
            sent.worker.events.on_chunk_error(sent.worker, sent.seq, error, ran=ran)

        self.run(report)

    def exit(self, worker: FakeWorker, exitcode: int | None = 0) -> None:
        """The worker is gone (``exitcode``: negative for a signal, e.g. CRASH)."""

        def report() -> None:
            assert not worker.gone, f"worker {worker.worker_id} exited already"
            _exit(worker, exitcode)

        self.run(report)

    # -- serving: the test plays every worker ------------------------------------------------

    def serve(
        self,
        outcome: Callable[[Any], Any] = lambda item: item,
        crash: Callable[[Any], bool] = lambda item: False,
        steps: int = 10_000,
        per_item: float | None = None,
        hold: Callable[[Any], bool] = lambda item: False,
    ) -> None:
        """Answer what the workers hold, oldest first, until none holds anything.

        Each worker is made ready first.  ``outcome(item)`` is the item's value,
        or an exception instance to fail it with; a chunk holding an item for
        which ``crash(item)`` is true kills its worker (exit code CRASH) when it
        comes to the head.  Each chunk reports ``per_item`` seconds per item (if
        given; else 0.1 ms a chunk).
        A chunk holding an item for which ``hold(item)`` is true is never
        answered (a task still running): its worker's later chunks wait with it.
        """
        for _ in range(steps):
            live = [w for w in list(self.backend.workers) if not w.gone]
            waiting = [w for w in live if not w.ready]
            if waiting:
                self.ready(*waiting)  # timed chunks go to ready workers only
            busy = [w for w in live if w.held and not any(map(hold, w.held[0].items))]
            if not busy:
                return
            head = busy[0].held[0]
            worker = head.worker
            if any(crash(item) for item in head.items):
                self.exit(worker, CRASH)
                continue
            results = [outcome(item) for item in head.items]
            failures = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
            values = [None if i in failures else r for i, r in enumerate(results)]
            duration = 1e-4 if per_item is None else per_item * len(head.items)
            self.answer(head, values, failures or None, duration)
        raise AssertionError(f"still serving after {steps} answers")

    # -- shutdown ----------------------------------------------------------------------

    def close(self) -> None:
        self.run(self.master.close)

    def terminate(self) -> None:
        self.run(self.master.terminate)

    def shutdown(self) -> None:
        """Terminate, let every worker exit, and join the master thread (the leak check)."""

        def stop() -> None:
            self.master.terminate()
            for worker in list(self.backend.workers):
                if not worker.gone:
                    _exit(worker, 0)

        if self.master.thread.is_alive():
            try:
                self.run(stop)
            except MasterStopped:
                pass
        self.master.thread.join(TIMEOUT)
        assert not self.master.thread.is_alive(), "the master thread did not end"


def _check_master_thread() -> None:
    """The master calls its backend only from its own thread (invariant 2 of docs/design.md)."""
    name = threading.current_thread().name
    assert name == "workcrew-master", f"the master called the backend from thread {name!r}"


def _pop_head(sent: SentChunk) -> None:
    """A worker answers in order: ``sent`` must be the oldest chunk it holds."""
    held = sent.worker.held
    assert held and held[0] is sent, f"worker {sent.worker.worker_id} answers out of order"
    held.popleft()


def _exit(worker: FakeWorker, exitcode: int | None) -> None:
    worker.gone = worker.exited = True
    worker.held.clear()
    worker.events.on_exit(worker, exitcode)
