"""Validated pool options, shared by every front end (Pool, Executor).

Invalid values raise here, at construction, with a message that says what was
given and what is accepted: nothing is discovered later inside a worker.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ("PoolOptions", "available_cpu_count", "default_start_method")

#: Worker kinds that exist today; later kinds register in workcrew._backends.
KINDS = ("process", "thread")
START_METHODS = ("fork", "spawn", "forkserver")


def available_cpu_count() -> int:
    """CPUs this process may run on (its affinity mask), not the machine's total."""
    n: int | None
    if sys.version_info >= (3, 13):
        n = os.process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS and Windows
        n = os.cpu_count()
    return max(1, n or 1)


def default_start_method() -> str:
    """The start method used when none is given.

    ``forkserver`` where the platform has it (Linux), else ``spawn``.  Not
    ``fork``: the pool's master thread, and any thread of your program, may hold
    a lock at the moment of ``fork()``, and the child then deadlocks on it (the
    reason CPython 3.12 warns and 3.14 switched its own default).  forkserver
    forks from a clean single-threaded server, so workers start fast and safe.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        return "forkserver"
    return "spawn"


@dataclass(frozen=True)
class PoolOptions:
    """Everything that shapes one pool; built by the front ends, read by the engine."""

    workers: int
    kind: str = "process"
    start_method: str = "forkserver"
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    max_tasks_per_worker: int | None = None
    chunksize: int | None = None

    @classmethod
    def build(
        cls,
        workers: int | None,
        *,
        kind: str = "process",
        start_method: str | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] | list[Any] = (),
        max_tasks_per_worker: int | None = None,
        chunksize: int | None = None,
    ) -> PoolOptions:
        """Check every value and fill in defaults; raise ``ValueError``/``TypeError``."""
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not a worker kind; choose one of {KINDS}")
        if workers is None:
            workers = default_workers(kind)
        _check_positive_int("workers", workers, "the number of workers")
        if start_method is None:
            start_method = default_start_method()
        if start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"start_method={start_method!r} is not available here; "
                f"choose one of {tuple(multiprocessing.get_all_start_methods())}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, got {initializer!r}")
        if not isinstance(initargs, (tuple, list)):
            raise TypeError(f"initargs must be a tuple, got {type(initargs).__name__}")
        if max_tasks_per_worker is not None:
            _check_positive_int("max_tasks_per_worker", max_tasks_per_worker, "tasks per worker")
        if chunksize is not None:
            check_chunksize(chunksize)
        return cls(
            workers=workers,
            kind=kind,
            start_method=start_method,
            initializer=initializer,
            initargs=tuple(initargs),
            max_tasks_per_worker=max_tasks_per_worker,
            chunksize=chunksize,
        )


def default_workers(kind: str) -> int:
    """One process per usable CPU; threads wait on IO, so more of them (as ThreadPoolExecutor)."""
    cpus = available_cpu_count()
    return min(32, cpus + 4) if kind == "thread" else cpus


def check_chunksize(chunksize: int | None) -> None:
    """``None`` means adaptive; anything else must be a positive int."""
    if chunksize is not None:
        _check_positive_int("chunksize", chunksize, "items per chunk, or None for adaptive")


def _check_positive_int(name: str, value: object, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int ({meaning}), got {value!r}")
    if value < 1:
        raise ValueError(f"{name}={value} is invalid: {meaning} must be at least 1")
