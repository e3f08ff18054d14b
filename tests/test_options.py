"""Invalid options raise at construction with a message that says what is accepted."""

from __future__ import annotations

import pytest

from workcrew import Executor, Pool


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"processes": 0}, ValueError, "max_workers must be greater than 0, got 0"),
        ({"processes": -2}, ValueError, "greater than 0, got -2"),
        ({"processes": 2.5}, TypeError, "must be an int"),
        ({"kind": "fiber"}, ValueError, "choose one of"),
        ({"start_method": "teleport"}, ValueError, "not available here"),
        ({"chunksize": 0}, ValueError, "chunksize=0"),
        ({"maxtasksperchild": 0}, ValueError, "must be a positive int or None, got 0"),
        ({"maxtasksperchild": 0.5}, ValueError, "must be a positive int or None, got 0.5"),
        ({"maxtasksperchild": "12"}, ValueError, "must be a positive int or None, got .12."),
        ({"initializer": 42}, TypeError, "initializer must be callable"),
    ],
)
def test_bad_pool_options(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Pool(**kwargs)  # type: ignore[arg-type]


def test_bad_executor_options() -> None:
    # ProcessPoolExecutor's wording, which code and CPython's tests match
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        Executor(max_workers=0)
    with pytest.raises(ValueError, match="positive int or None"):
        Executor(max_tasks_per_child=0)


def test_bad_call_arguments_leave_pool_usable() -> None:
    with Pool(1, kind="thread") as pool:
        with pytest.raises(ValueError, match="chunksize"):
            pool.map(abs, [1], chunksize=0)
        with pytest.raises(TypeError, match="must be callable"):
            pool.map(42, [1])  # type: ignore[arg-type]
        assert pool.map(abs, [-1]) == [1]


def test_a_timeout_too_large_for_the_selector_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        Pool(1, kind="thread", task_timeout=3e6)
    with Pool(1, kind="thread", task_timeout=2e6) as pool:  # 23 days: accepted
        assert pool.map(abs, [-1]) == [1]
