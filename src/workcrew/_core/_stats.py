"""What a pool did, as the caller sees it: per-worker statistics and task spans.

The public records (frozen dataclasses), made from the master's
:class:`~workcrew._core._recorder.Recorder` when asked for
(``pool.statistics()``, a timeline): this module, and ``dataclasses`` with it,
loads then, not with the pool.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ._public import public

__all__ = ("PoolStatistics", "TaskSpan", "WorkerStatistics", "combine", "with_lost_workers")


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


def combine(kind: str, parts: list[PoolStatistics]) -> PoolStatistics:
    """One snapshot of several pools (``kind="auto"``: one engine per worker kind)."""
    if not parts:
        from ._recorder import Recorder

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


def with_lost_workers(snapshot: PoolStatistics, lost: tuple[str, ...]) -> PoolStatistics:
    """``snapshot`` naming the cluster workers that left (``backend="dask"``)."""
    return replace(snapshot, lost_workers=lost)


public(PoolStatistics, WorkerStatistics, TaskSpan)
