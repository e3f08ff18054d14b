"""The bounded hand-offs of a pipeline run: channels between threads, and credit windows.

Backpressure lives here: a stage's input channel has a capacity and its window
a number of credits, so a fast stage waits (on a condition, never polling)
until the slower one after it takes items away.  Memory stays flat on endless
input.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

__all__ = ("Channel", "Window")

_clock = time.perf_counter


class Channel:
    """A bounded FIFO between two threads; ``abort`` wakes and drops everything."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False  # the producer is done: the end of the stream
        self._aborted = False  # the run stopped
        #: seconds the consumer waited on an empty channel / the producer on a full one
        self.get_wait = 0.0
        self.put_wait = 0.0

    def put_some(self, items: list[Any], start: int) -> int:
        """Put ``items[start:]``, as many as fit after waiting for room; 0 once aborted."""
        with self._cond:
            if len(self._items) >= self.capacity and not self._aborted:
                began = _clock()
                while len(self._items) >= self.capacity and not self._aborted:
                    self._cond.wait()
                self.put_wait += _clock() - began
            if self._aborted:
                return 0
            room = min(self.capacity - len(self._items), len(items) - start)
            self._items.extend(items[start : start + room])
            self._cond.notify_all()
            return room

    def get_batch(self, most: int) -> list[Any] | None:
        """Up to ``most`` items, waiting for the first; [] at the end, None once aborted."""
        with self._cond:
            if not self._items and not self._closed and not self._aborted:
                began = _clock()
                while not self._items and not self._closed and not self._aborted:
                    self._cond.wait()
                self.get_wait += _clock() - began
            if self._aborted:
                return None
            batch = [self._items.popleft() for _ in range(min(most, len(self._items)))]
            if batch:
                self._cond.notify_all()
            return batch

    def get(self) -> tuple[bool, Any]:
        """``(True, item)``, or ``(False, None)`` at the end of the stream or once aborted."""
        batch = self.get_batch(1)
        return (True, batch[0]) if batch else (False, None)

    def close(self) -> None:
        """The producer is done: the consumer sees the end once the channel is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> None:
        """Stop the run: wake both sides and drop what is queued."""
        with self._cond:
            self._aborted = True
            self._items.clear()
            self._cond.notify_all()


class Window:
    """Credits for the items a stage may hold: taken by the feeder, given back by the collector."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._cond = threading.Condition(threading.Lock())
        self._stopped = False

    def wait_free(self) -> int:
        """Wait for at least one free credit; return how many are free (0 once stopped)."""
        with self._cond:
            while self._free == 0 and not self._stopped:
                self._cond.wait()
            return 0 if self._stopped else self._free

    def take(self, n: int) -> None:
        """The feeder sent ``n`` items into the stage."""
        with self._cond:
            self._free -= n

    def give(self, n: int) -> None:
        """``n`` items left the stage: the feeder may send as many more."""
        with self._cond:
            self._free += n
            self._cond.notify_all()

    def stop(self) -> None:
        """Wake a waiting feeder for good (the run stopped)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
