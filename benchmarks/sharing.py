"""Benchmarks of sharing between workers: large arrays, queues, locks.

Imported by ``run.py`` (``--only arrays``, ``--only queue``, ``--only locks``).
Worker functions are at module level so that process workers can import them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import workcrew
from common import FORK, MapFn, Result, check, progress

ARRAYS = 64
ARRAY_MIB = 16
WORKERS = 2
QUEUE_ITEMS = 200_000
LOCK_PAIRS = 1_000_000
BANK_OPERATIONS = 200_000


def total(a: np.ndarray[Any, Any]) -> float:
    return float(a.sum())


# -- arrays -------------------------------------------------------------------------------


@contextlib.contextmanager
def workcrew_map() -> Iterator[MapFn]:
    with workcrew.Pool(WORKERS, start_method="fork") as pool:
        yield lambda fn, items: pool.map(fn, items, chunksize=1)


@contextlib.contextmanager
def mp_map() -> Iterator[MapFn]:
    with FORK.Pool(WORKERS) as pool:
        yield lambda fn, items: pool.map(fn, items, chunksize=1)
        pool.close()
        pool.join()


@contextlib.contextmanager
def ppe_map() -> Iterator[MapFn]:
    with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=FORK) as ex:
        yield lambda fn, items: list(ex.map(fn, items))


@contextlib.contextmanager
def joblib_map() -> Iterator[MapFn]:
    import joblib

    # joblib memory-maps arrays above max_nbytes ("1M" by default) to a file in
    # /dev/shm and the workers map it: its zero-copy path, as configured by default.
    with joblib.Parallel(n_jobs=WORKERS) as parallel:
        yield lambda fn, items: parallel(joblib.delayed(fn)(x) for x in items)


@contextlib.contextmanager
def mpire_map() -> Iterator[MapFn]:
    import mpire

    with mpire.WorkerPool(WORKERS, start_method="fork") as pool:
        yield lambda fn, items: pool.map(fn, items, chunk_size=1)


def plain_arrays(base: np.ndarray[Any, Any], first: int, n: int) -> list[Any]:
    return [base + (first + k) for k in range(n)]


def shared_arrays(base: np.ndarray[Any, Any], first: int, n: int) -> list[Any]:
    """The same arrays, each computed directly into a ``workcrew.shared_array``."""
    arrays = []
    for k in range(n):
        a = workcrew.shared_array(base.shape, base.dtype)
        np.add(base, first + k, out=a)
        arrays.append(a)
    return arrays


def bench_arrays(repeats: int, quick: bool) -> tuple[str, list[str], list[Result], list[str]]:
    n = 8 if quick else ARRAYS
    base = np.random.default_rng(0).random(ARRAY_MIB * (1 << 20) // 8)
    moved = n * base.nbytes
    cases: list[tuple[str, Callable[[], Any], Callable[..., list[Any]], bool]] = [
        ("workcrew Pool.map", workcrew_map, plain_arrays, True),
        ("workcrew Pool.map, arrays built with shared_array", workcrew_map, shared_arrays, True),
        ("multiprocessing Pool.map", mp_map, plain_arrays, False),
        ("ProcessPoolExecutor.map", ppe_map, plain_arrays, False),
        ("joblib (loky, memmapping)", joblib_map, plain_arrays, False),
        ("mpire WorkerPool.map", mpire_map, plain_arrays, False),
    ]
    rows = []
    for name, opener, build, ours in cases:
        best = float("inf")
        with opener() as run:
            run(total, [base])  # warm-up: workers started
            for r in range(repeats):
                # Fresh arrays for every map, as a program producing data has: no
                # library may reuse what it shared for the previous map (joblib would).
                arrays = build(base, r * n, n)
                expected = [total(a) for a in arrays]
                start = time.perf_counter()
                got = run(total, arrays)
                best = min(best, time.perf_counter() - start)
                check(name, got, expected)
                del arrays
        rows.append(Result(name, moved / best / 1e9, ours))
        progress(f"arrays {name}: {moved / best / 1e9:.2f} GB/s")
    target = np.empty_like(base)
    copy = _best_of(5, lambda: np.copyto(target, base)) * n
    copy_distinct = _copy_distinct(base, n)
    notes = [
        f"{n} tasks, each given a distinct {ARRAY_MIB} MiB NumPy array (float64) and "
        f"returning its sum; {WORKERS} workers; GB/s = bytes of arrays / wall time of the map. "
        f"New arrays for each of {repeats} timed maps (best kept), warm pools.",
        f"For scale: one thread copies one {ARRAY_MIB} MiB array over and over (it stays in "
        f"the CPU's cache) at {moved / copy / 1e9:.1f} GB/s, and the {n} distinct arrays, "
        f"as a pool must, at {moved / copy_distinct / 1e9:.1f} GB/s: a path that copies each "
        "array once cannot beat that figure.",
        "workcrew sends arrays of 256 KiB or more through shared memory (pickle protocol 5 "
        "out-of-band buffers copied into memfd segments that are reused, kept mapped on both "
        "sides; see docs/arrays.md). The shared_array row builds each array directly in "
        "shared memory (`np.add(base, k, out=workcrew.shared_array(...))`, untimed, as "
        "building any array is): only a reference travels, the worker maps the same pages. "
        "joblib memory-maps arrays over 1 MB through files in /dev/shm; multiprocessing, "
        "ProcessPoolExecutor and mpire pickle them through a pipe.",
    ]
    return "Large arrays to process workers: bandwidth", ["GB/s"], rows, notes


def _copy_distinct(base: np.ndarray[Any, Any], n: int) -> float:
    """Seconds one thread takes to copy ``n`` distinct arrays (more than the CPU caches hold)."""
    sources = plain_arrays(base, 0, n)
    targets = [np.zeros_like(base) for _ in range(4)]
    return _best_of(3, lambda: [np.copyto(targets[k % 4], a) for k, a in enumerate(sources)])


def _best_of(repeats: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# -- queues -------------------------------------------------------------------------------


def produce(q: Any, n: int) -> None:
    for i in range(n):
        q.put((i, "item"))
    q.put(None)


def consume(q: Any, done: Any) -> None:
    count = 0
    while q.get() is not None:
        count += 1
    done.put(count)


def _queue_run(make_queue: Callable[[], Any], n: int) -> float:
    q = make_queue()
    done = FORK.SimpleQueue()
    consumer = FORK.Process(target=consume, args=(q, done))
    producer = FORK.Process(target=produce, args=(q, n))
    start = time.perf_counter()
    consumer.start()
    producer.start()
    count = done.get()
    seconds = time.perf_counter() - start
    producer.join()
    consumer.join()
    check("queue", [count], [n])
    return seconds


def bench_queue(repeats: int, quick: bool) -> tuple[str, list[str], list[Result], list[str]]:
    n = QUEUE_ITEMS // 10 if quick else QUEUE_ITEMS
    cases: list[tuple[str, Callable[[], Any], bool]] = [
        ("workcrew.Queue(maxsize=1000)", lambda: workcrew.Queue(maxsize=1000), True),
        ("workcrew.Queue()", workcrew.Queue, True),
        ("multiprocessing.Queue(maxsize=1000)", lambda: FORK.Queue(maxsize=1000), False),
        ("multiprocessing.Queue()", FORK.Queue, False),
        ("multiprocessing.SimpleQueue()", FORK.SimpleQueue, False),
    ]
    rows = []
    for name, make, ours in cases:
        seconds = min(_queue_run(make, n) for _ in range(repeats))
        rows.append(Result(name, n / seconds, ours))
        progress(f"queue {name}: {n / seconds:,.0f} items/s")
    notes = [
        f"One producer process puts {n:,} small tuples, one consumer process gets them "
        f"(then a None sentinel); items/s = {n:,} / wall time from starting both processes "
        f"to the consumer's count. Fork; best of {repeats}.",
        "multiprocessing.Queue's put returns at once (a feeder thread pickles and writes); "
        "SimpleQueue writes under a lock. workcrew.Queue copies each pickled item into a "
        "shared ring buffer under a shared mutex.",
    ]
    return "Queue throughput between two processes", ["items/s"], rows, notes


# -- locks --------------------------------------------------------------------------------


def _pairs(lock: Any, n: int) -> float:
    acquire, release = lock.acquire, lock.release
    start = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter() - start) / n * 1e9


def _with_blocks(lock: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        with lock:
            pass
    return (time.perf_counter() - start) / n * 1e9


def bank(balance: Any, lock: Any, n: int, sign: int) -> None:
    for _ in range(n):
        with lock:
            balance.value += sign


def _bank_run(balance: Any, lock: Any, n: int) -> float:
    workers = [FORK.Process(target=bank, args=(balance, lock, n, s)) for s in (1, -1)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - start
    check("bank account", [balance.value], [0])
    return seconds


def bench_locks(repeats: int, quick: bool) -> tuple[str, list[str], list[Result], list[str]]:
    n = LOCK_PAIRS // 10 if quick else LOCK_PAIRS
    ops = BANK_OPERATIONS // 10 if quick else BANK_OPERATIONS
    rows = []
    locks: list[tuple[str, Callable[[], Any], bool]] = [
        ("workcrew.Lock", workcrew.Lock, True),
        ("workcrew.RLock", workcrew.RLock, True),
        ("multiprocessing.Lock", FORK.Lock, False),
        ("multiprocessing.RLock", FORK.RLock, False),
        ("threading.Lock", threading.Lock, False),
    ]
    for name, make, ours in locks:
        lock = make()
        ns = min(_pairs(lock, n) for _ in range(repeats))
        rows.append(Result(f"uncontended acquire() + release(): {name}", 1e9 / ns, ours))
        with_ns = min(_with_blocks(lock, n) for _ in range(repeats))
        rows.append(Result(f"uncontended `with lock:`: {name}", 1e9 / with_ns, ours))
        progress(f"locks {name}: {ns:.0f} ns per pair, {with_ns:.0f} ns per with block")
    bank_cases: list[tuple[str, Callable[[], tuple[Any, Any]], bool]] = [
        ("workcrew Value + Lock", lambda: (workcrew.Value("i", 0), workcrew.Lock()), True),
        (
            "multiprocessing Value + Lock",
            lambda: (FORK.Value("i", 0, lock=False), FORK.Lock()),
            False,
        ),
    ]
    for name, make, ours in bank_cases:
        seconds = min(_bank_run(*make(), ops) for _ in range(repeats))
        rows.append(Result(f"bank account, 2 processes: {name}", 2 * ops / seconds, ours))
        progress(f"locks bank {name}: {2 * ops / seconds:,.0f} operations/s")
    notes = [
        f"Uncontended: {n:,} acquire/release pairs (or `with` blocks) in one thread, per "
        "second. workcrew.Lock is a subclass of the C type behind multiprocessing.Lock: "
        "release and `__exit__` are its C code, acquire and `__enter__` are one Python-level "
        "call that tries the C acquire without blocking. Deadlock detection itself costs "
        "nothing until a thread has to wait.",
        f"Bank account: the lecture's example, two processes doing {ops:,} locked "
        "`balance.value += 1` / `-= 1` each (checked to end at 0); operations per second. "
        "Compare rows within one section only.",
    ]
    return "Locks: uncontended cost and the bank account", ["per second"], rows, notes


if __name__ == "__main__":  # pragma: no cover - a quick manual look
    for fn in (bench_arrays, bench_queue, bench_locks):
        print(fn(1, True))
    multiprocessing.active_children()
