"""workcrew.Queue, Lock, RLock, Value and zero-copy arrays, across every worker kind."""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import queue
import threading
from collections import Counter
from typing import Any

import numpy as np
import pytest

import sharing_helpers as sh
import workcrew
from helpers import TIMEOUT

# -- Queue -----------------------------------------------------------------------------


def test_queue_writer_and_reader_end_without_terminate(pool_kw: dict[str, Any]) -> None:
    # The lecture's writer/reader: the reader's loop ends when the writer closes.
    q: workcrew.Queue[int] = workcrew.Queue(maxsize=8)
    with workcrew.Pool(2, **pool_kw) as pool:
        read = pool.apply_async(sh.reader, (q,))
        written = pool.apply_async(sh.writer, (q, 500))
        assert read.get(TIMEOUT) == list(range(500))
        assert written.get(TIMEOUT) == 500


def test_queue_with_coroutines() -> None:
    q: workcrew.Queue[int] = workcrew.Queue(maxsize=4)
    with workcrew.Pool(2, kind="async") as pool:
        read = pool.apply_async(sh.areader, (q,))
        pool.apply_async(sh.awriter, (q, 300)).get(TIMEOUT)
        assert read.get(TIMEOUT) == list(range(300))


def test_queue_between_caller_and_workers(start_method: str) -> None:
    q: workcrew.Queue[tuple[int, int]] = workcrew.Queue(maxsize=16)
    with workcrew.Pool(3, start_method=start_method) as pool:
        producers = [pool.apply_async(sh.produce, (q, who, 200)) for who in range(3)]
        got = [q.get(timeout=TIMEOUT) for _ in range(600)]
        assert [p.get(TIMEOUT) for p in producers] == [200, 200, 200]
    assert sorted(got) == [(who, i) for who in range(3) for i in range(200)]
    for who in range(3):  # one producer's items keep their order
        assert [i for w, i in got if w == who] == list(range(200))


def test_many_producers_and_consumers(start_method: str) -> None:
    q: workcrew.Queue[tuple[int, int]] = workcrew.Queue(maxsize=5)
    with workcrew.Pool(5, start_method=start_method) as pool:
        consumers = [pool.apply_async(sh.reader, (q,)) for _ in range(2)]
        producers = [pool.apply_async(sh.produce, (q, who, 300)) for who in range(3)]
        for p in producers:
            p.get(TIMEOUT)
        q.close()
        received = [item for c in consumers for item in c.get(TIMEOUT)]
    assert Counter(received) == Counter((w, i) for w in range(3) for i in range(300))


def test_full_empty_and_timeouts() -> None:
    q: workcrew.Queue[str] = workcrew.Queue(maxsize=2)
    assert q.empty() and not q.full()
    q.put("a")
    q.put_nowait("b")
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put("c", timeout=0.01)
    with pytest.raises(queue.Full):
        q.put_nowait("c")
    assert [q.get(), q.get_nowait()] == ["a", "b"]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_close_delivers_what_was_put_then_refuses() -> None:
    q: workcrew.Queue[int] = workcrew.Queue()
    q.put(1)
    q.put(2)
    q.close()
    q.close()  # idempotent
    assert q.closed
    with pytest.raises(workcrew.QueueClosed):
        q.put(3)
    assert list(q) == [1, 2]
    with pytest.raises(workcrew.QueueClosed):
        q.get()


def test_close_wakes_a_blocked_getter() -> None:
    q: workcrew.Queue[int] = workcrew.Queue()
    outcome: list[BaseException] = []
    started = threading.Event()

    def get() -> None:
        started.set()
        try:
            q.get(timeout=TIMEOUT)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=get)
    thread.start()
    started.wait(TIMEOUT)
    q.close()  # before or during its wait: either way it must end with QueueClosed
    thread.join(TIMEOUT)
    assert len(outcome) == 1 and isinstance(outcome[0], workcrew.QueueClosed)


def test_items_wrap_around_the_ring() -> None:
    q: workcrew.Queue[bytes] = workcrew.Queue(buffer_size=1000)
    for i in range(200):  # far more bytes than the ring holds: every offset is crossed
        item = bytes([i]) * (i % 97)
        q.put(item)
        assert q.get() == item


def test_cancelled_async_get_loses_nothing() -> None:
    q: workcrew.Queue[str] = workcrew.Queue()

    async def main() -> str:
        waiter = asyncio.ensure_future(q.get_async())
        await asyncio.sleep(0)  # let it start waiting
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        q.put("kept")
        return await q.get_async(timeout=TIMEOUT)

    assert asyncio.run(main()) == "kept"


def test_bad_items_and_arguments_get_clear_errors() -> None:
    q: workcrew.Queue[Any] = workcrew.Queue(buffer_size=1024)
    with pytest.raises(ValueError, match="larger than the queue's buffer of 1024 bytes"):
        q.put(b"x" * 2000)
    with pytest.raises(workcrew.SerializationError, match=r"lock.*cannot be put on"):
        q.put(threading.Lock())
    q.put("still works")
    assert q.get() == "still works"
    with pytest.raises(ValueError, match="maxsize"):
        workcrew.Queue(maxsize=-1)
    with pytest.raises(ValueError, match="buffer_size"):
        workcrew.Queue(buffer_size=0)


def test_a_queue_unpickles_to_itself_in_its_process() -> None:
    q: workcrew.Queue[int] = workcrew.Queue()
    assert pickle.loads(pickle.dumps(q)) is q


# -- Lock, RLock, Value ----------------------------------------------------------------


def test_bank_account_ends_at_exactly_zero(pool_kw: dict[str, Any]) -> None:
    balance = workcrew.Value("i", 0)
    lock = workcrew.Lock("account")
    n = 1_000_000
    with workcrew.Pool(2, **pool_kw) as pool:
        done = [pool.apply_async(sh.bank, (balance, lock, n, sign)) for sign in (1, -1)]
        assert [d.get(TIMEOUT * 4) for d in done] == [n, n]
    assert balance.value == 0


def test_value_add_is_atomic(start_method: str) -> None:
    counter = workcrew.Value(int)
    with workcrew.Pool(2, start_method=start_method) as pool:
        pool.starmap(sh.add_many, [(counter, 5000)] * 4, chunksize=1)
    assert counter.value == 4 * 5000


def test_value_types_and_errors() -> None:
    ratio = workcrew.Value("d", 0.5, name="ratio")
    assert ratio.add(0.25) == 0.75 and ratio.value == 0.75
    assert "ratio" in repr(ratio)
    with pytest.raises(TypeError, match="integer type codes"):
        workcrew.Value("z")
    with ratio.get_lock(), ratio.get_lock():  # re-entrant, as multiprocessing.Value's lock
        ratio.value = 2.0
    assert ratio.value == 2.0


def test_lock_timeout_and_nonblocking_across_processes(start_method: str) -> None:
    lock = workcrew.Lock()
    with workcrew.Pool(1, start_method=start_method) as pool:
        with lock:
            assert lock.locked()
            assert pool.apply(sh.try_acquire, (lock, 0.05)) is False
            assert lock.acquire(blocking=False) is False
        assert pool.apply(sh.try_acquire, (lock, TIMEOUT)) is True


def test_rlock_reenters_and_excludes_others(start_method: str) -> None:
    lock = workcrew.RLock()
    with workcrew.Pool(1, start_method=start_method) as pool:
        assert pool.apply(sh.rlock_depth, (lock,)) == 3
        with lock:
            assert pool.apply(sh.try_acquire, (lock, 0.05)) is False
    with pytest.raises(AssertionError):
        lock.release()  # not held by this thread


@pytest.mark.parametrize("deadline", [TIMEOUT])
def test_two_lock_cycle_raises_deadlock_error_in_one_task(
    pool_kw: dict[str, Any], deadline: float
) -> None:
    first, second = workcrew.Lock("first"), workcrew.Lock("second")
    ready: workcrew.Queue[str] = workcrew.Queue()
    go: workcrew.Queue[str] = workcrew.Queue()
    with workcrew.Pool(2, **pool_kw) as pool:
        a = pool.apply_async(sh.crossed, (first, second, ready, go))
        b = pool.apply_async(sh.crossed, (second, first, ready, go))
        assert sorted([ready.get(timeout=deadline), ready.get(timeout=deadline)]) == [
            "first",
            "second",
        ]
        go.put("go")
        go.put("go")
        outcomes = sorted([a.get(deadline), b.get(deadline)])
    # One participant gave up; its locks were released, so the other went on.
    assert outcomes[0] == "acquired"
    assert outcomes[1].startswith("deadlock: ")
    assert "'first'" in outcomes[1] and "'second'" in outcomes[1]
    assert outcomes[1].count("waits for lock") == 2


def test_taking_a_held_lock_again_is_a_deadlock() -> None:
    lock = workcrew.Lock("mine")
    with workcrew.Pool(1, kind="thread") as pool:
        message = pool.apply_async(sh.take_twice, (lock,)).get(TIMEOUT)
    assert message.startswith("deadlock: ") and "'mine'" in message
    assert sh.take_twice(workcrew.RLock()) == "re-entered"


def test_a_holder_that_dies_leaves_the_lock_held_but_nothing_hangs(start_method: str) -> None:
    # As with multiprocessing's locks, a killed holder cannot release: the
    # pool survives the crash, and a timed acquire gives up instead of hanging.
    lock = workcrew.Lock("orphaned")
    held: workcrew.Queue[str] = workcrew.Queue()
    with workcrew.Pool(1, start_method=start_method) as pool:
        dying = pool.apply_async(sh.hold_then_die, (lock, held))
        assert held.get(timeout=TIMEOUT) == "held"
        with pytest.raises(workcrew.WorkerCrashed):
            dying.get(TIMEOUT)
        assert lock.acquire(timeout=0.05) is False
        assert pool.apply(sh.try_acquire, (workcrew.Lock(), TIMEOUT)) is True


# -- zero-copy arrays ------------------------------------------------------------------


def _shm_names() -> set[str]:
    return set(os.listdir("/dev/shm"))


def test_large_arrays_travel_through_shared_memory(start_method: str) -> None:
    big = np.arange(1 << 19, dtype=np.float64)  # 4 MiB
    small = np.arange(100, dtype=np.float64)
    with workcrew.Pool(2, start_method=start_method) as pool:
        assert pool.apply(sh.array_facts, (big,)) == (float(big.sum()), True)
        assert pool.apply(sh.array_facts, (small,)) == (float(small.sum()), False)
        results = pool.map(sh.array_facts, [big + i for i in range(6)], chunksize=2)
        assert results == [(float((big + i).sum()), True) for i in range(6)]


def test_arrays_are_copies_both_ways(start_method: str) -> None:
    original = np.ones(1 << 18)
    with workcrew.Pool(1, start_method=start_method) as pool:
        doubled = pool.apply(sh.scale_in_place, (original,))
    assert (original == 1).all()  # the task changed its own copy
    assert (doubled == 2).all() and doubled.flags.writeable
    doubled += 1  # the caller owns the returned array
    assert (doubled == 3).all()


def test_nothing_leaks_after_many_transfers_and_a_crash(start_method: str) -> None:
    arrays = [np.full(1 << 17, i, dtype=np.float64) for i in range(20)]
    # A first pool starts what multiprocessing keeps for the whole program
    # (its resource tracker, under spawn); everything after must be given back.
    with workcrew.Pool(1, start_method=start_method) as pool, pytest.raises(workcrew.WorkerCrashed):
        pool.apply(sh.crash_with, (arrays[0],))
    gc.collect()  # earlier tests' garbage must not close descriptors during this one
    shm_before = _shm_names()
    fds_before = _fd_targets()
    with workcrew.Pool(1, start_method=start_method) as pool:
        baseline = pool.apply(sh.open_fds)
        for array in arrays:  # large results: the worker keeps each segment until released
            assert (pool.apply(sh.scale_in_place, (array,)) == 2 * array).all()
        assert pool.apply(sh.open_fds) <= baseline + 1
        with pytest.raises(workcrew.WorkerCrashed):
            pool.apply(sh.crash_with, (arrays[0],))
        assert pool.apply(sh.array_facts, (arrays[3],)) == (float(arrays[3].sum()), True)
    assert _shm_names() == shm_before
    assert _fd_targets() - fds_before == set()  # no segment or pipe left open here


def _fd_targets() -> set[str]:
    targets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    return targets


def test_large_results_survive_a_crash_of_the_next_task(start_method: str) -> None:
    # Each result waits in the worker's shared memory until the caller maps it:
    # a crash in the next task (already sent: prefetch) must not lose it.
    with workcrew.Pool(1, start_method=start_method) as pool:
        pending = [pool.apply_async(sh.big_or_crash, (i,)) for i in range(10)]
        for i, result in enumerate(pending):
            if i in (3, 7):
                with pytest.raises(workcrew.WorkerCrashed):
                    result.get(TIMEOUT)
            else:
                assert (result.get(TIMEOUT) == i).all()


def test_a_forked_worker_does_not_inherit_a_held_lock() -> None:
    value = workcrew.Value("i", 0)
    # Held by this thread while the worker is forked.
    with value.get_lock(), workcrew.Pool(1, start_method="fork") as pool:
        assert pool.apply(sh.try_lock_of, (value,)) is False
    with workcrew.Pool(1, start_method="fork") as pool:
        assert pool.apply(sh.try_lock_of, (value,)) is True


def test_a_value_and_its_lock_stay_one_object_each(start_method: str) -> None:
    value = workcrew.Value("i", 0)
    assert pickle.loads(pickle.dumps(value.get_lock())) is value.get_lock()
    with workcrew.Pool(1, start_method=start_method) as pool:
        assert pool.apply(sh.same_lock, (value, value.get_lock())) is True


def test_recycled_workers_give_back_their_holds(start_method: str) -> None:
    from workcrew._sharing import _locks

    value = workcrew.Value("i", 0)
    refs = value._table.words[value._slot * _locks.SLOT_WORDS + _locks.REFS]
    with workcrew.Pool(1, start_method=start_method, maxtasksperchild=1) as pool:
        assert pool.starmap(sh.add_many, [(value, 1)] * 3) == [1, 2, 3]
    assert value._table.words[value._slot * _locks.SLOT_WORDS + _locks.REFS] == refs
