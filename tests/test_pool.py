"""Contract tests of workcrew.Pool, run for every worker kind and start method."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import helpers
import workcrew
from helpers import TIMEOUT
from workcrew import Pool
from workcrew._core._jobs import StreamJob


def test_map_and_friends_return_results_in_order(pool_kw: dict[str, Any]) -> None:
    data = list(range(500))
    expected = [x * x for x in data]
    with Pool(2, **pool_kw) as pool:
        assert pool.map(helpers.square, data) == expected
        assert pool.map(helpers.square, iter(data)) == expected
        assert pool.map(helpers.square, data, chunksize=7) == expected
        assert pool.starmap(helpers.add, [(x, 1) for x in data]) == [x + 1 for x in data]
        assert list(pool.imap(helpers.square, data)) == expected
        assert sorted(pool.imap_unordered(helpers.square, data)) == expected
        assert pool.map_async(helpers.square, data).get(TIMEOUT) == expected
        assert pool.starmap_async(helpers.add, [(1, 2)]).get(TIMEOUT) == [3]
        assert pool.map(helpers.square, []) == []
        assert list(pool.imap(helpers.square, [])) == []


def test_apply_submit_and_kwargs(pool_kw: dict[str, Any]) -> None:
    with Pool(2, **pool_kw) as pool:
        assert pool.apply(helpers.add, (2,), {"b": 3}) == 5
        result = pool.apply_async(helpers.add, (4, 5))
        assert result.get(TIMEOUT) == 9
        assert result.ready() and result.successful()
        assert pool.submit(helpers.add, 1, b=2).result(TIMEOUT) == 3


def test_lambdas_and_closures_run(pool_kw: dict[str, Any]) -> None:
    offset = 10
    with Pool(2, **pool_kw) as pool:
        assert pool.map(lambda x: x + offset, [1, 2, 3]) == [11, 12, 13]
        assert pool.submit(lambda: offset * 2).result(TIMEOUT) == 20


def test_task_exception_keeps_type_and_names_worker_and_args(pool_kw: dict[str, Any]) -> None:
    with Pool(2, **pool_kw) as pool:
        with pytest.raises(ValueError, match="bad input 3") as info:
            pool.map(helpers.fail_on, range(10))
        exc = info.value
        if pool_kw["kind"] == "process":
            cause = exc.__cause__
            assert isinstance(cause, workcrew.RemoteTraceback)
            assert "helpers.fail_on(3)" in str(cause)
            assert "raise ValueError" in str(cause)
            assert "pid" in str(cause)
        if sys.version_info >= (3, 11):
            assert any("helpers.fail_on(3)" in n and "worker" in n for n in exc.__notes__)
        # the pool keeps working
        assert pool.map(helpers.square, [1, 2]) == [1, 4]


def test_imap_raises_at_the_failing_item_and_goes_on(any_kind_kw: dict[str, Any]) -> None:
    fail_on = helpers.async_fail_on if any_kind_kw["kind"] == "async" else helpers.fail_on
    with Pool(2, **any_kind_kw) as pool:
        it = pool.imap(fail_on, range(6), chunksize=2)
        assert [next(it), next(it), next(it)] == [0, 1, 2]
        with pytest.raises(ValueError, match="bad input 3"):
            next(it)
        assert list(it) == [4, 5]


def test_callbacks_are_called(any_kind_kw: dict[str, Any]) -> None:
    coroutines = any_kind_kw["kind"] == "async"
    square = helpers.async_square if coroutines else helpers.square
    fail_on = helpers.async_fail_on if coroutines else helpers.fail_on
    got: list[Any] = []
    done = threading.Event()
    failed = threading.Event()
    with Pool(2, **any_kind_kw) as pool:
        pool.apply_async(square, (3,), callback=lambda r: (got.append(r), done.set()))
        pool.map_async(fail_on, [3], error_callback=lambda e: (got.append(type(e)), failed.set()))
        assert done.wait(TIMEOUT)
        assert failed.wait(TIMEOUT)
    assert sorted(map(str, got)) == sorted(map(str, [9, ValueError]))


def test_get_timeout_raises_both_timeout_errors(pool_kw: dict[str, Any], tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    os.mkfifo(gate)
    with Pool(1, **pool_kw) as pool:
        result = pool.apply_async(helpers.wait_for_fifo, (gate,))
        with pytest.raises(multiprocessing.TimeoutError) as info:
            result.get(timeout=0.05)
        assert isinstance(info.value, workcrew.TimeoutError)
        assert not result.ready()
        with pytest.raises(ValueError, match="not ready"):
            result.successful()
        helpers.release_fifo(gate)
        assert result.get(TIMEOUT) == "go"


def test_initializer_runs_in_every_worker(pool_kw: dict[str, Any]) -> None:
    with Pool(2, initializer=helpers.set_state, initargs=("ready",), **pool_kw) as pool:
        assert set(pool.map(helpers.get_state, range(20), chunksize=1)) == {"ready"}


def test_failing_initializer_breaks_the_pool_instead_of_respawning(
    pool_kw: dict[str, Any],
) -> None:
    pool = Pool(2, initializer=helpers.failing_initializer, **pool_kw)
    try:
        with pytest.raises(workcrew.InitializerError, match="initializer refuses") as info:
            pool.apply(helpers.square, (2,))
        assert "RuntimeError" in str(info.value)
        with pytest.raises(workcrew.BrokenPoolError):
            pool.apply(helpers.square, (2,))
    finally:
        pool.terminate()


def test_maxtasksperchild_recycles_workers(pool_kw: dict[str, Any]) -> None:
    with Pool(1, maxtasksperchild=2, **pool_kw) as pool:
        names = pool.map(helpers.worker_name, range(6), chunksize=1)
    assert len(set(names)) == 3
    assert names[0] == names[1] != names[2] == names[3] != names[4] == names[5]


def test_closed_pool_refuses_work_with_a_clear_error(any_kind_kw: dict[str, Any]) -> None:
    square = helpers.async_square if any_kind_kw["kind"] == "async" else helpers.square
    pool = Pool(1, **any_kind_kw)
    pool.close()
    with pytest.raises(workcrew.PoolClosedError, match="closed") as info:
        pool.apply(square, (1,))
    assert isinstance(info.value, ValueError)  # what multiprocessing raises
    pool.join()


def test_join_before_close_is_an_error() -> None:
    with Pool(1, kind="thread") as pool, pytest.raises(ValueError, match="still running"):
        pool.join()


def test_terminate_fails_pending_results(pool_kw: dict[str, Any], tmp_path: Path) -> None:
    started, gate = helpers.make_gates(tmp_path)
    pool = Pool(1, **pool_kw)
    blocked = pool.apply_async(helpers.signal_then_wait, (started, gate))
    queued = pool.apply_async(helpers.square, (2,))
    assert helpers.wait_for_fifo(started) == "started"
    if pool_kw["kind"] == "thread":
        # A thread cannot be killed: terminate() waits for it.  Release it from
        # another thread once terminate has failed the queued task.
        def release_after_terminate() -> None:
            queued.wait(TIMEOUT)
            helpers.release_fifo(gate)

        threading.Thread(target=release_after_terminate).start()
    pool.terminate()
    with pytest.raises(workcrew.TaskCancelled):
        queued.get(TIMEOUT)
    if pool_kw["kind"] == "process":
        with pytest.raises(workcrew.TaskCancelled):
            blocked.get(TIMEOUT)


def test_with_block_waits_for_submitted_work(any_kind_kw: dict[str, Any]) -> None:
    square = helpers.async_square if any_kind_kw["kind"] == "async" else helpers.square
    with Pool(2, **any_kind_kw) as pool:
        results = [pool.apply_async(square, (i,)) for i in range(20)]
    assert [r.get(0) for r in results] == [i * i for i in range(20)]


def test_many_caller_threads_share_one_pool(pool_kw: dict[str, Any]) -> None:
    callers = 8
    barrier = threading.Barrier(callers)
    errors: list[BaseException] = []

    def use(pool: Pool, n: int) -> None:
        try:
            barrier.wait(TIMEOUT)
            data = list(range(n, n + 200))
            assert pool.map(helpers.square, data) == [x * x for x in data]
            assert list(pool.imap(helpers.square, data)) == [x * x for x in data]
            assert pool.submit(helpers.add, n, b=1).result(TIMEOUT) == n + 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    with Pool(2, **pool_kw) as pool:
        threads = [threading.Thread(target=use, args=(pool, i * 1000)) for i in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
    assert not errors


def test_imap_reads_input_lazily_with_bounded_window(pool_kw: dict[str, Any]) -> None:
    pulled = itertools.count()

    def source() -> Any:
        for i in itertools.count():
            next(pulled)
            yield i

    with Pool(2, **pool_kw) as pool:
        it = pool.imap(helpers.square, source(), chunksize=10)
        got = [next(it) for _ in range(1000)]
        assert got == [i * i for i in range(1000)]
        it.close()
    # four chunks per worker, or a second of the pool's work (capped), read in
    # whole chunks
    window = max(StreamJob.MIN_WINDOW, 4 * 2 * 10, StreamJob.MAX_RATE_WINDOW)
    assert next(pulled) <= 1000 + -(-window // 10) * 10 + 1


def test_imap_input_error_is_raised_at_its_position(pool_kw: dict[str, Any]) -> None:
    def source() -> Any:
        yield 1
        yield 2
        raise OSError("source broke")

    with Pool(2, **pool_kw) as pool:
        it = pool.imap(helpers.square, source())
        assert [next(it), next(it)] == [1, 4]
        with pytest.raises(OSError, match="source broke"):
            next(it)


def test_unclosed_pool_is_terminated_when_collected() -> None:
    holder = [Pool(2, kind="process", start_method="fork")]
    assert holder[0].apply(helpers.square, (3,)) == 9
    with pytest.warns(ResourceWarning, match="garbage-collected"):
        holder.clear()  # the last reference: CPython collects the pool right here


def test_forkserver_start_method() -> None:
    with Pool(2, start_method="forkserver") as pool:
        assert pool.map(helpers.square, range(10)) == [x * x for x in range(10)]
        assert pool.submit(lambda: 5).result(TIMEOUT) == 5


def test_default_start_method_is_not_fork() -> None:
    assert workcrew.default_start_method() in ("forkserver", "spawn")
    with Pool(1) as pool:
        assert pool.start_method == workcrew.default_start_method()
        assert pool.kind == "process"


def test_context_argument_selects_start_method() -> None:
    with Pool(1, context=multiprocessing.get_context("spawn")) as pool:
        assert pool.start_method == "spawn"
        assert pool.apply(helpers.square, (4,)) == 16


def test_closing_with_an_unread_lazy_map_does_not_wait_for_its_input(
    pool_kw: dict[str, Any],
) -> None:
    with Pool(2, **pool_kw) as pool:
        it = pool.imap(helpers.square, range(100_000), chunksize=10)
        assert next(it) == 0
    # leaving the block returned: only input already read was run
    got = []
    with pytest.raises(workcrew.PoolClosedError, match="closed before this map's input"):
        got.extend(it)  # keeps what it read before the error
    assert got == [x * x for x in range(1, len(got) + 1)]
    assert len(got) < 100_000


def test_a_pool_inside_a_worker_warns(pool_kw: dict[str, Any]) -> None:
    with Pool(1, **pool_kw) as pool:
        assert pool.apply(helpers.nested_pool_warnings) == ["NestedPoolWarning"]
    assert helpers.nested_pool_warnings() == []  # not inside a worker: no warning


def test_process_workers_share_the_cpus_among_native_thread_pools(start_method: str) -> None:
    cpus = workcrew.available_cpu_count()
    with Pool(2, start_method=start_method) as pool:
        setting = pool.apply(helpers.native_thread_setting)
    expected = os.environ.get("OMP_NUM_THREADS", str(max(1, cpus // 2)))
    assert setting == expected


def test_a_pool_starts_no_worker_that_no_work_waits_for(start_method: str) -> None:
    # Workers start on demand, one more whenever work waits and all are busy: one
    # task on a pool of two needs one worker (a second would only boot and idle).
    with Pool(2, start_method=start_method) as pool:
        assert pool.apply(abs, (-3,)) == 3
        stats = pool.statistics()
    assert stats.workers_started == 1
    assert len(stats.workers) == 1
