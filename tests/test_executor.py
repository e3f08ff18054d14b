"""workcrew.Executor is a concurrent.futures.Executor, with a lazy map."""

from __future__ import annotations

import concurrent.futures
import itertools
import os
from pathlib import Path
from typing import Any

import pytest

import helpers
import workcrew
from helpers import TIMEOUT
from workcrew import Executor
from workcrew._core._jobs import StreamJob


def test_is_a_real_executor(pool_kw: dict[str, Any]) -> None:
    with Executor(max_workers=2, **pool_kw) as ex:
        assert isinstance(ex, concurrent.futures.Executor)
        futures = [ex.submit(helpers.square, i) for i in range(20)]
        _, not_done = concurrent.futures.wait(futures, timeout=TIMEOUT)
        assert not not_done
        got = sorted(f.result() for f in concurrent.futures.as_completed(futures, TIMEOUT))
        assert got == sorted(i * i for i in range(20))
        assert list(ex.map(helpers.add, range(5), range(5))) == [0, 2, 4, 6, 8]
        assert ex.submit(helpers.add, 1, b=1).result(TIMEOUT) == 2


def test_map_is_lazy_and_stops_when_abandoned(pool_kw: dict[str, Any]) -> None:
    pulled = itertools.count()

    def source() -> Any:
        for i in itertools.count():
            next(pulled)
            yield i

    with Executor(max_workers=2, **pool_kw) as ex:
        results = ex.map(helpers.square, source(), chunksize=5)
        first = list(itertools.islice(results, 300))
        assert first == [i * i for i in range(300)]
        results.close()  # type: ignore[attr-defined]
    # four chunks per worker, or a second of the pool's work (capped), read in
    # whole chunks
    window = max(StreamJob.MIN_WINDOW, 4 * 2 * 5, StreamJob.MAX_RATE_WINDOW)
    assert next(pulled) <= 300 + -(-window // 5) * 5 + 1


def test_map_raises_at_the_failing_item(pool_kw: dict[str, Any]) -> None:
    with Executor(max_workers=2, **pool_kw) as ex:
        results = ex.map(helpers.fail_on, range(6))
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="bad input 3"):
            next(results)


def test_map_timeout(pool_kw: dict[str, Any], tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    os.mkfifo(gate)
    with Executor(max_workers=1, **pool_kw) as ex:
        results = ex.map(helpers.wait_for_fifo, [gate], timeout=0.05)
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        helpers.release_fifo(gate)


def test_shutdown_cancel_futures(pool_kw: dict[str, Any], tmp_path: Path) -> None:
    started, gate = helpers.make_gates(tmp_path)
    ex = Executor(max_workers=1, **pool_kw)
    running = ex.submit(helpers.signal_then_wait, started, gate)
    pending = [ex.submit(helpers.square, i) for i in range(5)]
    assert helpers.wait_for_fifo(started) == "started"
    ex.shutdown(wait=False, cancel_futures=True)
    helpers.release_fifo(gate)
    assert running.result(TIMEOUT) == "go"
    ex.shutdown(wait=True)
    assert all(f.cancelled() for f in pending)
    with pytest.raises(RuntimeError, match="closed"):
        ex.submit(helpers.square, 1)


def test_submit_after_shutdown_is_pool_closed_error() -> None:
    ex = Executor(max_workers=1, kind="thread")
    ex.shutdown()
    with pytest.raises(workcrew.PoolClosedError):
        ex.submit(helpers.square, 2)


def test_cancel_pending_future(tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    os.mkfifo(gate)
    with Executor(max_workers=1, kind="thread") as ex:
        blocker = ex.submit(helpers.wait_for_fifo, gate)
        queued = ex.submit(helpers.square, 3)
        assert queued.cancel()
        helpers.release_fifo(gate)
        assert blocker.result(TIMEOUT) == "go"
    assert queued.cancelled()


def test_mp_context_selects_start_method() -> None:
    import multiprocessing

    with Executor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as ex:
        assert ex.submit(helpers.square, 7).result(TIMEOUT) == 49
