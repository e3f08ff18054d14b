"""Task functions for the tests: module level, so every start method can import them."""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any

#: Bound for every wait in the tests: reached only if something deadlocks.
TIMEOUT = 30.0

_state: dict[str, Any] = {}


def square(x: int) -> int:
    return x * x


def add(a: int, b: int = 0) -> int:
    return a + b


def identity(x: Any) -> Any:
    return x


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


def worker_name(_: object = None) -> str:
    """Unique per worker: the process name for process workers, the thread name for threads."""
    if threading.current_thread() is not threading.main_thread():
        return threading.current_thread().name
    return multiprocessing.current_process().name


def worker_pid(_: object = None) -> int:
    return os.getpid()


def set_state(value: Any) -> None:
    """An initializer: remembers a value in the worker."""
    _state[worker_name()] = value


def get_state(_: object = None) -> Any:
    return _state.get(worker_name())


def failing_initializer() -> None:
    raise RuntimeError("initializer refuses")


def wait_for_fifo(path: str) -> str:
    """Block until someone writes to the FIFO at ``path`` (works across processes)."""
    with open(path) as fifo:
        return fifo.read()


def release_fifo(path: str, text: str = "go") -> None:
    with open(path, "w") as fifo:
        fifo.write(text)


def hard_exit(code: int) -> None:
    os._exit(code)


def return_lock(_: object = None) -> threading.Lock:
    return threading.Lock()


class Unrebuildable(Exception):
    """Pickles, but cannot be unpickled: its __init__ needs two arguments."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")


def raise_unrebuildable(_: object = None) -> None:
    raise Unrebuildable(1, 2)


class NotImportableHere:
    """A class the tests make unimportable on purpose."""


def signal_then_wait(started: str, gate: str) -> str:
    """Tell the test this task runs (FIFO ``started``), then block on FIFO ``gate``."""
    release_fifo(started, "started")
    return wait_for_fifo(gate)


def make_gates(directory: Any) -> tuple[str, str]:
    """Two FIFOs: one the task opens to say it started, one that releases it."""
    started, gate = str(directory / "started"), str(directory / "gate")
    os.mkfifo(started)
    os.mkfifo(gate)
    return started, gate
