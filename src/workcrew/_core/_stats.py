"""What a pool did: per-worker statistics and, on request, every task's span.

The master thread writes a :class:`Recorder` as chunks are sent and finish,
workers start and end; a caller's thread reads a frozen snapshot
(:class:`PoolStatistics`) at any time.  A lock guards the recorder: the one
piece of master state other threads read directly, because a snapshot must
also work after the master loop has ended (a joined pool).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._public import public

if TYPE_CHECKING:
    from ._live import LiveLog

__all__ = (
    "PoolStatistics",
    "Recorder",
    "TaskSpan",
    "WorkerStatistics",
    "combine",
    "open_live",
)

#: Peak memory is sampled at most this often per process worker (psutil costs ~30 µs).
MEMORY_EVERY = 0.5
#: Chunk sizes averaged for ``PoolStatistics.chunk_size``.
RECENT_CHUNKS = 100


@dataclass(frozen=True)
class WorkerStatistics:
    """One worker's life so far.

    ``busy_seconds`` is the time it spent running chunks (measured by the
    worker), ``idle_seconds`` the rest of its life.  ``exit`` is ``"running"``,
    ``"stopped"`` (asked to: close, recycling), ``"crashed"`` (died unasked:
    segfault, ``os._exit``, OOM kill) or ``"killed"`` (by the pool: a task
    timeout, a cancel, terminate).  ``peak_memory`` is the largest resident
    memory of its own sampled (pages less shared-memory segments and mapped files;
    process workers; ``None`` for threads and coroutines).
    """

    worker_id: int
    kind: str
    pid: int | None
    tasks: int
    failed: int
    busy_seconds: float
    idle_seconds: float
    exit: str
    peak_memory: int | None


@dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of a pool: ``pool.statistics()``; ``print()`` it for a table.

    ``throughput`` is tasks finished per second since the first task was
    sent.  ``queued`` counts tasks submitted but not yet sent to a worker
    (input of ``imap`` not yet read is not counted), ``in_flight`` those sent
    and not finished.  ``chunk_size`` is the mean number of tasks per chunk
    over the last 100 chunks.  ``restarts`` counts workers started to replace
    one that ended (crash, kill, recycling); ``crashes`` the workers that died
    unasked.  ``lost_workers`` names the cluster workers that left while the
    pool ran (``backend="dask"``: the addresses of Dask workers gone, crashed or
    unreachable; empty otherwise).
    """

    kind: str
    workers: tuple[WorkerStatistics, ...]
    tasks_done: int
    tasks_failed: int
    uptime_seconds: float
    throughput: float
    queued: int
    in_flight: int
    chunk_size: float
    workers_started: int
    restarts: int
    crashes: int
    lost_workers: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [
            f"{self.kind} pool: {self.tasks_done:,} tasks done ({self.tasks_failed:,} failed) in "
            f"{self.uptime_seconds:.2f} s, {self.throughput:,.1f} tasks/s; queued "
            f"{self.queued:,}, in flight {self.in_flight:,}, chunk size {self.chunk_size:.1f}; "
            f"{self.workers_started} workers started, {self.restarts} restarts, "
            f"{self.crashes} crashes",
            "worker  pid       tasks  failed  busy s  idle s  peak MiB  exit",
        ]
        if self.lost_workers:
            lines.insert(1, f"cluster workers lost: {', '.join(self.lost_workers)}")
        for w in self.workers:
            memory = "-" if w.peak_memory is None else f"{w.peak_memory / 2**20:.1f}"
            pid = "-" if w.pid is None else str(w.pid)
            lines.append(
                f"{w.worker_id:>6}  {pid:<8}  {w.tasks:>5}  {w.failed:>6}  "
                f"{w.busy_seconds:>6.2f}  {w.idle_seconds:>6.2f}  {memory:>8}  {w.exit}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class TaskSpan:
    """One task as it ran: on which worker, when (seconds since the pool was created)."""

    kind: str
    worker_id: int
    pid: int | None
    function: str
    start: float
    end: float
    ok: bool


@dataclass
class _Worker:
    worker_id: int
    pid: int | None
    started: float
    ended: float | None = None
    tasks: int = 0
    failed: int = 0
    busy: float = 0.0
    exit: str = "running"
    peak_memory: int | None = None
    memory_at: float = 0.0
    outstanding: int = 0  # tasks sent to it and not finished


@dataclass
class Recorder:
    """The master's running account of its workers: written by the master thread, read by
    any thread (``snapshot``, ``timeline``), under ``_lock``."""

    kind: str
    created: float = field(default_factory=time.monotonic)
    #: perf_counter at creation: spans measured by workers are relative to it
    origin: float = field(default_factory=time.perf_counter)
    workers: dict[int, _Worker] = field(default_factory=dict)
    spans: list[TaskSpan] = field(default_factory=list)
    first_sent: float | None = None
    chunk_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_CHUNKS))
    restarts: int = 0
    crashes: int = 0
    submitted: int = 0  # tasks of calls and lists submitted (imap input: as it is read)
    _ended: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self, worker_id: int, pid: int | None) -> None:
        with self._lock:
            if self._ended:
                self.restarts += 1
                self._ended -= 1
            self.workers[worker_id] = _Worker(worker_id, pid, time.monotonic())

    def exited(self, worker_id: int, how: str) -> None:
        with self._lock:
            record = self.workers.get(worker_id)
            if record is None or record.ended is not None:
                return
            record.ended, record.exit, record.outstanding = time.monotonic(), how, 0
            if how == "crashed":
                self.crashes += 1
            self._ended += 1

    def submit(self, tasks: int) -> None:
        """Any thread: tasks entered the pool."""
        with self._lock:
            self.submitted += tasks

    def sent(self, worker_id: int, items: int) -> None:
        with self._lock:
            if self.first_sent is None:
                self.first_sent = time.monotonic()
            self.chunk_sizes.append(items)
            record = self.workers.get(worker_id)
            if record is not None:
                record.outstanding += items

    def finished(
        self, worker_id: int, done: int, failed: int, seconds: float, memory: Any = None
    ) -> None:
        """A chunk's outcome; ``memory`` samples the worker's memory (a callable) now and then."""
        now = time.monotonic()
        with self._lock:
            record = self.workers.get(worker_id)
            if record is None:
                return
            record.tasks += done
            record.failed += failed
            record.busy += seconds
            record.outstanding = max(0, record.outstanding - done)
            sample = memory is not None and now - record.memory_at >= MEMORY_EVERY
            if sample:
                record.memory_at = now
        rss = memory() if sample else None  # outside the lock: a system call
        if rss is not None:
            with self._lock:
                if record.peak_memory is None or rss > record.peak_memory:
                    record.peak_memory = rss

    def record_spans(
        self, worker_id: int, function: str, spans: list[tuple[float, float]], failed: Any
    ) -> None:
        origin = self.origin
        with self._lock:
            record = self.workers.get(worker_id)
            pid = None if record is None else record.pid
            self.spans.extend(
                TaskSpan(
                    self.kind,
                    worker_id,
                    pid,
                    function,
                    start - origin,
                    end - origin,
                    i not in failed,
                )
                for i, (start, end) in enumerate(spans)
            )

    def timeline(self) -> tuple[TaskSpan, ...]:
        """Any thread: every span recorded so far, by start time."""
        with self._lock:
            return tuple(sorted(self.spans, key=lambda span: span.start))

    def snapshot(self) -> PoolStatistics:
        """Any thread: the pool now."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> PoolStatistics:
        now = time.monotonic()
        workers = []
        in_flight = sum(w.outstanding for w in self.workers.values())
        for w in self.workers.values():
            life = (w.ended if w.ended is not None else now) - w.started
            workers.append(
                WorkerStatistics(
                    w.worker_id,
                    self.kind,
                    w.pid,
                    w.tasks,
                    w.failed,
                    w.busy,
                    max(0.0, life - w.busy),
                    w.exit,
                    w.peak_memory,
                )
            )
        done = sum(w.tasks for w in workers)
        queued = max(0, self.submitted - done - in_flight)
        busy_since = self.first_sent if self.first_sent is not None else now
        return PoolStatistics(
            kind=self.kind,
            workers=tuple(workers),
            tasks_done=done,
            tasks_failed=sum(w.failed for w in workers),
            uptime_seconds=now - self.created,
            throughput=done / max(now - busy_since, 1e-9) if done else 0.0,
            queued=queued,
            in_flight=in_flight,
            chunk_size=sum(self.chunk_sizes) / len(self.chunk_sizes) if self.chunk_sizes else 0.0,
            workers_started=len(self.workers),
            restarts=self.restarts,
            crashes=self.crashes,
        )


def open_live(dashboard: bool, origin: float) -> LiveLog | None:
    """The master's :class:`LiveLog` for a pool with a dashboard, else None (and no import)."""
    if not dashboard:
        return None
    from ._live import LiveLog

    return LiveLog(origin)


def combine(kind: str, parts: list[PoolStatistics]) -> PoolStatistics:
    """One snapshot of several pools (``kind="auto"``: one engine per worker kind)."""
    if not parts:
        return Recorder(kind).snapshot()
    sizes = [p.chunk_size for p in parts if p.chunk_size]
    return PoolStatistics(
        kind=kind,
        workers=tuple(w for p in parts for w in p.workers),
        tasks_done=sum(p.tasks_done for p in parts),
        tasks_failed=sum(p.tasks_failed for p in parts),
        uptime_seconds=max(p.uptime_seconds for p in parts),
        throughput=sum(p.throughput for p in parts),
        queued=sum(p.queued for p in parts),
        in_flight=sum(p.in_flight for p in parts),
        chunk_size=sum(sizes) / len(sizes) if sizes else 0.0,
        workers_started=sum(p.workers_started for p in parts),
        restarts=sum(p.restarts for p in parts),
        crashes=sum(p.crashes for p in parts),
    )


public(PoolStatistics, WorkerStatistics, TaskSpan)
