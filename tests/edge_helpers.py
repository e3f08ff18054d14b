"""Module-level task functions for test_edges.py (importable by spawned workers)."""

from __future__ import annotations

import os
import threading
import time

from helpers import release_fifo, wait_for_fifo


def fork_then(started: str, then: str) -> None:
    """Fork a grandchild that outlives this task, say its pid on FIFO ``started``, then
    crash (``then="crash"``) or run until stopped (``"hang"``)."""
    pid = os.fork()
    if pid == 0:  # the grandchild: holds every descriptor the worker had, until killed
        time.sleep(3600)
        os._exit(0)
    release_fifo(started, str(pid))
    if then == "crash":
        os._exit(3)
    time.sleep(3600)  # stopped by the pool: task_timeout or terminate()


def check_size(data: bytes) -> None:
    """An initializer that checks its (large) argument arrived whole."""
    if data != b"x" * len(data):
        raise ValueError("the initializer's argument arrived damaged")


def segfault_at_start() -> None:
    """An initializer that crashes its worker before it is ready."""
    import faulthandler

    faulthandler.disable()
    faulthandler._sigsegv()


# A result whose unpickling, in the caller, waits until the test lets it finish.
UNPICKLING = threading.Event()  # set (in the caller) when such a result starts unpickling
MAY_FINISH = threading.Event()  # set by the test to let that unpickling end


class SlowToLoad:
    """A task's result that is slow to unpickle (see :func:`_load_slowly`)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid  # the worker that made it

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (_load_slowly, (self.pid,))


def _load_slowly(pid: int) -> SlowToLoad:
    UNPICKLING.set()
    if not MAY_FINISH.wait(60):
        raise RuntimeError("the test never let the result finish unpickling")
    return SlowToLoad(pid)


def slow_to_load() -> SlowToLoad:
    """A task: its result takes as long as the caller's test wants to unpickle."""
    return SlowToLoad(os.getpid())


def run_until_stopped() -> None:
    """A task that only the pool ends (task_timeout, terminate)."""
    time.sleep(3600)


def slow_to_load_then_log(go: str, logged: str) -> SlowToLoad:
    """A task like :func:`slow_to_load` that leaves a thread behind in its worker.

    Once FIFO ``go`` is written (after the result was sent), the thread logs
    "after the slow result" at INFO on logger ``edge``, then writes FIFO ``logged``.
    """

    def log_later() -> None:
        import logging

        wait_for_fifo(go)
        logging.getLogger("edge").info("after the slow result")
        release_fifo(logged)

    threading.Thread(target=log_later, daemon=True).start()
    return SlowToLoad(os.getpid())
