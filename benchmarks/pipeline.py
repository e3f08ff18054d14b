"""Benchmark of ``workcrew.Pipeline`` against the same pipeline written by hand.

The workload is the issue's fetch -> parse -> store shape: a thread stage that
waits (a short sleep standing in for a download), a CPU-bound stage on process
workers (a calibrated pure-Python loop), and a light thread stage.  The
hand-written baseline is what one writes with ``multiprocessing``: a
``queue.Queue`` into fetch threads, bounded ``multiprocessing.Queue``s around
the worker processes, store threads, and shutdown by sentinels, stage after
stage.  Both are timed cold: processes started and stopped inside the timing.

``bench_pipeline(quick)`` returns the rows; ``run.py`` prints them.  Run alone:
``.venv/bin/python benchmarks/pipeline.py [--quick]``.  Stage functions are
at module level so that process workers can import them.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import workcrew
from common import FORK, Result, calibrate_spin, check, progress, spin

ITEMS = 4_000
QUICK_ITEMS = 1_000
FETCH_SECONDS = 0.002
FETCH_THREADS = 16
PARSE_SECONDS = 0.001
PARSE_PROCESSES = 2
STORE_THREADS = 2
BUFFER = 64
#: distinct loop lengths: results depend on the item, expected values stay cheap
VARIANTS = 7

#: what the rows mean (run.py puts these under the table)
NOTES = [
    f"3 stages: fetch ({FETCH_THREADS} threads, a {FETCH_SECONDS * 1000:.0f} ms sleep each) -> "
    f"parse ({PARSE_PROCESSES} processes, ~{PARSE_SECONDS * 1000:.0f} ms of pure-Python CPU "
    f"each) -> store ({STORE_THREADS} threads, trivial); {ITEMS:,} items ({QUICK_ITEMS:,} with "
    f"--quick); queues of {BUFFER} between stages; fork start method; cold (processes started "
    "and stopped inside the timing), best of the repeats.",
    "items/s; the parse stage bounds it at "
    f"{PARSE_PROCESSES} / {PARSE_SECONDS * 1000:.0f} ms = "
    f"{PARSE_PROCESSES / PARSE_SECONDS:,.0f} items/s.",
    "hand-written: queue.Queue -> fetch threads -> multiprocessing.Queue -> Process workers -> "
    "multiprocessing.Queue -> store threads, unordered, sentinel shutdown stage by stage.",
]

_iterations = 0  # set by bench_pipeline before any worker starts (fork inherits it)


def fetch(x: int) -> int:
    """Stands in for a download: waits, uses no CPU."""
    time.sleep(FETCH_SECONDS)
    return x


def parse(x: int) -> tuple[int, int]:
    """CPU-bound: about PARSE_SECONDS of pure-Python work."""
    return x, spin(_iterations + x % VARIANTS)


def store(pair: tuple[int, int]) -> tuple[int, int]:
    """Light work in the caller's process."""
    x, value = pair
    return x, value + 1


# -- the hand-written baseline ----------------------------------------------------------


def _fetch_thread(inbox: queue.Queue[int | None], outbox: Any) -> None:
    while (x := inbox.get()) is not None:
        outbox.put(fetch(x))


def _parse_process(inbox: Any, outbox: Any) -> None:
    while (x := inbox.get()) is not None:
        outbox.put(parse(x))


def _store_thread(inbox: Any, results: list[tuple[int, int]], lock: threading.Lock) -> None:
    while (pair := inbox.get()) is not None:
        stored = store(pair)
        with lock:
            results.append(stored)


def hand_written(items: list[int]) -> list[tuple[int, int]]:
    """The pipeline with multiprocessing Queues and Processes, shut down by sentinels."""
    to_fetch: queue.Queue[int | None] = queue.Queue(BUFFER)
    to_parse = FORK.Queue(BUFFER)
    to_store = FORK.Queue(BUFFER)
    results: list[tuple[int, int]] = []
    lock = threading.Lock()
    # Processes first: forking once this process runs threads risks inheriting held locks.
    parsers = [
        FORK.Process(target=_parse_process, args=(to_parse, to_store))
        for _ in range(PARSE_PROCESSES)
    ]
    for process in parsers:
        process.start()
    fetchers = [
        threading.Thread(target=_fetch_thread, args=(to_fetch, to_parse))
        for _ in range(FETCH_THREADS)
    ]
    storers = [
        threading.Thread(target=_store_thread, args=(to_store, results, lock))
        for _ in range(STORE_THREADS)
    ]
    for thread in fetchers + storers:
        thread.start()
    for x in items:
        to_fetch.put(x)
    # Each stage ends once the one before it has: one sentinel per consumer.
    for _ in fetchers:
        to_fetch.put(None)
    for thread in fetchers:
        thread.join()
    for _ in parsers:
        to_parse.put(None)
    for process in parsers:
        process.join()  # the store threads keep draining, so the workers' queues flush
    for _ in storers:
        to_store.put(None)
    for thread in storers:
        thread.join()
    for q in (to_parse, to_store):
        q.close()
        q.join_thread()
    return results


# -- workcrew ---------------------------------------------------------------------------


def with_pipeline(items: list[int], ordered: bool) -> list[tuple[int, int]]:
    pipe = workcrew.Pipeline(
        workcrew.Stage(fetch, workers=FETCH_THREADS),
        workcrew.Stage(parse, kind="process", workers=PARSE_PROCESSES, start_method="fork"),
        workcrew.Stage(store, workers=STORE_THREADS),
        ordered=ordered,
        buffer=BUFFER,
    )
    return list(pipe.run(items))


Runner = Callable[[list[int]], list[tuple[int, int]]]

CASES: list[tuple[str, Runner, bool, bool]] = [
    # name, run(items), ordered, workcrew
    ("workcrew Pipeline, ordered", lambda items: with_pipeline(items, True), True, True),
    ("workcrew Pipeline, unordered", lambda items: with_pipeline(items, False), False, True),
    ("multiprocessing Queues + Processes, by hand", hand_written, False, False),
]


def _timed(name: str, run: Runner, items: list[int], ordered: bool) -> float:
    """Seconds of one run, whose results are checked (untimed) against a serial computation."""
    start = time.perf_counter()
    got = run(items)
    seconds = time.perf_counter() - start
    table = [spin(_iterations + v) + 1 for v in range(VARIANTS)]  # store(parse(x)), per variant
    check(name, got if ordered else sorted(got), [(x, table[x % VARIANTS]) for x in items])
    return seconds


def bench_pipeline(quick: bool) -> list[Result]:
    """A 3-stage pipeline: workcrew.Pipeline (ordered, unordered) vs hand-written; items/s."""
    global _iterations
    _iterations = calibrate_spin(PARSE_SECONDS)
    n = QUICK_ITEMS if quick else ITEMS
    items = list(range(n))
    for name, run, ordered, _ in CASES:
        _timed(name, run, items[:100], ordered)  # warm-up: imports, first fork
    best = {name: float("inf") for name, *_ in CASES}
    for _ in range(1 if quick else 3):  # rounds alternate the cases: load drifts hit all alike
        for name, run, ordered, _ in CASES:
            best[name] = min(best[name], _timed(name, run, items, ordered))
    rows = []
    for name, _, _, ours in CASES:
        rows.append(Result(name, n / best[name], ours))
        progress(f"pipeline {name}: {n / best[name]:,.0f} items/s")
    return rows


if __name__ == "__main__":
    results = bench_pipeline("--quick" in sys.argv)
    peer = max(r.value for r in results if not r.workcrew)
    print(f"workcrew {workcrew.__version__}; {NOTES[0]}")
    for r in results:
        print(f"{r.name:<48} {r.value:>10,.0f} items/s  {r.value / peer:.2f}x")
