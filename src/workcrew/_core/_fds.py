"""Descriptors a forked worker must close.

A child started with ``fork`` inherits every descriptor of its parent: the
master ends of every pipe of every pool in this process, wake pipes and
selectors.  If a child kept them, a pipe would stay open after its owner
died, and end-of-file (how a worker notices its master is gone) would never
come.  Every pool registers its master-side descriptors here; forked workers
close them all except their own.
"""

from __future__ import annotations

import threading

__all__ = ("master_fds", "register_master_fd", "unregister_master_fd")

_FDS: set[int] = set()
_LOCK = threading.Lock()


def register_master_fd(fd: int) -> None:
    """Record a descriptor that forked workers must close."""
    with _LOCK:
        _FDS.add(fd)


def unregister_master_fd(fd: int) -> None:
    """Forget a descriptor (call before closing it)."""
    with _LOCK:
        _FDS.discard(fd)


def master_fds() -> list[int]:
    """A snapshot of the registered descriptors."""
    with _LOCK:
        return sorted(_FDS)
