"""What every benchmark module shares: result checks, records, the CPU task, timing.

``run.py`` (the script) and ``kinds.py`` (the worker-kind workloads) both import
it; functions run by process workers live here or in those modules, at module
level, so that workers can import them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

FORK = multiprocessing.get_context("fork")

MapFn = Callable[[Callable[[Any], Any], list[Any]], list[Any]]


class BenchmarkError(RuntimeError):
    """A library returned a wrong result: the run is invalid."""


@dataclass(frozen=True)
class Result:
    """One row of a comparison: a library (or configuration) and its figure."""

    name: str
    value: float
    workcrew: bool
    note: str = ""


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def check(name: str, got: Sequence[Any], expected: Sequence[Any]) -> None:
    """Abort the whole run on a wrong result."""
    if len(got) != len(expected):
        raise BenchmarkError(f"{name}: {len(got)} results, expected {len(expected)}")
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if g != e:
            raise BenchmarkError(f"{name}: result #{i} is {g!r}, expected {e!r}")


def timed_map(
    name: str,
    open_map: Callable[[], contextlib.AbstractContextManager[MapFn]],
    fn: Callable[[Any], Any],
    items: list[Any],
    expected: list[Any],
    repeats: int,
) -> float:
    """Best wall time of ``repeats`` checked maps, after one warm-up map (pool made untimed)."""
    best = float("inf")
    with open_map() as run:
        check(name, run(fn, items), expected)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            got = run(fn, items)
            best = min(best, time.perf_counter() - start)
            check(name, got, expected)
    return best


def square(x: int) -> int:
    """The trivial task."""
    return x * x


def spin(n: int) -> int:
    """Pure-Python CPU work: ``n`` loop iterations."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


def calibrate_spin(seconds: float) -> int:
    """Iterations of :func:`spin` that take about ``seconds`` here, serially."""
    probe = 200_000
    best = min(_time_call(spin, probe) for _ in range(5))
    return max(1, round(probe * seconds / best))


def _time_call(fn: Callable[[int], Any], arg: int) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start
