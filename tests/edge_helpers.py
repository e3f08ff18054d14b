"""Module-level task functions for test_edges.py (importable by spawned workers)."""

from __future__ import annotations

import os
import time

from helpers import release_fifo


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


def segfault_at_start() -> None:
    """An initializer that crashes its worker before it is ready."""
    import faulthandler

    faulthandler.disable()
    faulthandler._sigsegv()
