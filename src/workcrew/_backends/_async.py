"""Async workers: coroutine functions on one event loop, ``workers`` at a time.

The backend runs one asyncio event loop in a thread of its own.  Each
"worker" is a concurrency slot on it: a task that awaits the chunks the
master sends it, one after another, so at most ``workers`` coroutines run at
once.  A timeout really cancels the coroutine (``cancel_current``), and the
slot goes on with its next chunk.  Only coroutine functions are accepted:
a plain function would block the whole loop (use ``kind="thread"``).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

from .._core._backend import Chunk, Loop, Report, Sent, WorkerBackend, WorkerEvents, WorkerHandle
from .._core._context import mark_worker_thread
from .._core._execute import (
    Outcome,
    add_note,
    function_name,
    new_event_loop,
    run_chunk_async,
    run_chunk_async_timed,
    timer,
)
from .._core._options import PoolOptions
from .._core._state import WorkerState, bind_thread

__all__ = ("AsyncBackend", "backend_class")

_STOP = None


class AsyncBackend(WorkerBackend):
    """One event loop thread; workers are concurrency slots on it."""

    can_kill = False

    def __init__(self, options: PoolOptions, loop: Loop) -> None:
        super().__init__(options, loop)
        self.aloop = new_event_loop(options.event_loop)
        #: the loop's worker state (one per loop), built by the first slot that starts
        self._state: asyncio.Future[WorkerState] | None = None
        # Messages for the slots, posted to the loop in batches: one wake-up of
        # the loop thread per batch, not per chunk (a pool of 200 slots gets
        # 200 chunks in one dispatch pass).
        self._posts: list[tuple[AsyncHandle, tuple[int, Chunk] | None]] = []
        self._posts_lock = threading.Lock()
        # Reports for the master, gathered on the loop thread (see tell).
        self._outbox: list[Callable[[], None]] = []
        self._thread = threading.Thread(
            target=self._run_loop, name="workcrew-async-loop", daemon=True
        )
        self._thread.start()

    def _run_loop(self) -> None:
        mark_worker_thread()
        asyncio.set_event_loop(self.aloop)
        self.aloop.run_forever()

    def check_function(self, fn: Callable[..., Any]) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"kind='async' runs coroutine functions (async def), but "
                f"{function_name(fn)} is a plain function: it would block every other task on "
                "the event loop. Use kind='thread' for blocking functions."
            )

    def start_worker(self, worker_id: int, events: WorkerEvents) -> WorkerHandle:
        return AsyncHandle(self, worker_id, events)

    async def initialize(self) -> None:
        """Run the pool's initializer once for the loop (awaited if it is a coroutine).

        Every slot waits for it: none runs a task before the loop's state exists.
        """
        if self._state is None:
            self._state = asyncio.ensure_future(self._begin())
        await asyncio.shield(self._state)

    async def _begin(self) -> WorkerState:
        state = WorkerState.begin(self.options.initializer, self.options.initargs)
        if inspect.isawaitable(state.value):
            state.value = await state.value
        bind_thread(state)  # the loop thread runs every task of this pool
        return state

    async def _end(self) -> None:
        """worker_exit for the loop's state, awaited on the loop (if the state was built)."""
        built = self._state
        if built is not None and built.done() and not built.cancelled() and not built.exception():
            await built.result().aend()

    def post(self, handle: AsyncHandle, message: tuple[int, Chunk] | None) -> None:
        """Queue ``message`` for ``handle``'s slot; the loop picks up a batch at once."""
        with self._posts_lock:
            self._posts.append((handle, message))
            wake = len(self._posts) == 1
        if wake:
            self.aloop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._posts_lock:
            posts, self._posts = self._posts, []
        for handle, message in posts:
            handle.receive(message)

    def tell(self, report: Callable[[], None]) -> None:
        """Loop thread: pass ``report`` to the master with the others of this loop turn.

        Slots started together finish together: 200 posts, each waking the
        master (a pipe write that hands it the GIL mid-burst), would slow the
        loop thread while it starts the next chunks.  One post per loop turn
        carries them all.  Every report goes through here, so their order is
        kept (a slot's ``on_exit`` comes after its last result).
        """
        self._outbox.append(report)
        if len(self._outbox) == 1:
            self.aloop.call_soon(self._flush)

    def _flush(self) -> None:
        reports, self._outbox = self._outbox, []
        self.loop.call_soon_threadsafe(lambda: _run_all(reports))

    def close(self) -> None:
        # Every slot has ended (the master closes the backend last): tear the state down.
        asyncio.run_coroutine_threadsafe(self._end(), self.aloop).result()
        self.aloop.call_soon_threadsafe(self.aloop.stop)
        self._thread.join()
        self.aloop.close()


class AsyncHandle(WorkerHandle):
    """A concurrency slot: an asyncio task serving this slot's chunks in order."""

    def __init__(self, backend: AsyncBackend, worker_id: int, events: WorkerEvents) -> None:
        self.worker_id = worker_id
        self._backend = backend
        self._events = events
        self._inbox: asyncio.Queue[tuple[int, Chunk] | None] | None = None
        self._current: asyncio.Task[Any] | None = None
        self._done = threading.Event()
        asyncio.run_coroutine_threadsafe(self._serve(), backend.aloop)

    async def _serve(self) -> None:
        tell = self._backend.tell
        self._inbox = asyncio.Queue()
        try:
            await self._backend.initialize()
        except BaseException as exc:  # noqa: BLE001 - reported to the master, which breaks the pool
            from .._core._broken import InitializerError  # loaded when it fails (see _broken)

            error = InitializerError(
                f"the pool's initializer raised ({type(exc).__name__}: {exc}); "
                "the pool cannot start workers."
            )
            error.__cause__ = exc
            tell(lambda: self._events.on_init_failed(self, error))
            self._finish()
            return
        tell(lambda: self._events.on_ready(self))
        while True:
            message = await self._inbox.get()
            if message is _STOP:
                break
            await self._answer(*message)
            # This coroutine waits for the next message for as long as the pool
            # lives: it must not keep the last chunk's arguments alive.
            del message
        self._finish()

    async def _answer(self, seq: int, chunk: Chunk) -> None:
        """Run one chunk and report its outcome to the master."""
        start = timer()
        run = run_chunk_async_timed if self._backend.options.timeline else run_chunk_async
        self._current = asyncio.ensure_future(run(chunk.fn, chunk.mode, chunk.items, chunk.skip))
        try:
            outcome = await self._current
        except asyncio.CancelledError:  # only the slot's current task is ever cancelled
            outcome = Outcome([None] * len(chunk.items))
        for failure in (outcome.failures or {}).values():
            add_note(
                failure.exc, f"workcrew: raised in async worker {self.worker_id} by {failure.call}"
            )
        self._current = None
        duration = timer() - start
        self._backend.tell(Report(self._events, self, seq, duration, outcome))

    def _finish(self) -> None:
        self._done.set()
        self._backend.tell(lambda: self._events.on_exit(self, 0))

    def receive(self, message: tuple[int, Chunk] | None) -> None:
        """On the loop: queue a message for this slot."""
        if self._inbox is not None:
            self._inbox.put_nowait(message)
        else:  # _serve has not started yet: try again on the next loop turn
            self._backend.aloop.call_soon(self.receive, message)

    def _post(self, message: tuple[int, Chunk] | None) -> None:
        self._backend.post(self, message)

    def send_chunk(self, seq: int, chunk: Chunk) -> Sent:
        self._post((seq, chunk))
        return Sent({})

    def cancel_current(self) -> bool:
        def cancel() -> None:
            if self._current is not None:
                self._current.cancel()

        self._backend.aloop.call_soon_threadsafe(cancel)
        return True

    def request_stop(self) -> None:
        self._post(_STOP)

    def kill(self) -> None:
        self.cancel_current()
        self._post(_STOP)

    def join(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)


def _run_all(reports: list[Callable[[], None]]) -> None:
    for report in reports:
        report()


backend_class = AsyncBackend
