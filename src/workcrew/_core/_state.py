"""Per-worker state: what the pool's ``initializer`` returned, reached by ``worker_state()``.

Every worker kind does the same three things (see docs/worker-state.md):

* at start, :meth:`WorkerState.begin` calls the initializer; its return value
  is the worker's state (the kind awaits it first if it is awaitable, where it
  has an event loop);
* it binds the state where the worker's tasks run: :func:`bind_thread` for a
  worker that is one thread (thread kind; the async kind's loop thread),
  :func:`bind_process` for a worker that is a whole process (its hybrid
  threads and coroutines share it);
* when the worker ends gracefully it calls :meth:`WorkerState.end` (or
  :meth:`WorkerState.aend` on an event loop): ``worker_exit(state)``, whose
  exceptions are reported, never raised.

A thread's own binding wins over the process's, so a thread pool started
inside a process worker sees its own state.  ``worker_exit`` travels inside
the initializer (:class:`WorkerHooks`), so a process worker receives both in
the one pickle it already gets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable

from ._execute import function_name, is_awaitable
from ._public import public

TYPE_CHECKING = False  # typing is not loaded at run time: a worker imports this module
if TYPE_CHECKING:
    from typing import Any

__all__ = ("WorkerHooks", "WorkerState", "bind_process", "bind_thread", "worker_state")

log = logging.getLogger("workcrew")

_local = threading.local()  # .state: the WorkerState of a worker thread
_process_state: WorkerState | None = None  # the WorkerState of a worker process


class WorkerHooks:
    """The pool's ``initializer`` and ``worker_exit``, as the one callable workers start with.

    Calling it calls the initializer (if any) and returns its result; the
    workers find ``worker_exit`` on it.  Named after the initializer in messages.
    """

    def __init__(
        self,
        initializer: Callable[..., object] | None,
        worker_exit: Callable[[Any], object] | None,
    ) -> None:
        self.initializer = initializer
        self.worker_exit = worker_exit
        inner = "no initializer" if initializer is None else function_name(initializer)
        exit_name = "None" if worker_exit is None else function_name(worker_exit)
        self.__qualname__ = f"{inner} (with worker_exit={exit_name})"

    def __call__(self, *initargs: Any) -> object:
        return None if self.initializer is None else self.initializer(*initargs)


class WorkerState:
    """One worker's state and the hook that tears it down."""

    __slots__ = ("has_initializer", "value", "worker_exit")

    def __init__(
        self,
        value: Any = None,
        has_initializer: bool = False,
        worker_exit: Callable[[Any], object] | None = None,
    ) -> None:
        self.value = value
        self.has_initializer = has_initializer
        self.worker_exit = worker_exit

    @classmethod
    def begin(
        cls, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]
    ) -> WorkerState:
        """Call the pool's initializer (raises what it raises).

        ``value`` is then its result, possibly an awaitable that the caller
        awaits and stores back in ``value``.
        """
        worker_exit = None
        if isinstance(initializer, WorkerHooks):
            worker_exit, initializer = initializer.worker_exit, initializer.initializer
        if initializer is None:
            return cls(None, False, worker_exit)
        return cls(initializer(*initargs), True, worker_exit)

    def end(
        self,
        run: Callable[[Awaitable[Any]], object] | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        """Call ``worker_exit(state)`` if the pool has one; never raises.

        An awaitable it returns is waited for with ``run`` (default: a new
        event loop).  Its exception goes to ``report`` (default: the
        ``workcrew`` logger, with the traceback).
        """
        if self.worker_exit is None:
            return
        try:
            result = self.worker_exit(self.value)
            if is_awaitable(result):
                (run or _run_on_new_loop)(result)
        except BaseException as exc:  # noqa: BLE001 - a failing teardown must not break the pool
            _report(self.worker_exit, exc, report)

    async def aend(self) -> None:
        """:meth:`end` on a running event loop: an awaitable result is awaited there."""
        if self.worker_exit is None:
            return
        try:
            result = self.worker_exit(self.value)
            if is_awaitable(result):
                await result
        except BaseException as exc:  # noqa: BLE001 - a failing teardown must not break the pool
            _report(self.worker_exit, exc, None)


def _run_on_new_loop(awaitable: Awaitable[Any]) -> object:
    import asyncio

    async def wait() -> object:
        return await awaitable

    return asyncio.run(wait())


def _report(
    hook: Callable[..., object], exc: BaseException, report: Callable[[str], None] | None
) -> None:
    message = f"workcrew: worker_exit {function_name(hook)} raised {type(exc).__name__}: {exc}"
    if report is None:
        log.error("%s; the worker ended anyway", message, exc_info=exc)
    else:
        import traceback

        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        report("".join([message, "; the worker ended anyway\n", *lines]))


def bind_thread(state: WorkerState | None) -> None:
    """Make ``state`` the calling thread's (None: unbind); thread and async workers."""
    _local.state = state


def bind_process(state: WorkerState) -> None:
    """Make ``state`` the whole process's: a process worker, its threads and coroutines."""
    global _process_state
    _process_state = state
    # Under fork the child's thread may have inherited the forking thread's
    # binding (a thread worker that started this pool): that one is not ours.
    _local.state = None


def worker_state() -> Any:
    """The state of the worker running the current task: what the pool's initializer returned.

    Built once per worker, before its first task: one per thread of a
    ``kind="thread"`` pool, one per process of a ``kind="process"`` pool (the
    threads or coroutines of a hybrid worker share it), one per event loop of
    a ``kind="async"`` pool.  The typical use is a connection per worker::

        def connect(path):
            return sqlite3.connect(path)          # the worker's state

        def lookup(key):
            return workcrew.worker_state().execute("select ...", (key,)).fetchone()

        def disconnect(conn):
            conn.close()

        with Pool(4, initializer=connect, initargs=(path,), worker_exit=disconnect) as pool:
            rows = pool.map(lookup, keys)

    Raises ``RuntimeError`` outside a worker, and in a worker of a pool that
    has no initializer.
    """
    state = getattr(_local, "state", None) or _process_state
    if state is None:
        raise RuntimeError(
            "workcrew.worker_state() was called outside a worker: call it in a task (or in "
            "worker_exit) running on a pool's worker"
        )
    if not state.has_initializer:
        raise RuntimeError(
            "workcrew.worker_state() has no state to return: this pool has no initializer. "
            "Create the pool with initializer=<a function returning the state>, e.g. "
            "Pool(initializer=open_connection, initargs=(url,))"
        )
    return state.value


public(worker_state)
