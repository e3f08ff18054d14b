"""Locks and values shared by every kind of worker, with deadlock detection.

All locks and values of a program live in one *lock table*, a shared segment
created by the first lock of the process tree (children find it through the
locks they are given).  Each slot holds a semaphore, a uid, a reference count
and the lock's name (and, for a :class:`Value`, its number).  A second area
lists the threads blocked on a lock, which is what deadlock detection reads::

    table  = header (table mutex, next uid) | 1024 lock slots | 512 waiter entries
    slot   = sem_t | uid | refs | kind | value | name
    waiter = tid | pid | lock slot + 1 | locks it holds | label

A :class:`Lock` *is* a ``_multiprocessing.SemLock`` (the C type behind
``multiprocessing.Lock``) built over its slot's semaphore: ``release`` and
``__exit__`` are that C code, and ``acquire``/``__enter__`` first try it
without blocking.  So an uncontended lock costs what a standard one does, and
deadlock detection costs nothing until a thread has to wait.

Only then does the thread register as a waiter, listing the locks it holds
(SemLock records, per process, which thread took it: ``_is_mine()``), and wait
in slices of :data:`SLICE` seconds.  After each slice it follows "waits for
lock -> held by waiter -> waits for lock ..." through the table.  Every member
of a deadlock is waiting, so waiters alone describe any cycle.  A path that
comes back to itself is a deadlock once it was seen on two consecutive slices
(a transient state, such as a lock being handed over, is never reported), and
exactly one participant, the one with the largest thread id, raises
:class:`DeadlockError`.

Thread ids are Linux native thread ids, unique across processes, so one id
names a participant wherever it runs.
"""

from __future__ import annotations

import os
import threading
import time
import weakref

from .._core._context import ENV_WORKER
from .._core._public import public
from ._memory import (
    RECURSIVE_MUTEX,
    SEMAPHORE,
    Segment,
    SegmentRef,
    SemLockBase,
    lock_mutex,
    make_semaphore,
    thread_alive,
)

# Every process worker imports this module (for release_holds): ctypes, typing,
# contextlib and the exception classes (which load multiprocessing) are imported
# where they are used, not here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .._core._exceptions import DeadlockError

__all__ = ("Lock", "RLock", "Value")

#: Seconds a blocked acquire waits between two looks for a cycle.
SLICE = 0.1
LOCKS, LOCK_BYTES = 1024, 128
WAITERS, WAITER_BYTES = 512, 256
HEADER = 64
#: u64 words per slot and offsets of the fields (the semaphore takes words 0-3).
SLOT_WORDS, UID, REFS, KIND, VALUE = LOCK_BYTES // 8, 4, 5, 6, 7
NAME_AT, NAME_BYTES = 64, LOCK_BYTES - 64
#: waiter words: thread id, pid, slot waited for + 1, number held, then the held slots.
WAITER_WORDS, W_TID, W_PID, W_LOCK, W_HELD, HELD_AT, HELD_MAX = WAITER_BYTES // 8, 0, 1, 2, 3, 4, 16
LABEL_AT = (HELD_AT + HELD_MAX) * 8
KIND_LOCK, KIND_RLOCK, KIND_VALUE = 1, 2, 3


class _Table:
    """The shared lock table (one per process tree)."""

    def __init__(self, segment: Segment, create: bool) -> None:
        import ctypes

        self.segment = segment
        self.mutex = make_semaphore(segment, 0, SEMAPHORE, 1, 1 if create else None)
        self.header = segment.cells(ctypes.c_uint64, 32, 4)  # [0] next uid, [1] mutex holder
        self.words = segment.cells(ctypes.c_uint64, HEADER, LOCKS * SLOT_WORDS)
        self.waiter_base = HEADER + LOCKS * LOCK_BYTES
        self.waiters = segment.cells(ctypes.c_uint64, self.waiter_base, WAITERS * WAITER_WORDS)

    def locked(self) -> _Held:
        """Hold the table mutex (held for microseconds; taken over if its holder died)."""
        return _Held(self)

    def allocate(self, kind: int, name: str) -> tuple[int, int]:
        """A free slot set up for a new lock or value: (slot, uid)."""
        words = self.words
        with self.locked():
            for slot in range(LOCKS):
                base = slot * SLOT_WORDS
                if words[base + UID] == 0:
                    break
            else:
                raise RuntimeError(
                    f"more than {LOCKS} workcrew locks and values are alive at once; "
                    "create them once and pass them to tasks, rather than one per task"
                )
            self.header[0] += 1
            uid = int(self.header[0])
            offset = HEADER + slot * LOCK_BYTES
            make_semaphore(self.segment, offset, SEMAPHORE, 1, 1)  # sem_init only
            words[base + REFS] = 1
            words[base + KIND] = kind
            words[base + VALUE] = 0
            encoded = name.encode("utf-8", "replace")[:NAME_BYTES].ljust(NAME_BYTES, b"\0")
            self.segment.buf[offset + NAME_AT : offset + LOCK_BYTES] = encoded
            words[base + UID] = uid
        return slot, uid

    def hold(self, slot: int, uid: int, what: str) -> None:
        """Count one more process using the slot (attach); error if it was freed."""
        with self.locked():
            if self.words[slot * SLOT_WORDS + UID] != uid:
                raise RuntimeError(
                    f"{what} no longer exists: every process that held it dropped it. Keep "
                    "the object referenced in the caller while tasks use it."
                )
            self.words[slot * SLOT_WORDS + REFS] += 1

    def drop(self, slot: int, uid: int) -> None:
        """One process stopped using the slot; the last one frees it."""
        with self.locked():
            base = slot * SLOT_WORDS
            if self.words[base + UID] == uid:
                self.words[base + REFS] -= 1
                if self.words[base + REFS] == 0:
                    self.words[base + UID] = 0

    def name(self, slot: int) -> str:
        offset = HEADER + slot * LOCK_BYTES
        raw = bytes(self.segment.buf[offset + NAME_AT : offset + LOCK_BYTES])
        return raw.rstrip(b"\0").decode("utf-8", "replace")

    # -- waiters and cycles ------------------------------------------------------

    def enter_wait(self, tid: int, slot: int, held: list[int]) -> int:
        """Record that thread ``tid`` waits for ``slot`` holding ``held``; the entry's index."""
        label = _participant().encode("utf-8", "replace")[: WAITER_BYTES - LABEL_AT]
        held = held[:HELD_MAX]
        with self.locked():
            for entry in range(WAITERS):
                base = entry * WAITER_WORDS
                if self.waiters[base + W_TID] == 0:
                    self.waiters[base + W_PID] = os.getpid()
                    self.waiters[base + W_LOCK] = slot + 1
                    self.waiters[base + W_HELD] = len(held)
                    for i, held_slot in enumerate(held):
                        self.waiters[base + HELD_AT + i] = held_slot
                    offset = self.waiter_base + entry * WAITER_BYTES + LABEL_AT
                    self.segment.buf[offset : offset + WAITER_BYTES - LABEL_AT] = label.ljust(
                        WAITER_BYTES - LABEL_AT, b"\0"
                    )
                    self.waiters[base + W_TID] = tid
                    return entry
        return -1  # table full: this wait is simply not watched for cycles

    def leave_wait(self, entry: int) -> None:
        if entry >= 0:
            with self.locked():
                self.waiters[entry * WAITER_WORDS + W_TID] = 0

    def find_cycle(self, me: int) -> tuple[tuple[int, int, str], ...] | None:
        """The cycle of waits through thread ``me``: (tid, slot waited for, label) each."""
        waits: dict[int, tuple[int, str]] = {}
        holder: dict[int, int] = {}
        with self.locked():
            for entry in range(WAITERS):
                base = entry * WAITER_WORDS
                tid = int(self.waiters[base + W_TID])
                if not tid:
                    continue
                if not thread_alive(tid):  # a waiter killed while waiting: reap its entry
                    self.waiters[base + W_TID] = 0
                    continue
                offset = self.waiter_base + entry * WAITER_BYTES + LABEL_AT
                raw = bytes(self.segment.buf[offset : offset + WAITER_BYTES - LABEL_AT])
                waits[tid] = (int(self.waiters[base + W_LOCK]) - 1, raw.rstrip(b"\0").decode())
                for i in range(int(self.waiters[base + W_HELD])):
                    holder[int(self.waiters[base + HELD_AT + i])] = tid
        path: list[tuple[int, int, str]] = []
        tid, seen = me, set()
        while tid in waits and tid not in seen:
            seen.add(tid)
            slot, label = waits[tid]
            path.append((tid, slot, label))
            tid = holder.get(slot, 0)
            if tid == me:
                return tuple(path)
        return None


class _Held:
    """``with table.locked():`` (a class, not contextlib: this module must import cheaply)."""

    __slots__ = ("_table",)

    def __init__(self, table: _Table) -> None:
        self._table = table

    def __enter__(self) -> None:
        lock_mutex(self._table.mutex, self._table.header, 1, 1.0)

    def __exit__(self, *exc_info: object) -> None:
        self._table.header[1] = 0
        self._table.mutex.release()


_table: _Table | None = None
_table_lock = threading.Lock()


def _current_table() -> _Table:
    """This process tree's table: the one this process created or first attached."""
    global _table
    with _table_lock:
        if _table is None:
            size = HEADER + LOCKS * LOCK_BYTES + WAITERS * WAITER_BYTES
            _table = _Table(Segment.create(size, "locks"), create=True)
        return _table


def _attach_table(ref: SegmentRef) -> _Table:
    global _table
    with _table_lock:
        if _table is not None and _table.segment.ref == ref:
            return _table
        table = _Table(Segment.attach(ref, "the workcrew lock table"), create=False)
        if _table is None:
            _table = table  # locks created here join the tree's table
        return table


def _participant() -> str:
    """How the calling thread is named in deadlock reports."""
    thread = threading.current_thread().name
    worker = os.environ.get(ENV_WORKER)
    where = f"worker {worker}" if worker else "the caller"
    if worker and thread == "MainThread":
        return f"{where} (pid {os.getpid()})"
    return f"thread {thread!r} in {where} (pid {os.getpid()})"


#: Objects attached in this process, by (table, uid): unpickling the same lock
#: twice gives the same object, and the table counts one holder per process.
_attached: weakref.WeakValueDictionary[tuple[SegmentRef, int], Any] = weakref.WeakValueDictionary()
#: Every lock object of this process, for a waiter to list the locks it holds.
_locks: weakref.WeakSet[Lock] = weakref.WeakSet()
#: This process's holds on table slots, given back when their object is
#: collected, or all at once by release_holds() when a worker process ends
#: (os._exit runs no finalizers).
_holds: list[weakref.finalize[..., Any]] = []


def release_holds() -> None:
    """Give back every slot this process holds (a worker process about to exit)."""
    for hold in _holds:
        hold()  # a no-op for a finalizer that already ran
    _holds.clear()


def _after_fork_in_child() -> None:
    # SemLock records per object which thread took it; a forked child has
    # none of those threads, so it holds nothing (multiprocessing does the same).
    for lock in list(_locks):
        lock._after_fork()
    _holds.clear()  # the parent's holds are the parent's to give back


os.register_at_fork(after_in_child=_after_fork_in_child)
_try_acquire = SemLockBase.acquire


def _drop_in(pid: int, table: _Table, slot: int, uid: int) -> None:
    # A forked child inherits this object without having counted it: only the
    # process that counted a hold gives it back.
    if os.getpid() == pid:
        table.drop(slot, uid)


def _new_slot(kind: int, name: str | None, default: str) -> tuple[_Table, int, int]:
    table = _current_table()
    slot, uid = table.allocate(kind, name or "")
    if not name:
        label = f"{default}-{uid}".encode()
        offset = HEADER + slot * LOCK_BYTES
        table.segment.buf[offset + NAME_AT : offset + NAME_AT + len(label)] = label
    return table, slot, uid


def _track(obj: Any, table: _Table, slot: int, uid: int) -> None:
    """Count ``obj`` as this process's holder of the slot until it is collected."""
    _holds.append(weakref.finalize(obj, _drop_in, os.getpid(), table, slot, uid))
    if len(_holds) > 64:
        _holds[:] = [hold for hold in _holds if hold.alive]
    _attached[(table.segment.ref, uid)] = obj  # unpickled here: this same object


def _attach(cls: type[Lock], ref: SegmentRef, slot: int, uid: int) -> Lock:
    obj: Any = _attached.get((ref, uid))
    if isinstance(obj, Value):
        return obj.get_lock()  # a Value's lock, pickled on its own: the same lock here
    if obj is None:
        table = _attach_table(ref)
        table.hold(slot, uid, f"the workcrew {cls.__name__}")
        obj = cls._over(table, slot, uid)
        _track(obj, table, slot, uid)
    lock: Lock = obj
    return lock


class Lock(SemLockBase):  # type: ignore[misc]  # SemLockBase is Any: CPython's C type
    """A lock shared by threads, async tasks and processes, with deadlock detection.

    Create it in the caller and pass it to tasks as an argument (any worker
    kind) or through the pool's ``initargs``.  It behaves as
    ``multiprocessing.Lock``: ``acquire(blocking=True, timeout=-1)``,
    ``release()``, ``with lock:``, and any thread may release it.  When
    acquisitions of workcrew locks form a cycle, one waiter gets
    :class:`workcrew.DeadlockError` naming the cycle within about
    ``2 * SLICE`` (0.2) seconds, instead of every participant hanging forever;
    a thread that takes a ``Lock`` it already holds is such a cycle.

    ``name`` appears in reports and the repr.  Linux with glibc only.
    """

    _KIND = KIND_LOCK
    _SEM_KIND = SEMAPHORE
    _table: _Table
    _slot: int
    _uid: int

    def __new__(cls, name: str | None = None) -> Lock:
        table, slot, uid = _new_slot(cls._KIND, name, cls.__name__)
        obj: Lock = cls._over(table, slot, uid)
        _track(obj, table, slot, uid)
        return obj

    def __init__(self, name: str | None = None) -> None:
        pass  # everything happened in __new__ (the C type is built by _rebuild)

    @classmethod
    def _over(cls, table: _Table, slot: int, uid: int) -> Any:
        """An object of ``cls`` over the semaphore of ``slot``."""
        address = table.segment.address + HEADER + slot * LOCK_BYTES
        obj = cls._rebuild(address, cls._SEM_KIND, 1, None)
        obj._table, obj._slot, obj._uid = table, slot, uid
        _locks.add(obj)
        return obj

    def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        """Take the lock; False if not ``blocking`` and held, or after ``timeout`` seconds."""
        if _try_acquire(self, False):
            return True
        if not blocking:
            return False
        if timeout is not None and timeout >= 0:
            return self._wait(time.monotonic() + timeout)
        return self._wait(None)

    def __enter__(self) -> bool:
        # release() and __exit__ are the C type's own.
        return _try_acquire(self, False) or self._wait(None)

    def _wait(self, deadline: float | None) -> bool:
        me = threading.get_native_id()
        table = self._table
        held = [
            lock._slot
            for lock in list(_locks)
            if lock._table is table and lock._is_mine() and lock._get_value() == 0
        ]
        entry = table.enter_wait(me, self._slot, held)
        try:
            suspect = None
            while True:
                wait = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
                if _try_acquire(self, True, max(wait, 0.0)):
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                cycle = table.find_cycle(me) if entry >= 0 else None
                if cycle is not None and cycle == suspect and me == max(t for t, _, _ in cycle):
                    raise self._deadlock(cycle)
                suspect = cycle
        finally:
            table.leave_wait(entry)

    def _deadlock(self, cycle: tuple[tuple[int, int, str], ...]) -> DeadlockError:
        from .._core._exceptions import DeadlockError

        table = self._table
        steps = []
        pairs = []
        for i, (_, slot, label) in enumerate(cycle):
            holder = cycle[(i + 1) % len(cycle)][2]
            steps.append(f"{label} waits for lock {table.name(slot)!r}, held by {holder}")
            pairs.append((label, table.name(slot)))
        return DeadlockError(
            "deadlock: " + "; ".join(steps) + ". This acquire gave up so that the others can "
            "go on: let the error leave your `with` blocks so the locks you hold are "
            "released, and take locks in one fixed order everywhere.",
            cycle=tuple(pairs),
        )

    def locked(self) -> bool:
        """Whether some thread holds the lock now."""
        return bool(self._get_value() == 0)

    @property
    def name(self) -> str:
        """The name given at creation (or ``Lock-<n>``), as shown in deadlock reports."""
        return self._table.name(self._slot)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_attach, (type(self), self._table.segment.ref, self._slot, self._uid))

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        return f"<workcrew.{type(self).__name__} {self.name!r} {state}>"


class RLock(Lock):
    """A re-entrant :class:`Lock`: its owner thread may take it again, and must release
    it as many times.  Only the owner may release it (``AssertionError`` otherwise,
    as ``multiprocessing.RLock``)."""

    _KIND = KIND_RLOCK
    _SEM_KIND = RECURSIVE_MUTEX


INT_CODES = "bhilqBHILQ"
FLOAT_CODES = "fd"


class Value:
    """A number shared by threads and processes, with its own re-entrant lock.

    ``Value("i", 0)`` (integer type codes: ``bhilqBHILQ``, or ``int``; stored
    as a signed 64-bit integer) or ``Value("d", 0.0)`` (``f``, ``d`` or
    ``float``; stored as a double).  As ``multiprocessing.Value``: ``.value``
    reads and writes, and ``get_lock()`` returns the lock that makes
    read-modify-write sequences safe.  ``v.value += 1`` is *not* atomic (a read
    then a write); :meth:`add` is.  Pass it to tasks as an argument.
    """

    def __init__(
        self, typecode_or_type: str | type = "q", value: float = 0, *, name: str | None = None
    ) -> None:
        self._code = _typecode(typecode_or_type)
        table, slot, uid = _new_slot(KIND_VALUE, name, "Value")
        self._bind(table, slot, uid)
        _track(self, table, slot, uid)
        self.value = value

    def _bind(self, table: _Table, slot: int, uid: int, lock: RLock | None = None) -> None:
        import ctypes

        self._table, self._slot, self._uid = table, slot, uid
        ctype = ctypes.c_double if self._code in FLOAT_CODES else ctypes.c_int64
        self._cell = table.segment.cells(ctype, HEADER + slot * LOCK_BYTES + VALUE * 8, 1)
        if lock is None:
            # The lock holds the slot too: `v.get_lock()` may outlive `v`.
            lock = RLock._over(table, slot, uid)
            table.hold(slot, uid, "the workcrew Value")
            _holds.append(weakref.finalize(lock, _drop_in, os.getpid(), table, slot, uid))
        self._lock: RLock = lock

    @property
    def value(self) -> Any:
        """The current number (read without the lock)."""
        return self._cell[0]

    @value.setter
    def value(self, new: float) -> None:
        self._cell[0] = new

    @property
    def name(self) -> str:
        """The name given at creation (or ``Value-<n>``)."""
        return self._table.name(self._slot)

    def get_lock(self) -> RLock:
        """The value's lock (a workcrew :class:`RLock`, with deadlock detection)."""
        return self._lock

    def add(self, delta: float) -> Any:
        """Add ``delta`` atomically (under the lock) and return the new value."""
        with self._lock:
            new = self._cell[0] + delta
            self._cell[0] = new
            return new

    def __reduce__(self) -> tuple[Any, ...]:
        return (_attach_value, (self._code, self._table.segment.ref, self._slot, self._uid))

    def __repr__(self) -> str:
        return f"<workcrew.Value {self.name!r} {self._code!r} {self.value!r}>"


def _attach_value(code: str, ref: SegmentRef, slot: int, uid: int) -> Value:
    known: Any = _attached.get((ref, uid))
    if isinstance(known, Value):
        return known
    table = _attach_table(ref)
    table.hold(slot, uid, "the workcrew Value")
    obj = Value.__new__(Value)
    obj._code = code
    # Its lock may have arrived first, on its own: the value uses that same lock.
    obj._bind(table, slot, uid, known if isinstance(known, RLock) else None)
    _track(obj, table, slot, uid)
    return obj


def _typecode(spec: str | type) -> str:
    if spec is int:
        return "q"
    if spec is float:
        return "d"
    if isinstance(spec, str) and len(spec) == 1 and spec in INT_CODES + FLOAT_CODES:
        return spec
    raise TypeError(
        f"workcrew.Value supports integer type codes {INT_CODES!r} (or int) and float "
        f"codes {FLOAT_CODES!r} (or float), got {spec!r}; share other data through a "
        "workcrew.Queue or a shared array"
    )


public(Lock, RLock, Value)
