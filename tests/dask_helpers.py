"""Task functions for tests/test_dask.py: importable by the cluster's worker processes."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x


def token(_: object = None) -> str:
    return uuid.uuid4().hex


def flaky(path: str, failures: int) -> int:
    """Fail ``failures`` times (counted in a file), then succeed."""
    counter = Path(path)
    seen = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(seen + 1))
    if seen < failures:
        raise OSError(f"attempt {seen + 1} fails")
    return seen + 1


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)  # the workload: a task that outlives its timeout
    return seconds


def kill_my_worker_once(path: str) -> int:
    """Kill this Dask worker process the first time; succeed when Dask runs it again."""
    marker = Path(path)
    if not marker.exists():
        marker.write_text("killed")
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def kill_my_worker(_: object = None) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def total(array: Any) -> float:
    return float(array.sum())
