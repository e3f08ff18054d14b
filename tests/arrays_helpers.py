"""Task functions for tests/test_arrays.py (module level: every start method imports them)."""

from __future__ import annotations

import gc
import os
from typing import Any

import numpy as np

import workcrew
from helpers import TIMEOUT
from workcrew._sharing._arrays import _segment_behind

Array = np.ndarray[Any, Any]

#: an array a task keeps after it returns (test_a_kept_view_outlives_the_callers_array)
_kept: list[Array] = []


def fill(a: Array, value: float) -> float:
    a[...] = value
    return float(a.sum())


def total(a: Array) -> float:
    return float(a.sum())


def scale_and_sum(a: Array) -> float:
    a *= 2  # private pages in the worker: the next task given this segment must not see them
    return float(a.sum())


def mark_some_pages(a: Array) -> float:
    a[::1024] = -1.0  # one float every 8 KiB: some pages copied, others still shared
    return float(a.sum())


def maps_shared_memory(a: Array) -> bool:
    """Whether the task's array is a view of a shared array's segment (nothing copied)."""
    return _segment_behind(a) is not None


def overlap(x: Array, y: Array) -> bool:
    return bool(np.shares_memory(x, y))


def slice_back(a: Array) -> Array:
    return a[1:3]


def make_shared(n: int) -> Array:
    a = workcrew.shared_array(n)
    a[:] = np.arange(n)
    return a


def keep(a: Array) -> None:
    _kept.append(a)


def kept_sum(_: object = None) -> float:
    return float(_kept[0].sum())


def drop_kept(_: object = None) -> None:
    _kept.clear()


def crash_holding(a: Array) -> None:
    a[0] = 1.0
    os._exit(7)


def wait_for(gate: workcrew.Queue[str]) -> str:
    return gate.get(timeout=TIMEOUT)


def segments(name: str) -> tuple[int, int]:
    """(segments mapped, segments with a descriptor open) in this process, named ``name``.

    Counted by inode: one segment may have two descriptors here (Python's mmap
    duplicates one before 3.13) and its mapping may show as several areas.
    """
    gc.collect()
    mapped = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            if f"memfd:{name}" in line:
                mapped.add(int(line.split()[4]))
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if f"memfd:{name}" in os.readlink(f"/proc/self/fd/{fd}"):
                held.add(os.stat(f"/proc/self/fd/{fd}").st_ino)
        except OSError:  # the directory's own descriptor, gone by now
            pass
    return len(mapped), len(held)


def shared_segments(_: object = None) -> tuple[int, int]:
    return segments("workcrew-shared-array")


def buffer_segments(_: object = None) -> tuple[int, int]:
    return segments("workcrew-buffer")
