"""Starting worker processes: multiprocessing's helpers, and children that die at birth."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

__all__ = ("reap_unstarted", "start_helpers_without_stdout")

#: Seconds to learn how a child that died at birth ended (it is already dead).
_REAP_TIMEOUT = 5.0


def reap_unstarted(exc: BaseException, start_method: str) -> tuple[int | None, int | None]:
    """The pid and exit status of a child that died before it read its start-up data.

    multiprocessing raises ``BrokenPipeError`` from ``Process.start()`` when
    the new child is gone before the parent has written it its preparation
    data, and drops the ``Popen`` it made.  We find that ``Popen`` in the
    exception's frames (``_launch``, in every Python we support) to reap a
    spawned child (else it stays a zombie) and to learn how it ended, so that
    a kill from outside is told apart from a broken environment.  A forkserver
    child is reaped by the server, which reports its pid and status.
    ``(None, None)`` if either cannot be learned within a bounded wait.
    """
    from multiprocessing.connection import wait

    popen = next(
        (
            frame.f_locals.get("self")
            for frame, _ in traceback.walk_tb(exc.__traceback__)
            if frame.f_code.co_name == "_launch"
        ),
        None,
    )
    sentinel = getattr(popen, "sentinel", None)
    if popen is None or sentinel is None:
        return None, None
    try:
        if start_method == "forkserver":
            from multiprocessing import forkserver

            fields: list[int] = []
            for _ in range(2):  # the pid, then the exit status once the server reaped it
                if not wait([sentinel], _REAP_TIMEOUT):
                    return (fields[0] if fields else None), None
                fields.append(forkserver.read_signed(sentinel))
            return fields[0], fields[1]
        return popen.pid, popen.wait(_REAP_TIMEOUT)
    except (OSError, EOFError):
        return getattr(popen, "pid", None), None


def start_helpers_without_stdout(start_method: str) -> None:
    """Start multiprocessing's resource tracker (and forkserver) with /dev/null as stdout.

    These helpers live as long as any process holds their pipes, and a
    grandchild a task forks inherits those: had they the caller's stdout,
    ``python script.py | cat`` would wait for that grandchild to end.  Their
    stderr stays the caller's (the tracker reports leaks there).  They are
    started once per process, from the thread creating the first pool; while
    they start (a few milliseconds) another thread's writes to file
    descriptor 1 go to /dev/null.
    """
    from multiprocessing import forkserver, resource_tracker

    tracker_running = getattr(resource_tracker._resource_tracker, "_pid", None) is not None
    server_running = getattr(forkserver._forkserver, "_forkserver_pid", None) is not None
    if tracker_running and (server_running or start_method != "forkserver"):
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
        if start_method == "forkserver":
            _preload_worker_code(forkserver._forkserver)
            forkserver.ensure_running()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


#: What every process worker runs; preloaded by the forkserver, so that a worker
#: forked from it starts with this code imported instead of importing it again.
WORKER_MODULE = "workcrew._backends._process_worker"


def _preload_worker_code(server: Any) -> None:
    """Add the worker's module to what the forkserver imports once, when it starts.

    Only a server not yet running takes it (one started earlier by someone else
    keeps its own list); the caller's own preloads (``__main__`` by default)
    stay, and come first.
    """
    modules = list(getattr(server, "_preload_modules", None) or ["__main__"])
    if WORKER_MODULE not in modules:
        server.set_forkserver_preload([*modules, WORKER_MODULE])
