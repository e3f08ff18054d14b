"""Benchmarks of the worker kinds: IO concurrency, hybrid workers, and kind="auto".

Imported by ``run.py``, which registers these workloads (``--only io``,
``--only hybrid``, ``--only auto``).  Worker functions are at module level so
that process workers can import them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import workcrew
from common import FORK, MapFn, Result, calibrate_spin, check, progress, spin, timed_map

IO_TASKS = 2_000
IO_SECONDS = 0.010
IO_WORKERS = 200
PROCESS_IO_WORKERS = 32
HYBRID_TASKS = 10_000
HYBRID_SECONDS = 1.0
HYBRID_PROCESSES = 2


def nap(x: int) -> int:
    """Blocking IO stand-in: a 10 ms sleep."""
    time.sleep(IO_SECONDS)
    return x


async def anap(x: int) -> int:
    """Non-blocking IO stand-in: a 10 ms asyncio sleep."""
    await asyncio.sleep(IO_SECONDS)
    return x


async def call_service(x: int) -> int:
    """A slow remote call: one second of waiting."""
    await asyncio.sleep(HYBRID_SECONDS)
    return x


@contextlib.contextmanager
def workcrew_map(workers: int, **kw: Any) -> Iterator[MapFn]:
    with workcrew.Pool(workers, start_method="fork", **kw) as pool:
        yield pool.map


@contextlib.contextmanager
def tpe_map(workers: int) -> Iterator[MapFn]:
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        yield lambda fn, items: list(ex.map(fn, items))


@contextlib.contextmanager
def mp_map(workers: int) -> Iterator[MapFn]:
    with FORK.Pool(workers) as pool:
        yield pool.map
        pool.close()
        pool.join()


@contextlib.contextmanager
def gather_map(limit: int) -> Iterator[MapFn]:
    def run(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        async def main() -> list[Any]:
            gate = asyncio.Semaphore(limit)

            async def one(x: Any) -> Any:
                async with gate:
                    return await fn(x)

            return list(await asyncio.gather(*(one(x) for x in items)))

        return asyncio.run(main())

    yield run


def sleep_lasts() -> float:
    """How long a requested IO_SECONDS sleep really lasts here (timer slack, wake-up latency)."""
    start = time.perf_counter()
    for _ in range(10):
        nap(0)
    return (time.perf_counter() - start) / 10


def bench_io(repeats: int, quick: bool) -> tuple[str, list[str], list[Result], list[str]]:
    n = 400 if quick else IO_TASKS
    items = list(range(n))
    ideal = n * IO_SECONDS
    lasts = sleep_lasts()
    cases: list[tuple[str, Callable[[], Any], Any, bool]] = [
        ("workcrew thread", lambda: workcrew_map(IO_WORKERS, kind="thread"), nap, True),
        ("workcrew async", lambda: workcrew_map(IO_WORKERS, kind="async"), anap, True),
        (
            "workcrew async, event_loop='asyncio'",
            lambda: workcrew_map(IO_WORKERS, kind="async", event_loop="asyncio"),
            anap,
            True,
        ),
        ("workcrew auto", lambda: workcrew_map(IO_WORKERS, kind="auto"), nap, True),
        ("ThreadPoolExecutor", lambda: tpe_map(IO_WORKERS), nap, False),
        ("asyncio.gather + Semaphore", lambda: gather_map(IO_WORKERS), anap, False),
        (
            f"multiprocessing Pool ({PROCESS_IO_WORKERS} processes)",
            lambda: mp_map(PROCESS_IO_WORKERS),
            nap,
            False,
        ),
    ]
    rows = []
    for name, opener, fn, ours in cases:
        seconds = timed_map(name, opener, fn, items, items, repeats)
        rows.append(Result(name, ideal / seconds, ours))
        progress(f"io {name}: achieved concurrency {ideal / seconds:.0f}")
    notes = [
        f"{n:,} tasks of a {IO_SECONDS * 1000:.0f} ms sleep (`time.sleep`, or `asyncio.sleep` "
        f"for coroutines), {IO_WORKERS} workers (at most {IO_WORKERS} at once); achieved "
        f"concurrency = {n:,} x {IO_SECONDS * 1000:.0f} ms / wall time. A "
        f"{IO_SECONDS * 1000:.0f} ms sleep lasts {lasts * 1000:.2f} ms here, so the ideal is "
        f"{IO_WORKERS * IO_SECONDS / lasts:.0f} (at most {IO_WORKERS}). Warm pools, best of "
        f"{repeats}.",
        "workcrew async uses uvloop when installed (`event_loop='auto'`); the asyncio row "
        "shows asyncio's own loop. `asyncio.gather` runs on asyncio's loop.",
        f"Process pools hold one task per process: {PROCESS_IO_WORKERS} processes give at most "
        f"{PROCESS_IO_WORKERS}.",
    ]
    return "IO-bound tasks: achieved concurrency", ["achieved concurrency"], rows, notes


def bench_hybrid(repeats: int, quick: bool) -> tuple[str, list[str], list[Result], list[str]]:
    n = 2_000 if quick else HYBRID_TASKS
    items = list(range(n))
    per_process = n // HYBRID_PROCESSES
    cases: list[tuple[str, Callable[[], Any], bool]] = [
        (
            f"workcrew hybrid ({HYBRID_PROCESSES} processes x {per_process:,} coroutines)",
            lambda: workcrew_map(HYBRID_PROCESSES, concurrency_per_worker=per_process),
            True,
        ),
        (f"workcrew async ({n:,} slots, one loop)", lambda: workcrew_map(n, kind="async"), True),
        (f"asyncio.gather ({n:,} at once)", lambda: gather_map(n), False),
    ]
    rows = []
    for name, opener, ours in cases:
        seconds = timed_map(name, opener, call_service, items, items, max(1, repeats - 1))
        rows.append(Result(name, n * HYBRID_SECONDS / seconds, ours))
        progress(f"hybrid {name}: achieved concurrency {n * HYBRID_SECONDS / seconds:,.0f}")
    notes = [
        f"{n:,} coroutine tasks, each waiting {HYBRID_SECONDS:.0f} s (`asyncio.sleep`); "
        f"achieved concurrency = {n:,} x {HYBRID_SECONDS:.0f} s / wall time (ideal {n:,}).",
        "The hybrid pool runs the coroutines on an event loop inside each process worker: "
        "the way to combine a few CPU cores with many waits.",
    ]
    return "Hybrid workers: concurrent coroutines", ["achieved concurrency"], rows, notes


def cold_and_warm(
    workers: int, kind: str, fn: Any, items: list[Any], expected: list[Any]
) -> tuple[float, float]:
    """Wall times of a fresh pool's first map (creation and shutdown included) and second map."""
    start = time.perf_counter()
    with workcrew.Pool(workers, kind=kind, start_method="fork") as pool:
        got = pool.map(fn, items)
        middle = time.perf_counter()
        again = pool.map(fn, items)
        warm = time.perf_counter() - middle
    cold = time.perf_counter() - start - warm
    check(f"{kind} {fn.__name__}", got, expected)
    check(f"{kind} {fn.__name__}", again, expected)
    return cold, warm


def bench_auto(repeats: int, quick: bool) -> tuple[str, list[str], list[Result], list[str]]:
    cpu_items = [calibrate_spin(0.010) + i for i in range(40 if quick else 400)]
    cpu_expected = [spin(x) for x in cpu_items]
    io_items = list(range(400 if quick else IO_TASKS))
    workloads = [
        ("CPU-bound", 2, spin, cpu_items, cpu_expected),
        ("IO-bound", IO_WORKERS, nap, io_items, io_items),
    ]
    rows = []
    for label, workers, fn, items, expected in workloads:
        for kind in ("auto", "process", "thread"):
            if label == "IO-bound" and kind == "process":
                workers_here = min(workers, PROCESS_IO_WORKERS)
            else:
                workers_here = workers
            runs = [cold_and_warm(workers_here, kind, fn, items, expected) for _ in range(repeats)]
            cold, warm = min(c for c, _ in runs), min(w for _, w in runs)
            rows.append(Result(f"{label}: kind={kind!r}", len(items) / cold, kind == "auto"))
            rows.append(Result(f"{label}: kind={kind!r}, warm", len(items) / warm, kind == "auto"))
            progress(f"auto {label} {kind}: {len(items) / cold:,.0f} / {len(items) / warm:,.0f}")
    notes = [
        f"CPU-bound: {len(cpu_items)} pure-Python tasks of ~10 ms, 2 workers. IO-bound: "
        f"{len(io_items):,} sleeps of 10 ms, {IO_WORKERS} workers ({PROCESS_IO_WORKERS} for "
        "processes).",
        "Cold: a fresh pool's first map, pool start and shutdown included, best of "
        f"{repeats}; auto pays for its measurement there (the first task runs alone on a "
        "thread before the rest start). Warm: the same pool's second map (the decision is "
        "made once per function and pool).",
        "The ratio compares auto with the best hand-picked kind of the same workload.",
    ]
    return "kind='auto' against hand-picked kinds", ["tasks/s"], rows, notes
