"""Dask workers: the same engine, with chunks run as tasks on a Dask cluster.

Each workcrew "worker" of this kind is a *slot*: at most one chunk (plus the
engine's usual prefetch) submitted to the cluster at a time, so ``workers``
bounds the tasks in flight (by default four per CPU of this machine: a Dask
worker then has its next chunks waiting while results travel back through the
scheduler; with one slot per Dask thread, 10 ms tasks kept the cluster half
idle, and the gain stopped at four) and the engine keeps doing what it does for every
kind: chunking tiny tasks (one Dask task per chunk amortises the scheduler's
per-task cost), windows over endless input, retries, timeouts, progress,
statistics.  The cluster is Dask's own business (``distributed``): where the
chunks run, worker processes and their restarts.

A chunk's task runs :func:`run_chunk` on a Dask worker, which calls the same
``run_chunk`` as every kind and returns every item's outcome, so one failing
item fails alone with its own exception and traceback.  Tasks are submitted
with ``pure=False`` (a repeated call really runs again) and a unique key.

What Dask cannot do, and what happens instead (docs/dask.md):

* Stop a running task: a task past its ``task_timeout`` fails with
  ``TaskTimeout`` at once, and its slot is retired and replaced; the task
  itself runs to its end on its Dask worker, which stays busy meanwhile.
* Per-worker state: ``initializer`` and ``worker_exit`` are refused (Dask
  workers are shared; use a Dask worker plugin).
* A Dask worker that dies makes the scheduler run its tasks elsewhere, up to
  Dask's ``allowed-failures`` (3); then the task fails with ``KilledWorker``,
  which workcrew reports as ``WorkerCrashed`` (and retries, with ``retries``).

Large arguments (NumPy arrays, buffers of 1 MiB or more) are scattered to the
cluster once and passed by reference to every task that uses the same object.
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
import uuid
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import cloudpickle

from .._core._backend import Chunk, Loop, Sent, WorkerBackend, WorkerEvents, WorkerHandle
from .._core._exceptions import (
    BrokenPoolError,
    RemoteTraceback,
    WorkcrewError,
    WorkerCrashed,
    serialization_error,
)
from .._core._execute import Failure, Outcome, function_name
from .._core._execute import run_chunk as run_items
from .._core._execute import run_chunk_timed as run_items_timed
from .._core._function_cache import FunctionCache
from .._core._options import PoolOptions
from .._core._system import available_cpu_count

__all__ = ("DaskBackend", "backend_class", "run_chunk")

#: Arguments at least this large are scattered to the cluster once, not sent per task.
SCATTER_BYTES = 1 << 20
#: Scattered arguments remembered (each holds the object and its data on the cluster).
SCATTER_KEEP = 64
#: Chunks kept on the cluster per Dask worker thread when ``workers`` is not
#: given: a thread then has its next chunks waiting while results travel back
#: through the scheduler (with one per thread, 10 ms tasks kept the cluster
#: half idle; the gain stopped at four).
IN_FLIGHT_PER_THREAD = 4
#: Seconds between two looks at the cluster's workers (joined, left).
WATCH_INTERVAL = 1.0
#: Seconds between two looks at a chunk whose result was lost with its Dask worker
#: after it had finished (Dask computes it again without calling back: rare).
LOST_POLL = 0.1
#: Seconds closing our client may take (its scheduler may be gone).
CLOSE_TIMEOUT = 5.0
#: The cluster's cost per chunk (scheduling, messages, the worker's own
#: bookkeeping) before any is measured: a few milliseconds on a small cluster.
FIRST_OVERHEAD = 0.003
#: Chunks answered while the cluster was busy that one measurement spans.
OVERHEAD_WINDOW = 16
#: Weight of the newest measurement in the running estimate.
OVERHEAD_WEIGHT = 0.3


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "backend='dask' needs Dask's distributed scheduler: pip install 'workcrew[dask]'"
        ) from exc
    return distributed


# -- on the Dask worker ----------------------------------------------------------------

_functions: dict[bytes, Callable[..., Any]] = {}


def run_chunk(
    fn_blob: bytes, mode: int, items: list[Any], skip: frozenset[int] | None, timed: bool
) -> tuple[Any, ...]:
    """The task each chunk becomes: its run time, every item's outcome, its CPU wait."""
    fn = _functions.get(fn_blob)
    if fn is None:
        fn = _functions[fn_blob] = cloudpickle.loads(fn_blob)
        if len(_functions) > 256:
            _functions.pop(next(iter(_functions)))
    start, waited = time.perf_counter(), _run_queue_wait()
    outcome = (run_items_timed if timed else run_items)(fn, mode, items, skip)
    failures = outcome.failures
    if failures:
        failures = {i: _portable(f) for i, f in failures.items()}
    duration = time.perf_counter() - start
    return (duration, (outcome.values, failures, outcome.spans), _run_queue_wait() - waited)


def _run_queue_wait() -> float:
    """Seconds this thread has waited for a CPU while runnable (Linux; 0.0 elsewhere).

    A chunk that ran slow because other processes (the scheduler, on a small
    machine) had the CPU did less work than its wall time says: the caller
    counts that wait as the cluster's cost, not the chunk's (see note_answer).
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _portable(failure: Failure) -> Failure:
    """The failure as the caller can rebuild it (its exception pickles), or as text."""
    import pickle

    try:
        pickle.loads(cloudpickle.dumps(failure.exc))
        exc = failure.exc
    except Exception:  # noqa: BLE001 - sent as a WorkcrewError carrying its text instead
        exc = WorkcrewError(f"{type(failure.exc).__qualname__}: {failure.exc}")
    exc.__traceback__ = None  # the text below is the traceback that crosses
    return Failure(exc, failure.tb, failure.call)


# -- in the caller -------------------------------------------------------------------------


class DaskBackend(WorkerBackend):
    """Connects to a Dask cluster (or starts a local one) and submits chunks to it."""

    can_kill = False

    def __init__(self, options: PoolOptions, loop: Loop) -> None:
        super().__init__(options, loop)
        distributed = _distributed()
        self._own_cluster: Any = None
        if options.dask_client is not None:
            self.client: Any = options.dask_client
            self._own_client = False
        else:
            if options.dask_address is None:
                self._own_cluster = distributed.LocalCluster(
                    n_workers=available_cpu_count(),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                )
                address: Any = self._own_cluster
            else:
                address = options.dask_address
            self.client = _connect(distributed, address, options.dask_security)
            self._own_client = True
        self._killed_worker: type[BaseException] = distributed.KilledWorker
        self._blobs: FunctionCache[bytes | BaseException] = FunctionCache(256)
        self._scattered: dict[int, tuple[Any, Any]] = {}  # id -> (object, its Dask future)
        #: seconds of cluster time each chunk costs beyond its run (see note_answer)
        self.overhead = FIRST_OVERHEAD
        self.in_flight = 0  # chunks submitted and not yet answered, all slots
        self._answers: deque[tuple[float, float]] = deque(maxlen=OVERHEAD_WINDOW)
        self.watch = ClusterWatch(self.client, loop)

    def worker_target(self, configured: int) -> int:
        """Slots to keep: four per cluster thread as it changes (unless ``workers`` was given)."""
        if self.options.requested_workers is not None:
            return configured
        return IN_FLIGHT_PER_THREAD * max(1, self.watch.threads)

    def parallelism(self, workers: int) -> int:
        return max(1, self.watch.threads)  # slots queue chunks; the threads run them

    def chunk_overhead(self) -> float:
        return self.overhead

    def lost_workers(self) -> tuple[str, ...]:
        return self.watch.lost()

    def note_answer(self, run: float) -> None:
        """Master thread: a chunk answered after ``run`` seconds of work; refine ``overhead``.

        ``run`` is the chunk's time on its thread less what it waited for a CPU
        there: on a machine the scheduler shares, its CPU time is the cluster's
        cost, as much as the idle gaps between chunks.

        While every cluster thread has work waiting (at least as many chunks in
        flight as threads), the cluster's threads x the time between answers is
        spent either running chunks or on what each chunk costs besides:
        ``(span * threads - work) / chunks`` over a window of answers.  A
        window in which the cluster ran short of work says nothing, and
        starts again.
        """
        threads = max(1, self.watch.threads)
        if self.in_flight + 1 < threads:
            self._answers.clear()
            return
        self._answers.append((time.perf_counter(), run))
        if len(self._answers) < OVERHEAD_WINDOW:
            return
        span = self._answers[-1][0] - self._answers[0][0]
        work = sum(seconds for _, seconds in list(self._answers)[1:])
        measured = max(0.0, (span * threads - work) / (len(self._answers) - 1))
        self.overhead += OVERHEAD_WEIGHT * (measured - self.overhead)
        self._answers.clear()

    def chunk_error(self, exc: BaseException, worker_id: int) -> WorkcrewError:
        """The error a chunk of slot ``worker_id`` fails with when its Dask task did not answer."""
        if isinstance(exc, self._killed_worker):
            return WorkerCrashed(
                f"the Dask workers running this task died ({exc}); Dask gave up after its "
                "allowed-failures. The workcrew worker slot goes on.",
                worker_id=worker_id,
            )
        # The scheduler is gone: the futures say so, or the client is busy
        # reconnecting, or the gather failed on the scheduler's own connection
        # (CommClosedError naming its address, before the client noticed).
        address = str(self.client.scheduler.address)
        lost = _scheduler_lost(exc) or self.client.status in ("connecting", "closing", "closed")
        if lost or (type(exc).__name__ == "CommClosedError" and address in str(exc)):
            return BrokenPoolError(
                f"lost the Dask scheduler at {address} "
                f"({type(exc).__name__}: {exc}); every task in flight failed with this. The "
                "pool cannot run tasks on that cluster any more: terminate it, and start "
                "another once the scheduler is back."
            )
        return serialization_error(
            f"the Dask cluster could not run this chunk: {type(exc).__name__}: {exc}",
            loading=True,
        )

    def start_worker(self, worker_id: int, events: WorkerEvents) -> WorkerHandle:
        handle = DaskHandle(self, worker_id, events)
        self.loop.call_soon_threadsafe(lambda: events.on_ready(handle))
        return handle

    def function_blob(self, fn: Callable[..., Any]) -> bytes | BaseException:
        """The pickle of ``fn`` (or the error pickling it), made once per function."""
        return self._blobs.get(fn, _pickle_function)

    def share(self, items: list[Any]) -> list[Any]:
        """``items`` with large arguments replaced by futures of data scattered once."""
        return [self._share_one(item) for item in items]

    def _share_one(self, item: Any) -> Any:
        if isinstance(item, tuple):
            return tuple(self._share_one(x) for x in item)
        size = getattr(item, "nbytes", None)
        if not isinstance(size, int) or size < SCATTER_BYTES:
            return item
        entry = self._scattered.get(id(item))
        if entry is None or entry[0] is not item:
            if len(self._scattered) >= SCATTER_KEEP:
                self._scattered.pop(next(iter(self._scattered)))  # oldest: the cluster may drop it
            entry = self._scattered[id(item)] = (item, self.client.scatter(item, hash=False))
        return entry[1]

    def close(self) -> None:
        self.watch.stop()
        self._scattered.clear()
        if self._own_client:
            self.client.close(timeout=CLOSE_TIMEOUT)  # a lost scheduler must not hold us
        if self._own_cluster is not None:
            self._own_cluster.close()


class _Submitted:
    """A chunk's Dask future, and whether it has called back (it does so once)."""

    __slots__ = ("future", "rang", "seq")

    def __init__(self, seq: int, future: Any) -> None:
        self.seq = seq
        self.future = future
        self.rang = False


class DaskHandle(WorkerHandle):
    """One slot: the chunks it submitted, answered to the master in the order sent."""

    def __init__(self, backend: DaskBackend, worker_id: int, events: WorkerEvents) -> None:
        self.worker_id = worker_id
        self._backend = backend
        self._events = events
        self._loop = backend.loop
        self._pending: deque[_Submitted] = deque()  # in send order
        self._polling = False  # a look at a lost head is due (see _deliver)
        self._stopping = False
        self._exited = False

    def send_chunk(self, seq: int, chunk: Chunk) -> Sent:
        blob = self._backend.function_blob(chunk.fn)
        if isinstance(blob, BaseException):
            return Sent(dict.fromkeys(range(len(chunk.items)), blob))
        client = self._backend.client
        items = self._backend.share(chunk.items)
        future = client.submit(
            run_chunk,
            blob,
            chunk.mode,
            items,
            chunk.skip,
            self._backend.options.timeline,
            pure=False,
            key=f"workcrew-{function_name(chunk.fn)}-{uuid.uuid4().hex}",
        )
        submitted = _Submitted(seq, future)
        self._pending.append(submitted)
        self._backend.in_flight += 1
        future.add_done_callback(
            lambda _: self._loop.call_soon_threadsafe(lambda: self._rang(submitted))
        )
        return Sent({})

    def _rang(self, submitted: _Submitted) -> None:
        submitted.rang = True
        self._deliver()

    def _deliver(self) -> None:
        """Master thread: answer finished chunks, oldest first (a later one waits).

        A future calls back once, when it first finishes.  If the Dask worker
        holding its result dies before we take it, Dask computes it again but
        never calls back again: a head that rang and is no longer done is
        looked at every ``LOST_POLL`` seconds until it is done again (or fails).
        """
        while self._pending and self._pending[0].future.done():
            submitted = self._pending.popleft()
            self._answer(submitted.seq, submitted.future)
        if self._pending and self._pending[0].rang and not self._polling:
            self._polling = True
            self._loop.call_later(LOST_POLL, self._look_again)
        if self._stopping and not self._pending:
            self._exit()

    def _look_again(self) -> None:
        self._polling = False
        self._deliver()

    def _answer(self, seq: int, future: Any) -> None:
        backend = self._backend
        backend.in_flight -= 1
        try:
            duration, wire, waited = future.result()
        except BaseException as exc:  # noqa: BLE001 - a chunk that could not travel or run
            error = backend.chunk_error(exc, self.worker_id)
            self._events.on_chunk_error(self, seq, error, ran=True)
            return
        backend.note_answer(duration - waited)
        outcome = Outcome(*wire)
        for failure in (outcome.failures or {}).values():
            failure.exc.__cause__ = RemoteTraceback(f"on a Dask worker:\n{failure.tb}")
        self._events.on_result(self, seq, duration, outcome)

    def request_stop(self) -> None:
        self._stopping = True
        if not self._pending:
            self._loop.call_soon_threadsafe(self._exit)

    def _exit(self) -> None:
        if not self._exited:  # reported once
            self._exited = True
            self._events.on_exit(self, 0)

    def kill(self) -> None:
        # A running Dask task cannot be stopped: cancel what has not started,
        # leave the rest to finish on the cluster, and let the slot go.
        for submitted in self._pending:
            submitted.future.cancel()
        self._backend.in_flight -= len(self._pending)
        self._pending.clear()
        self.request_stop()

    def join(self, timeout: float | None) -> bool:
        return self._exited


def _pickle_function(fn: Callable[..., Any]) -> bytes | BaseException:
    try:
        return bytes(cloudpickle.dumps(fn))
    except BaseException as exc:  # noqa: BLE001 - every item of this function reports it
        return serialization_error(
            f"cannot send function {function_name(fn)} to the Dask cluster: "
            f"{type(exc).__name__}: {exc}. Define it at module level, importable on the "
            "cluster's workers.",
            cause=exc,
        )


def _connect(distributed: Any, address: Any, security: Any) -> Any:
    """A client of the scheduler at ``address``; ``BrokenPoolError`` if it cannot be reached.

    The wait is Dask's own bound, ``distributed.comm.timeouts.connect`` (30 s
    unless configured).
    """
    import dask

    timeout = dask.config.get("distributed.comm.timeouts.connect")
    kwargs = {} if security is None else {"security": security}
    tls_configured = dask.config.get("distributed.comm.tls.ca-file", None) is not None
    if str(address).startswith("tls://") and security is None and not tls_configured:
        # distributed would fail deep in its connection code with a TypeError,
        # and leave a broken Client behind (its __del__ then raises)
        raise ValueError(
            f"address {address!r} is a TLS address but no certificates were given: pass "
            "security=distributed.Security(tls_ca_file=..., tls_client_cert=..., "
            "tls_client_key=..., require_encryption=True), or set distributed.comm.tls.* in "
            "Dask's configuration"
        )
    try:
        return distributed.Client(address, timeout=timeout, **kwargs)
    except (OSError, TimeoutError) as exc:
        error = BrokenPoolError(
            f"cannot reach the Dask scheduler at {_where(address)} within {timeout}: "
            f"{type(exc).__name__}: {exc}. Check that `dask scheduler` runs there, that this "
            "host can reach its address and port, and that the protocol matches (tls:// with "
            "security= for a TLS cluster); distributed.comm.timeouts.connect bounds the wait."
        )
        _clean_up_failed_client(exc)
        raise error from exc
    except BaseException as exc:  # e.g. TypeError: tls:// without a TLS context
        _clean_up_failed_client(exc)
        raise


def _where(address: Any) -> str:
    return address if isinstance(address, str) else type(address).__name__


def _clean_up_failed_client(exc: BaseException) -> None:
    """Release what a Client whose start failed left behind: its sockets and its thread.

    distributed leaves its event-loop thread running for the life of the
    process (the failed Client's status is "closed", so its ``close()``
    returns at once without stopping the loop runner, ``_loop_runner``,
    private), and tornado does not close a connection attempt that timed
    out.  So: take the runner, clear the failure's frames so that the Client
    and its half-open connections are unreachable, collect them now (while
    the loop still runs, which the Client's ``__del__`` needs), silently
    (each would warn, ResourceWarning, wherever the collector ran next), then
    stop the runner and collect the connection attempts its loop still held.
    Collecting now also stops a dead Client from being closed while the next
    one starts (which then fails).
    """
    runner = next(
        (
            getattr(frame.f_locals.get("self"), "_loop_runner", None)
            for frame, _ in traceback.walk_tb(exc.__traceback__)
            if hasattr(frame.f_locals.get("self"), "_loop_runner")
        ),
        None,
    )
    _clear_frames_of_chain(exc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
        stop = getattr(runner, "stop", None)
        if callable(stop):
            stop()
            del runner, stop
            gc.collect()  # the connection attempts the stopped loop still held


def _clear_frames_of_chain(exc: BaseException) -> None:
    """Clear the frames of ``exc`` and of every exception chained to it.

    The caller keeps the error (``raise ... from exc``); the frames of the
    connection attempts down the chain would keep their sockets alive.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]


def _scheduler_lost(exc: BaseException) -> bool:
    """Whether a Dask future failed because the client lost its scheduler."""
    # distributed's FutureCancelledError carries the reason ("scheduler-connection-lost")
    return "scheduler-connection-lost" in f"{getattr(exc, 'reason', '')} {exc}"


class ClusterWatch:
    """The cluster's workers as a thread sees them every ``WATCH_INTERVAL``: threads, who left.

    Each look asks the scheduler (bounded by Dask's comm timeouts), so it runs
    on a thread of its own, never on the master thread; each change of the
    thread count wakes the master, which sizes the pool from ``threads``.
    """

    def __init__(self, client: Any, loop: Loop) -> None:
        self._client = client
        self._loop = loop
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}  # address -> threads, every worker ever seen
        self._present: set[str] = set()
        self._stop = threading.Event()
        #: the cluster's threads at the last look (1 until the scheduler answers)
        self.threads = 1
        self.threads = self._look()
        self._thread = threading.Thread(target=self._run, name="workcrew-dask-watch", daemon=True)
        self._thread.start()

    def _look(self) -> int:
        client = self._client
        try:
            if client.status != "running":
                raise ConnectionError(f"the client is {client.status}")
            # No timeout of ours: cancelling the request mid-read would leave the
            # client's pooled connection to the scheduler out of step (its next
            # read takes garbage for a frame length).  Dask's own comm timeouts
            # bound it, and a client that lost its scheduler is not asked at all.
            workers: dict[str, int] = dict(client.nthreads())
        except Exception:  # noqa: BLE001 - the scheduler is unreachable: keep what we knew
            return self.threads
        with self._lock:
            self._seen.update(workers)
            self._present = set(workers)
        return sum(workers.values())

    def _run(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            threads = self._look()
            if threads != self.threads:
                self.threads = threads
                self._loop.call_soon_threadsafe(lambda: None)  # wake the master: resize

    def lost(self) -> tuple[str, ...]:
        """Addresses of workers seen while the pool ran that have left the cluster."""
        with self._lock:
            return tuple(sorted(set(self._seen) - self._present))

    def stop(self) -> None:
        """Stop watching (joins the thread), after a last look: a loss just now counts too."""
        self._stop.set()
        self._thread.join()
        self._look()


backend_class = DaskBackend
