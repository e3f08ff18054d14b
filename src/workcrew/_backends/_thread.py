"""Thread workers: one OS thread per worker, in the caller's process.

Nothing is pickled: chunks and results are handed over as Python objects.  A
worker thread takes chunks from its own queue (so the master knows which
chunks each worker holds, as for processes) and reports through the master's
``call_soon_threadsafe``.  Python cannot stop a running thread: ``kill`` only
asks the thread to exit after its current chunk.
"""

from __future__ import annotations

import contextvars
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any

from .._core._backend import Chunk, Report, Sent, WorkerBackend, WorkerEvents, WorkerHandle
from .._core._context import mark_worker_thread
from .._core._execute import (
    Failure,
    Outcome,
    add_note,
    function_name,
    run_chunk,
    run_chunk_timed,
    timer,
)
from .._core._state import WorkerState, bind_thread

__all__ = ("ThreadBackend", "backend_class")

_STOP = None


class ThreadBackend(WorkerBackend):
    """Starts worker threads."""

    can_kill = False

    def check_function(self, fn: Callable[..., Any]) -> None:
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"{function_name(fn)} is a coroutine function: kind='thread' would only create "
                "coroutine objects. Use kind='async' (or kind='process', which runs them on an "
                "event loop in each worker)."
            )

    def start_worker(self, worker_id: int, events: WorkerEvents) -> WorkerHandle:
        return ThreadHandle(self, worker_id, events)


class ThreadHandle(WorkerHandle):
    """One worker thread and its inbox."""

    def __init__(self, backend: ThreadBackend, worker_id: int, events: WorkerEvents) -> None:
        self.worker_id = worker_id
        self._backend = backend
        self._events = events
        self._inbox: queue.SimpleQueue[tuple[int, Chunk] | None] = queue.SimpleQueue()
        prefix = backend.options.thread_name_prefix
        name = f"{prefix}_{worker_id - 1}" if prefix else f"workcrew-worker-{worker_id}"
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def send_chunk(self, seq: int, chunk: Chunk) -> Sent:
        self._inbox.put((seq, chunk))
        return Sent({})

    def request_stop(self) -> None:
        self._inbox.put(_STOP)

    def kill(self) -> None:
        self._inbox.put(_STOP)  # a running task cannot be interrupted; see the module docstring

    def join(self, timeout: float | None) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _main(self) -> None:
        mark_worker_thread()
        loop = self._backend.loop
        try:
            state = self._initialize()
            if state is not None:
                bind_thread(state)
                loop.call_soon_threadsafe(lambda: self._events.on_ready(self))
                self._serve()
                state.end()  # worker_exit: a thread always ends gracefully (it cannot be killed)
                bind_thread(None)
        finally:
            loop.call_soon_threadsafe(lambda: self._events.on_exit(self, 0))

    def _initialize(self) -> WorkerState | None:
        """The thread's state (the initializer's result), or None if the initializer raised."""
        options = self._backend.options
        try:
            return WorkerState.begin(options.initializer, options.initargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the master, which breaks the pool
            from .._core._broken import InitializerError  # loaded when it fails (see _broken)

            error = InitializerError(
                f"the pool's initializer raised in worker {self.worker_id} (thread): "
                f"{type(exc).__name__}: {exc}; the pool cannot start workers."
            )
            error.__cause__ = exc
            self._backend.loop.call_soon_threadsafe(
                lambda: self._events.on_init_failed(self, error)
            )
            return None

    def _serve(self) -> None:
        loop = self._backend.loop
        # Each chunk runs in a fresh copy of the thread's context as the
        # initializer left it: a variable a task sets does not reach later chunks.
        base = contextvars.copy_context()
        while True:
            message = self._inbox.get()
            if message is _STOP:
                return
            seq, chunk = message
            start = timer()
            outcome = base.copy().run(self._run, chunk)
            duration = timer() - start
            loop.call_soon_threadsafe(Report(self._events, self, seq, duration, outcome))
            del message, chunk, outcome  # drop references to arguments and results early

    def _run(self, chunk: Chunk) -> Outcome:
        run = run_chunk_timed if self._backend.options.timeline else run_chunk
        outcome = run(chunk.fn, chunk.mode, chunk.items, chunk.skip)
        for failure in (outcome.failures or {}).values():
            _annotate(failure, self.worker_id)
        return outcome


def _annotate(failure: Failure, worker_id: int) -> None:
    add_note(failure.exc, f"workcrew: raised in worker {worker_id} (thread) by {failure.call}")


backend_class = ThreadBackend
