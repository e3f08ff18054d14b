"""Task functions for tests/test_sharing.py (module level: every start method imports them)."""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

import workcrew


def writer(q: workcrew.Queue[int], n: int, close: bool = True) -> int:
    for i in range(n):
        q.put(i)
    if close:
        q.close()
    return n


def reader(q: workcrew.Queue[int]) -> list[int]:
    return list(q)


async def awriter(q: workcrew.Queue[int], n: int) -> int:
    for i in range(n):
        await q.put_async(i)
    q.close()
    return n


async def areader(q: workcrew.Queue[int]) -> list[int]:
    return [item async for item in q]


def produce(q: workcrew.Queue[tuple[int, int]], who: int, n: int) -> int:
    for i in range(n):
        q.put((who, i))
    return n


def bank(balance: workcrew.Value, lock: workcrew.Lock, n: int, sign: int) -> int:
    """The lecture's bank account: ``n`` deposits (sign 1) or withdrawals (sign -1)."""
    for _ in range(n):
        with lock:
            balance.value += sign
    return n


def add_many(value: workcrew.Value, n: int) -> Any:
    for _ in range(n):
        value.add(1)
    return value.value


def crossed(
    first: workcrew.Lock,
    second: workcrew.Lock,
    ready: workcrew.Queue[str],
    go: workcrew.Queue[str],
) -> str:
    """Take ``first``, meet the other task, then take ``second``: half of a deadlock."""
    with first:
        ready.put(first.name)
        go.get(timeout=30)
        try:
            with second:
                return "acquired"
        except workcrew.DeadlockError as exc:
            return f"deadlock: {exc}"


def take_twice(lock: workcrew.Lock) -> str:
    with lock:
        try:
            with lock:
                return "re-entered"
        except workcrew.DeadlockError as exc:
            return f"deadlock: {exc}"


def hold_then_die(lock: workcrew.Lock, held: workcrew.Queue[str]) -> None:
    lock.acquire()
    held.put("held")
    os._exit(3)


def try_acquire(lock: workcrew.Lock, timeout: float) -> bool:
    got = lock.acquire(timeout=timeout)
    if got:
        lock.release()
    return got


def rlock_depth(lock: workcrew.RLock) -> int:
    with lock, lock, lock:
        return 3


def array_facts(a: np.ndarray[Any, Any]) -> tuple[float, bool]:
    """The array's sum, and whether it arrived mapped from shared memory."""
    base = a
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return float(a.sum()), isinstance(base, ctypes.Array)


def scale_in_place(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a *= 2  # the worker's private copy: the caller's array must not change
    return a


def open_fds(_: object = None) -> int:
    return len(os.listdir("/proc/self/fd"))


def crash_with(a: np.ndarray[Any, Any]) -> None:
    os._exit(5)


def big_or_crash(i: int) -> np.ndarray[Any, Any]:
    """A result large enough for shared memory; items 3 and 7 kill their worker."""
    if i in (3, 7):
        os._exit(9)
    return np.full(1 << 16, i, dtype=np.float64)  # 512 KiB


def try_lock_of(value: workcrew.Value) -> bool:
    lock = value.get_lock()
    got = lock.acquire(False)
    if got:
        lock.release()
    return got


def same_lock(value: workcrew.Value, lock: workcrew.RLock) -> bool:
    return value.get_lock() is lock
