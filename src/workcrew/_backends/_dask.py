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

import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import cloudpickle

from .._core._backend import Chunk, Loop, Sent, WorkerBackend, WorkerEvents, WorkerHandle
from .._core._exceptions import (
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
    """The task each chunk becomes: every item's outcome, failures as (pickled) Failure."""
    fn = _functions.get(fn_blob)
    if fn is None:
        fn = _functions[fn_blob] = cloudpickle.loads(fn_blob)
        if len(_functions) > 256:
            _functions.pop(next(iter(_functions)))
    start = time.perf_counter()
    outcome = (run_items_timed if timed else run_items)(fn, mode, items, skip)
    failures = outcome.failures
    if failures:
        failures = {i: _portable(f) for i, f in failures.items()}
    return (time.perf_counter() - start, (outcome.values, failures, outcome.spans))


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
            kwargs = {} if options.dask_security is None else {"security": options.dask_security}
            self.client = distributed.Client(address, **kwargs)
            self._own_client = True
        self._killed_worker: type[BaseException] = distributed.KilledWorker
        self._blobs: FunctionCache[bytes | BaseException] = FunctionCache(256)
        self._scattered: dict[int, tuple[Any, Any]] = {}  # id -> (object, its Dask future)

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
        self._scattered.clear()
        if self._own_client:
            self.client.close()
        if self._own_cluster is not None:
            self._own_cluster.close()


class DaskHandle(WorkerHandle):
    """One slot: the chunks it submitted, answered to the master in the order sent."""

    def __init__(self, backend: DaskBackend, worker_id: int, events: WorkerEvents) -> None:
        self.worker_id = worker_id
        self._backend = backend
        self._events = events
        self._loop = backend.loop
        self._pending: deque[tuple[int, Any]] = deque()  # (seq, Dask future), in send order
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
        self._pending.append((seq, future))
        future.add_done_callback(lambda _: self._loop.call_soon_threadsafe(self._deliver))
        return Sent({})

    def _deliver(self) -> None:
        """Master thread: answer finished chunks, oldest first (a later one waits)."""
        while self._pending and self._pending[0][1].done():
            seq, future = self._pending.popleft()
            self._answer(seq, future)
        if self._stopping and not self._pending:
            self._exit()

    def _answer(self, seq: int, future: Any) -> None:
        try:
            duration, wire = future.result()
        except self._backend._killed_worker as exc:
            error: WorkcrewError = WorkerCrashed(
                f"the Dask workers running this task died ({exc}); Dask gave up after its "
                "allowed-failures. The workcrew worker slot goes on.",
                worker_id=self.worker_id,
            )
            self._events.on_chunk_error(self, seq, error, ran=True)
            return
        except BaseException as exc:  # noqa: BLE001 - a chunk that could not travel or run
            error = serialization_error(
                f"the Dask cluster could not run this chunk: {type(exc).__name__}: {exc}",
                loading=True,
            )
            self._events.on_chunk_error(self, seq, error, ran=True)
            return
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
        for _, future in self._pending:
            future.cancel()
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


backend_class = DaskBackend
