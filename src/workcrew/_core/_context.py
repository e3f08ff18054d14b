"""Whether the current code runs inside a workcrew worker (to warn about nested pools)."""

from __future__ import annotations

import os
import threading

__all__ = ("ENV_WORKER", "in_worker", "mark_worker_thread")

#: Set in every worker process (and inherited by what it starts): its worker id.
ENV_WORKER = "WORKCREW_WORKER"

_local = threading.local()


def mark_worker_thread() -> None:
    """Record that the calling thread is a workcrew worker (thread and async kinds)."""
    _local.worker = True


def in_worker() -> bool:
    """True inside a worker process or worker thread of some pool."""
    return bool(os.environ.get(ENV_WORKER)) or getattr(_local, "worker", False)
