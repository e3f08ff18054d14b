"""Benchmark of backend="dask" against the local process kind (``run.py --only dask``).

A LocalCluster of 2 worker processes (one thread each) on this machine, so the
comparison shows what Dask's scheduler and its transport cost, not more hardware.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import workcrew
from common import MapFn, Result, calibrate_spin, progress, spin, timed_map

WORKERS = 2
TINY_TASKS = 20_000
CPU_TASKS = 200
CPU_SECONDS = 0.01


def square(x: int) -> int:
    return x * x


@contextlib.contextmanager
def local_map() -> Iterator[MapFn]:
    with workcrew.Pool(WORKERS, start_method="fork") as pool:
        yield pool.map


@contextlib.contextmanager
def _client() -> Iterator[Any]:
    """A client of a LocalCluster of WORKERS processes, one thread each, on 127.0.0.1."""
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@contextlib.contextmanager
def dask_map(chunksize: int | None = None) -> Iterator[MapFn]:
    with _client() as client, workcrew.Pool(4 * WORKERS, backend="dask", client=client) as pool:
        yield lambda fn, items: pool.map(fn, items, chunksize=chunksize)


@contextlib.contextmanager
def raw_dask_map() -> Iterator[MapFn]:
    """Dask alone: one future per item (client.map), the way its docs start."""
    with _client() as client:
        yield lambda fn, items: client.gather(client.map(fn, items, pure=False))


def bench_dask(repeats: int, quick: bool) -> tuple[str, list[str], list[Result], list[str]]:
    tiny = list(range(TINY_TASKS // 10 if quick else TINY_TASKS))
    rows = []
    cases: list[tuple[str, Any, bool]] = [
        ("workcrew process (local)", local_map, True),
        ("workcrew backend='dask'", dask_map, True),
        ("Dask client.map (one task per item)", raw_dask_map, False),
    ]
    for name, opener, ours in cases:
        seconds = timed_map(name, opener, square, tiny, [x * x for x in tiny], repeats)
        rows.append(Result(f"tiny tasks: {name}", len(tiny) / seconds, ours))
        progress(f"dask tiny {name}: {len(tiny) / seconds:,.0f} tasks/s")
    n = calibrate_spin(CPU_SECONDS)
    cpu = [n] * (CPU_TASKS // 4 if quick else CPU_TASKS)
    expected = [spin(n)] * len(cpu)
    serial = len(cpu) * CPU_SECONDS
    for name, opener, ours in cases:
        seconds = timed_map(name, opener, spin, cpu, expected, repeats)
        rows.append(Result(f"CPU speedup: {name}", serial / seconds, ours))
        progress(f"dask cpu {name}: speedup {serial / seconds:.2f}")
    notes = [
        f"A LocalCluster of {WORKERS} worker processes, one thread each, on this 2-core "
        f"machine, against a local process pool of {WORKERS}. Tiny tasks: "
        f"{len(tiny):,} calls of `x * x`, tasks per second. CPU: {len(cpu)} tasks of "
        f"{CPU_SECONDS * 1000:.0f} ms of pure Python, speedup over serial. Warm pools and "
        f"clusters, best of {repeats}.",
        "workcrew's dask backend sends one Dask task per chunk (adaptive chunk sizes), "
        f"{4 * WORKERS} chunks in flight (four per Dask thread, the default); client.map "
        "submits one task per item, all at once, so it pays Dask's per-task cost for each.",
    ]
    return "Dask backend: per-task overhead and CPU work", ["per second"], rows, notes
