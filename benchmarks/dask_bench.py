"""Benchmark of backend="dask" against Dask itself and the local process kind (``--only dask``).

Two clusters of 2 worker processes (one thread each) on this machine, so the
comparison shows what Dask's scheduler and its transport cost, not more
hardware: the way a real cluster is run (``dask scheduler`` and two ``dask
worker`` processes started with the command line, reached by address), and a
``LocalCluster`` in this process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import workcrew
from common import MapFn, Result, calibrate_spin, progress, spin, square, timed_map

WORKERS = 2
TINY_TASKS = 20_000
CPU_TASKS = 200
CPU_SECONDS = 0.006
#: The explicit chunk size that did best on the CPU workload (issue 16's table).
BEST_CHUNKSIZE = 25
#: Seconds the command-line cluster may take to start.
START_TIMEOUT = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def command_line_cluster() -> Iterator[str]:
    """``dask scheduler`` and WORKERS ``dask worker --nthreads 1`` processes; their address."""
    import distributed

    dask = str(Path(sys.executable).parent / "dask")
    address = f"tcp://127.0.0.1:{_free_port()}"
    port = address.rsplit(":", 1)[1]
    # the scheduler and workers import the tasks' module (this one), as a cluster's would
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, *sys.path[1:]])}
    with tempfile.TemporaryDirectory() as scratch:
        common = ["--no-dashboard"]
        procs = [
            subprocess.Popen(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", port, *common],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=scratch,
                env=env,
            )
        ]
        worker = [dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1", *common]
        worker += ["--local-directory", scratch]
        for _ in range(WORKERS):
            procs.append(
                subprocess.Popen(
                    worker, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
                )
            )
        try:
            with distributed.Client(address, timeout=START_TIMEOUT) as client:
                client.wait_for_workers(WORKERS, timeout=START_TIMEOUT)
            yield address
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait()


@contextlib.contextmanager
def local_cluster() -> Iterator[str]:
    """A LocalCluster of WORKERS processes, one thread each, on 127.0.0.1; its address."""
    import distributed

    with distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        yield cluster.scheduler_address


def openers(address: Any) -> list[tuple[str, Callable[[], Any], bool]]:
    """The contenders on one cluster: workcrew's defaults, a tuned chunk size, client.map."""

    @contextlib.contextmanager
    def workcrew_map(chunksize: int | None) -> Iterator[MapFn]:
        with workcrew.Pool(backend="dask", address=address) as pool:  # defaults otherwise
            yield lambda fn, items: pool.map(fn, items, chunksize=chunksize)

    @contextlib.contextmanager
    def client_map() -> Iterator[MapFn]:
        import distributed

        with distributed.Client(address) as client:
            yield lambda fn, items: client.gather(client.map(fn, items, pure=False))

    return [
        ("workcrew backend='dask', defaults", lambda: workcrew_map(None), True),
        (
            f"workcrew backend='dask', chunksize={BEST_CHUNKSIZE}",
            lambda: workcrew_map(BEST_CHUNKSIZE),
            True,
        ),
        ("Dask client.map (one task per item)", client_map, False),
    ]


@contextlib.contextmanager
def local_map() -> Iterator[MapFn]:
    with workcrew.Pool(WORKERS, start_method="fork") as pool:
        yield pool.map


def _measure(
    setup: str, cases: list[tuple[str, Callable[[], Any], bool]], repeats: int, quick: bool
) -> list[Result]:
    rows = []
    tiny = list(range(TINY_TASKS // 10 if quick else TINY_TASKS))
    for name, opener, ours in cases:
        if "chunksize=" in name:
            continue  # tiny tasks: the defaults are the point
        seconds = timed_map(name, opener, square, tiny, [x * x for x in tiny], repeats)
        rows.append(Result(f"{setup}, tiny tasks: {name}", len(tiny) / seconds, ours))
        progress(f"dask {setup} tiny {name}: {len(tiny) / seconds:,.0f} tasks/s")
    n = calibrate_spin(CPU_SECONDS)
    cpu = [n] * (CPU_TASKS // 4 if quick else CPU_TASKS)
    serial = _best_serial(cpu, repeats)  # measured now: this machine's speed of the moment
    for name, opener, ours in cases:
        seconds = timed_map(name, opener, spin, cpu, [spin(n)] * len(cpu), repeats)
        rows.append(Result(f"{setup}, CPU speedup: {name}", serial / seconds, ours))
        progress(f"dask {setup} cpu {name}: speedup {serial / seconds:.2f}")
    return rows


def _best_serial(items: list[int], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for n in items:
            spin(n)
        best = min(best, time.perf_counter() - start)
    return best


def bench_dask(repeats: int, quick: bool) -> tuple[str, list[str], list[Result], list[str]]:
    local = ("workcrew process pool (no cluster)", local_map, True)
    with command_line_cluster() as address:
        rows = _measure("dask CLI cluster", [*openers(address), local], repeats, quick)
    with local_cluster() as address:
        rows += _measure("LocalCluster", openers(address), repeats, quick)
    notes = [
        f"Two clusters of {WORKERS} worker processes, one thread each, on this 2-core "
        "machine: `dask scheduler` and `dask worker --nthreads 1` started as separate "
        "processes with Dask's command line and reached by address (as a real cluster is), "
        "and a `LocalCluster`; beside them a local workcrew process pool of "
        f"{WORKERS}. Tiny tasks: {TINY_TASKS:,} calls of `x * x`, tasks per second. CPU: "
        f"{CPU_TASKS} tasks of {CPU_SECONDS * 1000:.0f} ms of pure Python, speedup over "
        f"serial (the ideal is {WORKERS}). Warm pools and clusters, best of {repeats}.",
        "workcrew's defaults: one Dask task per chunk, chunk sizes adapted to the tasks' "
        "durations and to the cluster's measured cost per chunk, four chunks in flight per "
        "cluster thread (read from the scheduler). client.map submits one task per item, "
        "all at once, so it pays Dask's per-task cost for each.",
    ]
    return "Dask backend: per-task overhead and CPU work", ["per second"], rows, notes
