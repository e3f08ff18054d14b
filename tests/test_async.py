"""kind="async": coroutine functions on an event loop; and awaiting a pool from async code."""

from __future__ import annotations

import asyncio
import threading

import pytest

import helpers
import workcrew
from helpers import TIMEOUT
from workcrew import Pool


def test_async_kind_runs_coroutines_in_order() -> None:
    with Pool(10, kind="async") as pool:
        assert pool.map(helpers.async_square, range(100)) == [x * x for x in range(100)]
        assert list(pool.imap(helpers.async_square, range(20))) == [x * x for x in range(20)]
        assert pool.submit(helpers.async_square, 7).result(TIMEOUT) == 49
        assert pool.starmap(helpers.async_square, [(2,), (3,)]) == [4, 9]


def test_async_errors_keep_their_type() -> None:
    with Pool(4, kind="async") as pool:
        with pytest.raises(ValueError, match="bad input 3"):
            pool.map(helpers.async_fail_on, range(6))
        assert pool.apply(helpers.async_square, (2,)) == 4


def test_async_workers_bound_concurrency() -> None:
    entered = threading.Semaphore(0)
    gate = threading.Event()
    helpers._live_coroutines.update(now=0, peak=0)
    with Pool(5, kind="async") as pool:
        results = [pool.submit(helpers.async_track_concurrency, entered, gate) for _ in range(12)]
        for _ in range(5):  # five run at once ...
            assert entered.acquire(timeout=TIMEOUT)
        assert helpers._live_coroutines["now"] == 5  # ... and no sixth while they block
        gate.set()
        peaks = [r.result(TIMEOUT) for r in results]
    assert max(peaks) == 5


def test_async_timeout_really_cancels_the_coroutine() -> None:
    cancelled = threading.Event()
    with Pool(2, kind="async", task_timeout=0.2) as pool:
        future = pool.submit(helpers.async_forever, cancelled)
        with pytest.raises(workcrew.TaskTimeout, match="coroutine was cancelled"):
            future.result(TIMEOUT)
        assert cancelled.wait(TIMEOUT)
        assert pool.apply(helpers.async_square, (3,)) == 9  # the slot goes on


def test_plain_function_is_refused_by_the_async_kind() -> None:
    with Pool(2, kind="async") as pool:
        with pytest.raises(TypeError, match="Use kind='thread'"):
            pool.map(helpers.square, [1])
        assert pool.map(helpers.async_square, [2]) == [4]


def test_await_a_process_pool_from_an_event_loop(start_method: str) -> None:
    async def main(pool: Pool) -> tuple[object, ...]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        tick_task = asyncio.ensure_future(ticker())
        one = await pool.asubmit(helpers.square, 6)
        many = await pool.amap(helpers.square, range(10))
        streamed = [x async for x in pool.aimap(helpers.square, range(5))]
        tick_task.cancel()
        return one, many, streamed, ticks

    with Pool(2, start_method=start_method) as pool:
        one, many, streamed, ticks = asyncio.run(main(pool))
    assert one == 36
    assert many == [x * x for x in range(10)]
    assert streamed == [x * x for x in range(5)]
    assert isinstance(ticks, int) and ticks > 0  # the loop kept running while we waited


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_event_loop_choice(event_loop: str, start_method: str) -> None:
    with Pool(2, kind="async", event_loop=event_loop) as pool:
        assert pool.map(helpers.loop_module, range(3)) == [event_loop] * 3
    hybrid = Pool(1, concurrency_per_worker=2, event_loop=event_loop, start_method=start_method)
    with hybrid:
        assert hybrid.map(helpers.loop_module, range(3)) == [event_loop] * 3


def test_auto_event_loop_prefers_uvloop() -> None:
    with Pool(2, kind="async") as pool:
        assert pool.apply(helpers.loop_module) == "uvloop"  # installed by the test extra


def test_bad_event_loop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="event_loop='trio' is invalid"):
        Pool(2, kind="async", event_loop="trio")
    monkeypatch.setitem(__import__("sys").modules, "uvloop", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'workcrew\[uvloop\]'"):
        Pool(2, kind="async", event_loop="uvloop")
    with Pool(2, kind="async") as pool:  # "auto" falls back to asyncio's loop
        assert pool.apply(helpers.loop_module) == "asyncio"
