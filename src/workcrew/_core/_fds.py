"""Descriptors a forked worker must close.

A child started with ``fork`` inherits every descriptor of its parent: the
master ends of every pipe of every pool in this process, wake pipes and
selectors.  If a child kept them, a pipe would stay open after its owner
died, and end-of-file (how a worker notices its master is gone) would never
come.  Every pool registers its master-side descriptors here; forked workers
close them all except their own.

Race: the list is taken before the fork, and another pool's thread may close
one of its descriptors in between, so that the number names a new file at
the moment of the fork (the fork's own sentinel pipe, say).  A child closing
it by number would close its own pipe: its parent then sees the sentinel fire
while it still runs.  So each descriptor is recorded with the identity of the
file it named (device, inode), and the child closes only a number that still
names that file (:func:`close_inherited`).
"""

from __future__ import annotations

import os
import threading

__all__ = (
    "PipeEnd",
    "close_inherited",
    "master_fds",
    "pipe",
    "register_master_fd",
    "unregister_master_fd",
)

#: A descriptor, and the (device, inode) of the file it named when registered.
Inherited = tuple[int, tuple[int, int]]

_FDS: dict[int, tuple[int, int]] = {}
_LOCK = threading.Lock()


def register_master_fd(fd: int) -> None:
    """Record a descriptor that forked workers must close."""
    identity = _identity(fd)
    if identity is not None:
        with _LOCK:
            _FDS[fd] = identity


def unregister_master_fd(fd: int) -> None:
    """Forget a descriptor (call before closing it)."""
    with _LOCK:
        _FDS.pop(fd, None)


def master_fds() -> list[Inherited]:
    """A snapshot of the registered descriptors, with the files they named."""
    with _LOCK:
        return sorted(_FDS.items())


def close_inherited(inherited: list[Inherited], keep: set[int]) -> None:
    """In a forked child: close the master descriptors of ``inherited`` but ``keep``.

    A number that names another file than the one registered (closed and
    reused by the parent since the snapshot) is left alone.
    """
    for fd, identity in inherited:
        if fd not in keep and _identity(fd) == identity:
            try:
                os.close(fd)
            except OSError:
                pass


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        stat = os.fstat(fd)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class PipeEnd:
    """One end of a pipe, by its descriptor: how a worker process is given its pipes.

    A forked child inherits it as it is; for a new process (spawn, the fork
    server) it pickles through ``multiprocessing``'s descriptor passing, as a
    ``Connection`` does, without loading ``multiprocessing.connection`` in
    the worker.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        """The descriptor (-1 once closed)."""
        return self.fd

    def close(self) -> None:
        """Close the descriptor (once)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __reduce__(self) -> tuple[object, ...]:
        from multiprocessing import reduction  # only while a process starts

        return (_rebuild_pipe_end, (reduction.DupFd(self.fd),))


def _rebuild_pipe_end(passed: object) -> PipeEnd:
    return PipeEnd(passed.detach())  # type: ignore[attr-defined]  # multiprocessing's DupFd objects


def pipe() -> tuple[PipeEnd, PipeEnd]:
    """A new pipe's (read, write) ends, not inherited by programs this process executes."""
    read, write = os.pipe()
    return PipeEnd(read), PipeEnd(write)
