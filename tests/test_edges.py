"""The edges of the failure model (issue 13): each case fails on the main before the fix."""

from __future__ import annotations

import gc
import multiprocessing
import time
import weakref
from typing import Any

import pytest

import workcrew
from helpers import TIMEOUT, square
from workcrew import Pool


def sleep_long(_: object) -> None:
    time.sleep(3600)  # ended by terminate(): never by itself


class Blob:
    """A large argument whose lifetime a test watches."""

    def __init__(self, megabytes: int) -> None:
        self.data = bytearray(megabytes << 20)


async def measure(blob: Blob) -> int:
    return len(blob.data)


def test_an_imap_iterator_ends_after_raising_the_terminate_error_once() -> None:
    pool = Pool(2, start_method="fork")
    it = pool.imap(sleep_long, range(50), chunksize=1)
    pool.terminate()
    raised = 0
    for _ in range(100):  # a loop that catches and goes on, as the docs invite
        try:
            next(it)
        except StopIteration:
            break
        except workcrew.TaskCancelled:
            raised += 1
    else:
        pytest.fail("the iterator never ended")
    assert raised == 1


def test_the_async_kind_keeps_no_argument_alive_after_a_map() -> None:
    blobs = [Blob(2) for _ in range(20)]
    refs = [weakref.ref(b) for b in blobs]
    with Pool(4, kind="async") as pool:
        assert pool.map(measure, blobs, chunksize=1) == [2 << 20] * 20
        del blobs
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
    assert alive == 0, f"{alive} of 20 arguments still alive after map() returned"


def _use_in_child(pool: Pool, answer: Any) -> None:
    try:
        pool.apply(square, (3,))
    except workcrew.PoolClosedError as exc:
        answer.put(str(exc))
    else:  # pragma: no cover - the failure being tested
        answer.put("it ran")


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_pool_used_in_a_forked_child_refuses_at_once(kind: str) -> None:
    ctx = multiprocessing.get_context("fork")
    answer = ctx.SimpleQueue()
    with Pool(1, kind=kind, start_method="fork") as pool:
        assert pool.apply(square, (2,)) == 4
        child = ctx.Process(target=_use_in_child, args=(pool, answer))
        child.start()
        child.join(TIMEOUT)
        assert child.exitcode == 0, "the child hung or died using its parent's pool"
        assert "belongs to process" in answer.get()
        assert pool.apply(square, (5,)) == 25  # the parent's pool is untouched
    answer.close()
