"""Hybrid workers: several IO-bound tasks at once inside each process worker."""

from __future__ import annotations

import pytest

import helpers
from workcrew import Pool


def test_coroutines_run_concurrently_in_each_process(start_method: str) -> None:
    with Pool(2, start_method=start_method, concurrency_per_worker=5) as pool:
        seen = pool.map(helpers.async_rendezvous, [5] * 20)
    assert max(seen) >= 5  # five waited for each other inside one process


def test_blocking_functions_run_on_threads_in_each_process(start_method: str) -> None:
    with Pool(1, start_method=start_method, concurrency_per_worker=4) as pool:
        names = pool.map(helpers.thread_rendezvous, [4] * 8)
    assert len(set(names)) == 4  # a barrier of 4 could only pass with 4 threads at once


def test_coroutine_functions_run_on_plain_process_workers(start_method: str) -> None:
    with Pool(2, start_method=start_method) as pool:
        assert pool.map(helpers.async_square, range(10)) == [x * x for x in range(10)]
        with pytest.raises(ValueError, match="bad input 3"):
            pool.map(helpers.async_fail_on, range(5))


def test_hybrid_needs_process_workers() -> None:
    with pytest.raises(ValueError, match="needs kind='process'"):
        Pool(2, kind="thread", concurrency_per_worker=4)


def test_thread_kind_refuses_coroutine_functions() -> None:
    with Pool(1, kind="thread") as pool, pytest.raises(TypeError, match="kind='async'"):
        pool.submit(helpers.async_square, 2)
