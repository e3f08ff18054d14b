"""Module-level functions and objects for test_compat.py (importable by spawned workers)."""

from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any

#: set by ``remember`` in each worker process (initializer effects)
_remembered: Any = None


class ExitAtPickle:
    """Pickling it raises SystemExit (CPython's test_deadlock.ExitAtPickle)."""

    def __reduce__(self) -> Any:
        sys.exit(1)


class ExitAtUnpickle:
    """Unpickling it raises SystemExit, wherever that happens."""

    def __reduce__(self) -> Any:
        return (sys.exit, (1,))


class ExitAtUnpickleInCaller:
    """Unpickles in workers; unpickling it in the caller raises SystemExit."""

    def __reduce__(self) -> Any:
        return (_exit_in_caller, ())


def _exit_in_caller() -> ExitAtUnpickleInCaller:
    if multiprocessing.parent_process() is None:
        sys.exit(1)
    return ExitAtUnpickleInCaller()


class RefusesPickle:
    """Its __reduce__ raises RuntimeError (CPython's test_map_unplicklable)."""

    def __reduce__(self) -> Any:
        raise RuntimeError("cannot pickle")


def make(name: str) -> Any:
    """An instance of the named class of this module, built in the worker."""
    return globals()[name]()


def segfault() -> None:
    import faulthandler

    faulthandler.disable()
    faulthandler._sigsegv()


def say(text: str) -> int:
    print(text, flush=True)
    return os.getpid()


def put_on(queue: Any, item: Any) -> None:
    """An initializer: announce this worker on a multiprocessing queue."""
    queue.put(item)


def count_in(value: Any) -> None:
    """An initializer: add one to a multiprocessing.Value (or a manager namespace)."""
    if hasattr(value, "get_lock"):
        with value.get_lock():
            value.value += 1
    else:
        value.test += 1


def remember(*objects: Any) -> None:
    """An initializer: keep what it was given for the tasks."""
    global _remembered
    _remembered = objects


def use_remembered(_: object = None) -> str:
    """Use every multiprocessing object the initializer kept; report what was seen."""
    queue, lock, event, value, namespace = _remembered
    with lock:
        value.value += 1
    event.set()
    queue.put("from the worker")
    namespace.seen = True
    return "used"


def nbytes(data: bytes) -> int:
    return len(data)


def make_blob(megabytes: int) -> bytes:
    return b"x" * (megabytes << 20)


def wait_then_square(event: Any, x: int) -> int:
    event.wait(60)
    return x * x


async def asquare(x: int) -> int:
    return x * x


def set_on(namespace: Any, value: Any) -> Any:
    """Set ``namespace.value`` (a manager proxy passed as a task argument)."""
    namespace.value = value
    return value
