"""``workcrew advise module:function``: measure a function under each worker kind, recommend one.

EDGE module: uses only the public ``workcrew`` API.  It runs a sample of the
user's inputs through ``Pool.map`` for each kind at a few worker counts,
prints tasks/s for each, and recommends the fastest.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import workcrew

__all__ = ("advise", "load_function")


def load_function(spec: str) -> Callable[..., Any]:
    """``package.module:function`` -> the function (the current directory is importable)."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"expected MODULE:FUNCTION, got {spec!r} (for example mypkg.jobs:resize)")
    if module_name.startswith("."):
        raise ValueError(
            f"expected MODULE:FUNCTION with an absolute module name, got {spec!r} "
            "(for example mypkg.jobs:resize)"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except TypeError as exc:  # a name importlib cannot take (relative, malformed)
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from exc
    fn: Callable[..., Any] | None = getattr(module, name, None)
    if fn is None or not callable(fn):
        raise ValueError(f"{module_name} has no function {name!r}")
    return fn


def load_inputs(path: str | None, tasks: int) -> list[Any]:
    """One JSON value per line of ``path`` (the function's single argument), or 0..tasks-1."""
    if path is None:
        return list(range(tasks))
    lines = Path(path).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()][:tasks]


def candidates(fn: Callable[..., Any]) -> list[tuple[str, int]]:
    """(kind, workers) pairs worth measuring for ``fn`` on this machine."""
    cpus = workcrew.available_cpu_count()
    if inspect.iscoroutinefunction(fn):
        return [("async", 10), ("async", 100), ("process", cpus)]
    pairs = [("process", 1), ("process", cpus), ("thread", cpus), ("thread", 4 * cpus)]
    return sorted(set(pairs), key=pairs.index)


def measure(fn: Callable[..., Any], inputs: list[Any], kind: str, workers: int) -> float:
    """Tasks per second of ``Pool(workers, kind=kind).map(fn, inputs)`` (pool start excluded)."""
    with workcrew.Pool(workers, kind=kind) as pool:
        pool.map(fn, inputs[: max(1, min(len(inputs), workers))])  # start the workers
        start = time.perf_counter()
        pool.map(fn, inputs)
        return len(inputs) / (time.perf_counter() - start)


def advise(
    fn: Callable[..., Any], inputs: list[Any], write: Callable[[str], None] = print
) -> tuple[str, int]:
    """Print tasks/s of ``fn`` over ``inputs`` per kind; return the best (kind, workers)."""
    results = []
    write(f"{len(inputs)} tasks of {getattr(fn, '__qualname__', fn)!s} per run")
    write(f"{'kind':<8} {'workers':>7} {'tasks/s':>12}")
    for kind, workers in candidates(fn):
        rate = measure(fn, inputs, kind, workers)
        results.append((rate, kind, workers))
        write(f"{kind:<8} {workers:>7} {rate:>12,.0f}")
    rate, kind, workers = max(results)
    slowest = min(r for r, _, _ in results)
    write(
        f"recommendation: Pool({workers}, kind={kind!r}) - {rate:,.0f} tasks/s, "
        f"{rate / slowest:.1f}x the slowest option measured"
    )
    return kind, workers


def main(spec: str, inputs_path: str | None, tasks: int, write: Callable[[str], None]) -> int:
    """Entry point of ``workcrew advise``; returns the exit status."""
    fn = load_function(spec)
    inputs = load_inputs(inputs_path, tasks)
    if not inputs:
        raise ValueError("no inputs to measure with: give --tasks N or a non-empty --inputs file")
    advise(fn, inputs, write)
    return 0
