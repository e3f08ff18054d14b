"""Starting worker processes: pipe capacity, the tracker spawn needs, children dying at birth."""

from __future__ import annotations

import os
import sys
import traceback

from .._core._fds import PipeEnd, pipe, unregister_master_fd

__all__ = (
    "DEFAULT_PIPE_CAPACITY",
    "PIPE_BUDGET",
    "PIPE_CAPACITY",
    "discard_pipes",
    "pipe_capacity",
    "reap_unstarted",
    "start_tracker_without_stdout",
    "task_and_result_pipes",
    "widen_pipe",
)

#: Seconds to learn how a child that died at birth ended (it is already dead).
_REAP_TIMEOUT = 5.0

#: What a new pipe holds on Linux.
DEFAULT_PIPE_CAPACITY = 64 * 1024
#: What a worker's task pipe and result pipe are widened to, in a small pool.
PIPE_CAPACITY = 256 * 1024
#: What one pool's widened pipes may hold in all (a quarter of Linux's
#: default per-user soft limit, ``/proc/sys/fs/pipe-user-pages-soft``).
PIPE_BUDGET = 16 * 1024 * 1024


def pipe_capacity(workers: int) -> int | None:
    """The capacity for each worker's task and result pipe, or None to keep the default.

    Why wider: a chunk of tiny tasks, and its results, take hundreds of
    kilobytes.  Through a 64 KiB pipe the writer waits for the reader to
    drain every 64 KiB: a worker's result waits on the master thread, which
    serves all the workers, and a chunk reaches its worker in pieces.  (A map
    of 200,000 ``x*x`` on 2 workers: 18.8 ms median with 64 KiB pipes, 14.9
    with 256 KiB; 512 KiB and 1 MiB gained nothing more.)

    Why bounded: the kernel counts pipe capacity per user.  Past the soft
    limit it refuses to widen a pipe (we keep the default) and gives every
    *new* pipe of that user, in any program, only two pages.  So a pool's
    widened pipes stay within ``PIPE_BUDGET``: 256 KiB up to 32 workers,
    128 KiB up to 64, the default beyond.
    """
    capacity = PIPE_CAPACITY
    while capacity > DEFAULT_PIPE_CAPACITY and 2 * workers * capacity > PIPE_BUDGET:
        capacity //= 2
    return capacity if capacity > DEFAULT_PIPE_CAPACITY else None


def task_and_result_pipes(workers: int) -> tuple[PipeEnd, PipeEnd, PipeEnd, PipeEnd]:
    """A worker's task pipe and result pipe, (read, write) each, in a pool of ``workers``."""
    task_r, task_w = pipe()
    result_r, result_w = pipe()
    capacity = pipe_capacity(workers)
    if capacity is not None:  # chunks and results then pass in one piece (see pipe_capacity)
        widen_pipe(task_w.fileno(), capacity)
        widen_pipe(result_w.fileno(), capacity)
    return task_r, task_w, result_r, result_w


def discard_pipes(ends: tuple[PipeEnd, ...]) -> None:
    """Close the pipes of a worker that never started (registered master ends forgotten first)."""
    for end in ends:
        if end.fileno() >= 0:
            unregister_master_fd(end.fileno())
            end.close()


def widen_pipe(fd: int, capacity: int) -> bool:
    """Let the pipe behind ``fd`` hold ``capacity`` bytes; False if the system refuses.

    A refusal (another system than Linux, a user over the kernel's pipe
    limits, a capacity over ``/proc/sys/fs/pipe-max-size``) leaves the pipe
    as it was: wider pipes are only faster, never needed.
    """
    import fcntl

    setter = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if setter is None:
        return False
    try:
        fcntl.fcntl(fd, setter, capacity)
    except OSError:
        return False
    return True


def reap_unstarted(exc: BaseException) -> tuple[int | None, int | None]:
    """The pid and exit status of a child that died before it read its start-up data.

    workcrew's fork server says so itself (:class:`~._forkserver.StartFailed`).
    Under spawn, multiprocessing raises ``BrokenPipeError`` from
    ``Process.start()`` when the new child is gone before the parent has
    written it its preparation data, and drops the ``Popen`` it made.  We find
    that ``Popen`` in the exception's frames (``_launch``, in every Python we
    support) to reap the child (else it stays a zombie) and to learn how it
    ended, so that a kill from outside is told apart from a broken
    environment.  ``(None, None)`` if either cannot be learned within a
    bounded wait.
    """
    from ._forkserver import StartFailed  # a rare path: loaded when taken

    if isinstance(exc, StartFailed):
        return exc.pid, exc.exitcode
    popen = next(
        (
            frame.f_locals.get("self")
            for frame, _ in traceback.walk_tb(exc.__traceback__)
            if frame.f_code.co_name == "_launch"
        ),
        None,
    )
    if popen is None or getattr(popen, "sentinel", None) is None:
        return None, None
    try:
        return popen.pid, popen.wait(_REAP_TIMEOUT)
    except OSError:
        return getattr(popen, "pid", None), None


def start_tracker_without_stdout() -> None:
    """Start multiprocessing's resource tracker (spawn needs it) with /dev/null as stdout.

    The tracker lives as long as any process holds its pipe, and a grandchild
    a task forks inherits that: had it the caller's stdout, ``python script.py
    | cat`` would wait for that grandchild to end.  Its stderr stays the
    caller's (it reports leaks there).  It is started once per process, from
    the thread creating the first spawn pool; while it starts (a few
    milliseconds) another thread's writes to file descriptor 1 go to
    /dev/null.  (workcrew's fork server needs no tracker, and starts itself
    with /dev/null as stdout; fork needs neither.)
    """
    from multiprocessing import resource_tracker

    if getattr(resource_tracker._resource_tracker, "_pid", None) is not None:
        return
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - a closed or replaced stdout: nothing to flush
        pass
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
