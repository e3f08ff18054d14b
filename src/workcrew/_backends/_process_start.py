"""Starting worker processes: the resource tracker spawn needs, and children that die at birth."""

from __future__ import annotations

import os
import sys
import traceback

__all__ = ("reap_unstarted", "start_tracker_without_stdout")

#: Seconds to learn how a child that died at birth ended (it is already dead).
_REAP_TIMEOUT = 5.0


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
