"""Bad input gets a clear error naming the object, fails only its task, and the pool goes on."""

from __future__ import annotations

import threading

import pytest

import helpers
import workcrew
from helpers import TIMEOUT
from workcrew import Pool


@pytest.fixture
def pool(start_method: str) -> Pool:
    with Pool(2, start_method=start_method) as pool:
        yield pool


def test_unpicklable_function_names_it_and_pool_goes_on(pool: Pool) -> None:
    lock = threading.Lock()

    def uses_lock(x: int) -> int:
        with lock:
            return x

    with pytest.raises(workcrew.SerializationError) as info:
        pool.map(uses_lock, [1, 2])
    message = str(info.value)
    assert "uses_lock" in message and "lock" in message.lower() and "kind='thread'" in message
    assert pool.map(helpers.square, [3]) == [9]


def test_unpicklable_argument_fails_only_its_item(pool: Pool) -> None:
    items = [1, threading.Lock(), 3]
    it = pool.imap(helpers.identity, items, chunksize=3)
    assert next(it) == 1
    with pytest.raises(workcrew.SerializationError) as info:
        next(it)
    message = str(info.value)
    assert "helpers.identity(<unlocked _thread.lock" in message
    assert "type lock" in message and "not picklable" in message
    assert next(it) == 3


def test_unpicklable_keyword_argument_is_named(pool: Pool) -> None:
    future = pool.submit(helpers.add, 1, b=threading.Lock())
    with pytest.raises(workcrew.SerializationError, match="keyword argument 'b'"):
        future.result(TIMEOUT)
    assert pool.submit(helpers.add, 1, b=2).result(TIMEOUT) == 3


def test_unpicklable_result_names_type_and_pool_goes_on(pool: Pool) -> None:
    with pytest.raises(workcrew.SerializationError) as info:
        pool.apply(helpers.return_lock, (0,))
    message = str(info.value)
    assert "result of helpers.return_lock(0)" in message and "lock" in message
    assert pool.apply(helpers.square, (5,)) == 25


def test_exception_that_cannot_be_rebuilt_becomes_task_failed(pool: Pool) -> None:
    with pytest.raises(workcrew.TaskFailed) as info:
        pool.apply(helpers.raise_unrebuildable)
    assert info.value.type_name == "helpers.Unrebuildable"
    assert "1-2" in str(info.value)
    assert isinstance(info.value.__cause__, workcrew.RemoteTraceback)
    assert pool.apply(helpers.square, (2,)) == 4


def test_argument_that_fails_to_unpickle_in_worker(pool: Pool) -> None:
    class Poison:
        def __reduce__(self) -> object:
            return (helpers.failing_initializer, ())

    results = pool.map_async(helpers.identity, [1, 2]).get(TIMEOUT)
    assert results == [1, 2]
    it = pool.imap(helpers.identity, [1, Poison(), 3], chunksize=3)
    assert next(it) == 1
    with pytest.raises(workcrew.SerializationError, match="could not unpickle the task"):
        next(it)
    assert next(it) == 3


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unpicklable_initializer_is_refused_at_construction(method: str) -> None:
    lock = threading.Lock()
    with pytest.raises(workcrew.SerializationError, match="initializer") as info:
        Pool(1, initializer=lambda: lock.acquire(), start_method=method)
    assert isinstance(info.value, TypeError)  # what pickling the lock raised


def test_forked_workers_get_the_initializer_by_inheritance() -> None:
    # nothing is pickled under fork, as with multiprocessing: the same objects work
    lock = threading.Lock()
    with Pool(1, initializer=lambda: lock.acquire(), start_method="fork") as pool:
        assert pool.apply(helpers.square, (4,)) == 16
