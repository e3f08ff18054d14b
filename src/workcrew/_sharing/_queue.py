"""A bounded queue shared by the caller and workers of every kind.

The queue is a byte ring in one shared segment, guarded by a mutex, with two
condition variables built from counting semaphores (the classic construction:
a waiter counts itself under the mutex, releases it and waits on the
semaphore; a notifier posts once per counted waiter)::

    segment = mutex | getters sem | putters sem | counters | ring of records
    record  = 8-byte length | pickled item   (may wrap around the ring's end)

Items are pickled outside the mutex; the mutex is held only to copy bytes and
update counters, so a put or get costs two memory copies and no system call
unless someone has to wait.  Invariants: ``tail - head`` is the bytes in use,
``count`` the records between them; both change only under the mutex, after
the record's bytes are in place, so a process killed while holding the mutex
(the next user takes it over) leaves the queue consistent.  A waiter killed
while waiting leaves one extra count behind, which only causes a spurious
wake-up later.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import pickle
import queue
import struct
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from threading import get_native_id
from typing import Any, Generic, TypeVar

from .._core._exceptions import QueueClosed, serialization_error
from .._core._execute import short_repr
from .._core._pickling import dumps
from .._core._public import public
from ._memory import SEM_VALUE_MAX, SEMAPHORE, Segment, SegmentRef, lock_mutex, make_semaphore

__all__ = ("Queue",)

T = TypeVar("T")

HEADER = 256
COUNTERS_AT = 96
HEAD, TAIL, COUNT, WAIT_GET, WAIT_PUT, CLOSED, CAPACITY, MAXSIZE, HOLDER = range(9)
LENGTH = struct.Struct("<Q")
#: Default bytes of the ring: pages are only allocated as the ring first reaches them.
DEFAULT_BUFFER = 4 << 20
#: Seconds between looks at whether the mutex holder died.
HOLDER_CHECK = 1.0

_attached: weakref.WeakValueDictionary[SegmentRef, Queue[Any]] = weakref.WeakValueDictionary()


class Queue(Generic[T]):
    """A FIFO queue that the caller and thread, async and process workers share.

    Create it in the caller and pass it to tasks as an argument.  ``put``
    blocks while the queue holds ``maxsize`` items (0: no limit) or its
    ``buffer_size`` bytes are full: that is the backpressure that keeps a fast
    producer from running ahead of a slow consumer.  ``get``/``put`` take
    ``block`` and ``timeout`` and raise ``queue.Empty``/``queue.Full`` as the
    standard library's queues do.

    ``close()`` ends the stream: further puts raise
    :class:`workcrew.QueueClosed`, consumers still receive what was put before,
    then ``for item in q`` (or ``async for``) ends and ``get`` raises
    ``QueueClosed``.  So a reader needs no sentinel and no ``terminate()``.

    In coroutines, use ``await q.get_async()`` / ``await q.put_async(item)``,
    which never block the event loop.  Items are pickled (cloudpickle for what
    pickle refuses), also between threads of one process, so a consumer never
    shares a mutable object with its producer.  One item must fit in
    ``buffer_size`` bytes once pickled.  Linux with glibc only.
    """

    def __init__(self, maxsize: int = 0, *, buffer_size: int = DEFAULT_BUFFER) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"maxsize={maxsize!r} is invalid: an int, 0 for no limit")
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 64:
            raise ValueError(f"buffer_size={buffer_size!r} is invalid: an int of 64 bytes or more")
        segment = Segment.create(HEADER + buffer_size, "queue")
        self._bind(segment, create=True)
        self._words[CAPACITY] = buffer_size
        self._words[MAXSIZE] = maxsize
        self._limits()
        _attached[segment.ref] = self

    def _bind(self, segment: Segment, create: bool) -> None:
        self._segment = segment
        self._buf = segment.buf
        init = (1, 0, 0) if create else (None, None, None)
        self._mutex = make_semaphore(segment, 0, SEMAPHORE, 1, init[0])
        self._getters = make_semaphore(segment, 32, SEMAPHORE, SEM_VALUE_MAX, init[1])
        self._putters = make_semaphore(segment, 64, SEMAPHORE, SEM_VALUE_MAX, init[2])
        self._words = segment.cells(ctypes.c_uint64, COUNTERS_AT, 9)
        self._acquire = self._mutex.acquire

    def _limits(self) -> None:
        # Fixed at creation: read once instead of through shared memory per call.
        self._capacity = int(self._words[CAPACITY])
        self._maxsize = int(self._words[MAXSIZE])

    def __reduce__(self) -> tuple[Any, ...]:
        return (_attach, (self._segment.ref,))

    # -- the mutex and the two conditions ----------------------------------------

    def _lock(self) -> Any:
        """Take the mutex (taken over if its holder died); the counters, for the caller."""
        words = self._words
        if self._acquire(False):  # the common case, inline
            words[HOLDER] = get_native_id()
        else:
            lock_mutex(self._mutex, words, HOLDER, HOLDER_CHECK)
        return words

    def _unlock(self, words: Any) -> None:
        words[HOLDER] = 0
        self._mutex.release()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        words = self._lock()
        try:
            yield words
        finally:
            self._unlock(words)

    def _wait(self, sem: Any, counter: int, deadline: float | None) -> bool:
        """Wait for a notify on ``sem`` (mutex held on entry and exit); False on timeout."""
        words = self._words
        words[counter] += 1
        words[HOLDER] = 0
        self._mutex.release()
        try:
            if deadline is None:
                got = sem.acquire(True, None)
            else:
                got = sem.acquire(True, max(0.0, deadline - time.monotonic()))
        finally:
            self._lock()  # with the same take-over of a dead holder as every entry
        if not got:
            if sem.acquire(False):  # a notify raced the timeout: it was counted for us
                return True
            words[counter] -= 1
        return bool(got)

    @staticmethod
    def _notify(words: Any, sem: Any, counter: int, n: int) -> None:
        k = min(int(words[counter]), n)
        if k:
            words[counter] -= k
            for _ in range(k):
                sem.release()

    # -- the queue ------------------------------------------------------------------

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; wait for room if full (``queue.Full`` when not ``block`` or on timeout)."""
        self._put_data(self._encode(item), block, _deadline(block, timeout))

    def _encode(self, item: Any) -> bytes:
        """``item`` pickled; ``ValueError`` if it can never fit the ring."""
        data = _pickle_item(item)
        need = LENGTH.size + len(data)
        if need > self._capacity:
            raise ValueError(
                f"the item ({type(item).__qualname__}, {need} bytes pickled) is larger than "
                f"the queue's buffer of {self._capacity} bytes: create the queue with a larger "
                "buffer_size=, or put a path or a smaller piece instead"
            )
        return data

    def _fits(self, words: Any, need: int) -> bool:
        """Room for a record of ``need`` bytes now (mutex held)."""
        maxsize = self._maxsize
        room = self._capacity - (words[TAIL] - words[HEAD]) >= need
        return bool((not maxsize or words[COUNT] < maxsize) and room)

    def _put_data(self, data: bytes, block: bool, deadline: float | None) -> None:
        need = LENGTH.size + len(data)
        capacity = self._capacity
        words = self._lock()
        try:
            while True:
                if words[CLOSED]:
                    raise QueueClosed("put() on a closed workcrew.Queue")
                if self._fits(words, need):
                    break
                if not block or not self._wait(self._putters, WAIT_PUT, deadline):
                    raise queue.Full
            tail = int(words[TAIL])
            self._write(tail % capacity, LENGTH.pack(len(data)) + data, capacity)
            words[TAIL] = tail + need
            words[COUNT] += 1
            if words[WAIT_GET]:
                self._notify(words, self._getters, WAIT_GET, 1)
        finally:
            self._unlock(words)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Remove and return the oldest item; ``queue.Empty`` when not ``block`` or on
        timeout; :class:`workcrew.QueueClosed` once the queue is closed and empty."""
        deadline = _deadline(block, timeout)
        capacity = self._capacity
        words = self._lock()
        try:
            while not words[COUNT]:
                if words[CLOSED]:
                    raise QueueClosed("get() on a closed and empty workcrew.Queue")
                if not block or not self._wait(self._getters, WAIT_GET, deadline):
                    raise queue.Empty
            head = words[HEAD]
            at = head % capacity
            if at + LENGTH.size <= capacity:
                (length,) = LENGTH.unpack_from(self._buf, HEADER + at)
            else:
                (length,) = LENGTH.unpack(self._read(at, LENGTH.size, capacity))
            data = self._read((at + LENGTH.size) % capacity, length, capacity)
            words[HEAD] = head + LENGTH.size + length
            words[COUNT] -= 1
            if words[WAIT_PUT]:
                # Any putter may fit now (items differ in size): wake them all to look.
                self._notify(words, self._putters, WAIT_PUT, SEM_VALUE_MAX)
        finally:
            self._unlock(words)
        return pickle.loads(data)  # type: ignore[no-any-return]  # the queue's item type

    def _write(self, at: int, data: bytes, capacity: int) -> None:
        first = min(len(data), capacity - at)
        self._buf[HEADER + at : HEADER + at + first] = data[:first]
        if first < len(data):
            self._buf[HEADER : HEADER + len(data) - first] = data[first:]

    def _read(self, at: int, n: int, capacity: int) -> bytes:
        first = min(n, capacity - at)
        data = self._buf[HEADER + at : HEADER + at + first]
        if first < n:
            data += self._buf[HEADER : HEADER + n - first]
        return data

    def put_nowait(self, item: T) -> None:
        """``put(item, block=False)``."""
        self.put(item, block=False)

    def get_nowait(self) -> T:
        """``get(block=False)``."""
        return self.get(block=False)

    def close(self) -> None:
        """No more puts; consumers drain what is left, then iteration ends. Idempotent."""
        with self._locked() as words:
            words[CLOSED] = 1
            self._notify(words, self._getters, WAIT_GET, SEM_VALUE_MAX)
            self._notify(words, self._putters, WAIT_PUT, SEM_VALUE_MAX)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (by any process)."""
        return bool(self._words[CLOSED])

    @property
    def maxsize(self) -> int:
        """The item limit given at creation (0: none)."""
        return int(self._words[MAXSIZE])

    def qsize(self) -> int:
        """Items in the queue now (a snapshot: others may change it at once)."""
        return int(self._words[COUNT])

    def empty(self) -> bool:
        """``qsize() == 0`` (a snapshot)."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether ``maxsize`` items are queued now (a snapshot)."""
        maxsize = self.maxsize
        return bool(maxsize) and self.qsize() >= maxsize

    def __iter__(self) -> Iterator[T]:
        """Items until the queue is closed and drained."""
        while True:
            try:
                yield self.get()
            except QueueClosed:
                return

    # -- coroutines -------------------------------------------------------------------

    async def get_async(self, timeout: float | None = None) -> T:
        """``get()`` for coroutines: waits without blocking the event loop."""
        deadline = _deadline(True, timeout)
        while True:
            with contextlib.suppress(queue.Empty):
                return self.get(block=False)
            await self._wait_async(self._getters, WAIT_GET, deadline, queue.Empty, _readable)

    async def put_async(self, item: T, timeout: float | None = None) -> None:
        """``put()`` for coroutines: waits for room without blocking the event loop."""
        deadline = _deadline(True, timeout)
        data = self._encode(item)  # once, not at every try
        need = LENGTH.size + len(data)

        def writable(words: Any) -> bool:
            return bool(words[CLOSED]) or self._fits(words, need)

        while True:
            with contextlib.suppress(queue.Full):
                return self._put_data(data, False, None)
            await self._wait_async(self._putters, WAIT_PUT, deadline, queue.Full, writable)

    async def _wait_async(
        self,
        sem: Any,
        counter: int,
        deadline: float | None,
        timeout_error: type[Exception],
        ready: Callable[[Any], bool],
    ) -> None:
        # The wait runs in a short-lived thread and never takes an item, so a
        # cancelled coroutine loses nothing: cancelling wakes every waiter of
        # this condition (they look again and go back to sleep) to end the thread.
        if deadline is not None and time.monotonic() >= deadline:
            raise timeout_error
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        abandoned = False  # set and read under the mutex

        def wait() -> None:
            try:
                with self._locked() as words:
                    # Both looked at under the mutex: no wake-up is missed, and a
                    # cancellation either comes first (no wait at all) or finds
                    # this thread counted among the waiters it wakes.
                    if not abandoned and not ready(words):
                        self._wait(sem, counter, deadline)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(_settle, done)

        thread = threading.Thread(target=wait, name="workcrew-queue-wait", daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            with self._locked() as words:
                abandoned = True
                self._notify(words, sem, counter, SEM_VALUE_MAX)
            raise
        finally:
            thread.join()  # it has settled `done` or was just woken: a brief join

    async def __aiter__(self) -> AsyncIterator[T]:
        """Items until the queue is closed and drained (for ``async for``)."""
        while True:
            try:
                yield await self.get_async()
            except QueueClosed:
                return

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<workcrew.Queue {state} items={self.qsize()} maxsize={self.maxsize}>"


def _pickle_item(item: Any) -> bytes:
    try:
        return dumps(item)
    except Exception as exc:
        raise serialization_error(
            f"{short_repr(item)} ({type(item).__qualname__}) cannot be put on a workcrew.Queue: "
            f"it does not pickle ({type(exc).__name__}: {exc}). Queues carry data between "
            "processes: put plain data (numbers, strings, lists, dicts, arrays), not locks, "
            "sockets or open files.",
            cause=exc,
        ) from exc


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _readable(words: Any) -> bool:
    return bool(words[COUNT] or words[CLOSED])


def _deadline(block: bool, timeout: float | None) -> float | None:
    if not block or timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout={timeout!r} must be 0 or more seconds, or None")
    return time.monotonic() + timeout


def _attach(ref: SegmentRef) -> Queue[Any]:
    q = _attached.get(ref)
    if q is None:
        q = Queue.__new__(Queue)
        q._bind(Segment.attach(ref, "the workcrew.Queue"), create=False)
        q._limits()
        _attached[ref] = q
    return q


public(Queue)
