"""The master thread's event loop: file descriptors, timers and callables posted from any thread.

One thread runs it (:meth:`EventLoop.run_once` in a loop).  It waits once, on
a selector over its wake pipe and every descriptor a backend watches, then
runs the posted callables, the ready callbacks, the callables posted
meanwhile, and the timers that are due, in that order.  Posts first: a call
posted before an event could happen is handled before it (a caller's
``shutdown(cancel_futures=True)`` is posted before the running task it lets
end can report, so the report cannot hand the next task out first); results
that already arrived win over timeouts due now.

Only :meth:`EventLoop.call_soon_threadsafe` may be called from other
threads.  A post writes the wake pipe at most once per batch: the flag
``_wake_pending`` is set under the inbox lock by the first post, and cleared
by the loop only *after* it emptied the pipe, so a post that lands in between
(saw the flag set, wrote nothing) is still in the inbox, which the same
iteration drains next.  No post is ever left unnoticed.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable

from ._backend import Loop
from ._fds import register_master_fd, unregister_master_fd

__all__ = ("EventLoop",)

Callback = Callable[[], None]


class EventLoop(Loop):
    """A selector loop for one thread (see the module docstring)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._handlers: dict[int, list[Callback | None]] = {}  # fd -> [reader, writer]
        self._inbox: deque[Callback] = deque()
        self._inbox_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._wake_pending = False
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._timers: list[tuple[float, int, Callback]] = []
        self._timer_ids = itertools.count()
        self.add_reader(self._wake_r, self._drain_wake_pipe)
        # Forked workers must not keep the wake pipe or the selector open.
        for fd in self._own_fds():
            register_master_fd(fd)

    def _own_fds(self) -> list[int]:
        fileno = getattr(self._selector, "fileno", None)
        selector_fd = int(fileno()) if fileno is not None else -1
        return [fd for fd in (self._wake_r, self._wake_w, selector_fd) if fd >= 0]

    # -- what backends use (Loop) -------------------------------------------------------

    def add_reader(self, fd: int, callback: Callback) -> None:
        self._watch(fd, 0, callback)

    def remove_reader(self, fd: int) -> None:
        self._watch(fd, 0, None)

    def add_writer(self, fd: int, callback: Callback) -> None:
        self._watch(fd, 1, callback)

    def remove_writer(self, fd: int) -> None:
        self._watch(fd, 1, None)

    def _watch(self, fd: int, slot: int, callback: Callback | None) -> None:
        handlers = self._handlers.get(fd)
        if handlers is None:
            if callback is None:
                return
            handlers = self._handlers[fd] = [None, None]
            handlers[slot] = callback
            self._selector.register(fd, _mask(handlers), handlers)
            return
        handlers[slot] = callback
        mask = _mask(handlers)
        if mask:
            self._selector.modify(fd, mask, handlers)
        else:
            self._selector.unregister(fd)
            del self._handlers[fd]

    def call_soon_threadsafe(self, callback: Callback) -> None:
        with self._inbox_lock:
            self._inbox.append(callback)
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass  # full (a wake-up is pending anyway) or closed (loop has ended)

    def call_later(self, delay: float, callback: Callback) -> None:
        """Run ``callback`` on the loop's thread after ``delay`` seconds."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_ids), callback))

    # -- running (the loop's thread) ----------------------------------------------------

    def run_once(self) -> None:
        """Wait for the next event or due timer, then run what is ready."""
        timeout = None
        if self._timers:
            timeout = max(0.0, self._timers[0][0] - time.monotonic())
        events = self._selector.select(timeout)
        self.drain_inbox()  # posted before these events were seen (module docstring)
        for key, mask in events:
            reader, writer = key.data
            if mask & selectors.EVENT_READ and reader is not None:
                reader()
            # The reader may have removed (or replaced) the writer meanwhile.
            if mask & selectors.EVENT_WRITE and writer is not None and key.data[1] is writer:
                writer()
        self.drain_inbox()  # results that already arrived win over timers due now
        self._run_timers()

    def drain_inbox(self) -> None:
        """Run every callable posted so far, and those posted while they run."""
        while True:
            with self._inbox_lock:
                if not self._inbox:
                    return
                batch, self._inbox = self._inbox, deque()
            for callback in batch:
                callback()

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, callback = heapq.heappop(self._timers)
            callback()

    def _drain_wake_pipe(self) -> None:
        # Empty the pipe first, then clear the flag (see the module docstring).
        # A short read means the pipe is empty: no second read to see EAGAIN
        # (each read lets go of the GIL, and under hundreds of busy thread
        # workers getting it back is what costs).
        try:
            while len(os.read(self._wake_r, 4096)) == 4096:
                pass
        except BlockingIOError:
            pass
        with self._inbox_lock:
            self._wake_pending = False

    def close(self) -> None:
        """Release the selector and wake pipe; later posts are dropped silently."""
        with self._inbox_lock:
            self._wake_pending = True  # nobody will read the pipe any more
        for fd in self._own_fds():
            unregister_master_fd(fd)
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _mask(handlers: list[Callback | None]) -> int:
    mask = selectors.EVENT_READ if handlers[0] is not None else 0
    return mask | (selectors.EVENT_WRITE if handlers[1] is not None else 0)
