"""The master's account of what its pool did, and the live log of a dashboard.

The master thread writes a :class:`Recorder` as chunks are sent and finish,
workers start and end; a caller's thread reads a frozen snapshot
(``_stats.PoolStatistics``) at any time.  A lock guards the recorder: the one
piece of master state other threads read directly, because a snapshot must
also work after the master loop has ended (a joined pool).
"""

from __future__ import annotations

import threading
import time
from collections import deque

TYPE_CHECKING = False  # no typing at run time (see _backend.Chunk)
if TYPE_CHECKING:
    from typing import Any

    from ._live import LiveLog
    from ._stats import PoolStatistics, TaskSpan

__all__ = ("Recorder", "open_live")

#: Peak memory is sampled at most this often per process worker (psutil costs ~30 µs).
MEMORY_EVERY = 0.5
#: Chunk sizes averaged for ``PoolStatistics.chunk_size``.
RECENT_CHUNKS = 100


class _Worker:
    """One worker's account (see WorkerStatistics)."""

    __slots__ = (
        "busy",
        "ended",
        "exit",
        "failed",
        "memory_at",
        "outstanding",
        "peak_memory",
        "pid",
        "started",
        "tasks",
        "worker_id",
    )

    def __init__(self, worker_id: int, pid: int | None, started: float) -> None:
        self.worker_id = worker_id
        self.pid = pid
        self.started = started
        self.ended: float | None = None
        self.tasks = 0
        self.failed = 0
        self.busy = 0.0
        self.exit = "running"
        self.peak_memory: int | None = None
        self.memory_at = 0.0
        self.outstanding = 0  # tasks sent to it and not finished


class Recorder:
    """The master's running account of its workers: written by the master thread, read by
    any thread (``snapshot``, ``timeline``), under ``_lock``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.created = time.monotonic()
        #: perf_counter at creation: spans measured by workers are relative to it
        self.origin = time.perf_counter()
        self.workers: dict[int, _Worker] = {}
        self.spans: list[TaskSpan] = []
        self.first_sent: float | None = None
        self.chunk_sizes: deque[int] = deque(maxlen=RECENT_CHUNKS)
        self.restarts = 0
        self.crashes = 0
        self.submitted = 0  # tasks of calls and lists submitted (imap input: as it is read)
        self._ended = 0
        self._lock = threading.Lock()

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
        from ._stats import TaskSpan  # with the first span: a pool asked for a timeline

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
        from ._stats import PoolStatistics, WorkerStatistics  # loaded when first asked for

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
