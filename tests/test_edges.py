"""The edges of the failure model (issue 13): each case fails on the main before the fix."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

import workcrew
from edge_helpers import fork_then
from helpers import TIMEOUT, square, wait_for_fifo
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


@pytest.fixture
def started(tmp_path: Path) -> str:
    path = str(tmp_path / "started")
    os.mkfifo(path)
    return path


def _grandchild(started: str) -> int:
    return int(wait_for_fifo(started))


@pytest.mark.parametrize("then", ["crash", "hang"])
def test_a_grandchild_that_outlives_its_task_delays_nothing(
    start_method: str, started: str, then: str
) -> None:
    timeout = 0.5 if then == "hang" else None
    expected = workcrew.WorkerCrashed if then == "crash" else workcrew.TaskTimeout
    with Pool(1, start_method=start_method, task_timeout=timeout) as pool:
        result = pool.apply_async(fork_then, (started, then))
        grandchild = _grandchild(started)
        try:
            with pytest.raises(expected):
                result.get(TIMEOUT)  # not when the grandchild ends: it never does by itself
            assert pool.apply(square, (3,)) == 9
        finally:
            os.kill(grandchild, signal.SIGKILL)


def test_terminate_returns_while_a_grandchild_lives_on(start_method: str, started: str) -> None:
    pool = Pool(1, start_method=start_method)
    pool.apply_async(fork_then, (started, "hang"))
    grandchild = _grandchild(started)
    try:
        stopper = threading.Thread(target=pool.terminate)
        stopper.start()
        stopper.join(TIMEOUT)
        assert not stopper.is_alive(), "terminate() waited for the task's grandchild"
    finally:
        os.kill(grandchild, signal.SIGKILL)
