"""The master's invariants (docs/design.md), checked without a process or a worker thread.

A real ``Master`` runs over the in-memory ``FakeBackend`` (tests/fake_backend.py):
the test decides when workers are ready, how each chunk ends and when a worker
dies, and asserts what the master decided (recorded chunks, delivered outcomes,
state).  Every wait is bounded by ``helpers.TIMEOUT``; the whole file runs in
milliseconds.

How the tests were checked to be honest, without touching src/: a scratch
copy of the package (first on PYTHONPATH) was broken one invariant at a time,
39 mutants of ``_master.py``, ``_scheduler.py`` and ``_jobs.py`` (a dead
worker's head re-run whole, an unloadable chunk failed whole, a chunk queued
behind a timed one, ``Attempts.pending`` ignored by close, ...).  Each made a
test here or in test_core_scheduler.py fail, except one that cannot change
behaviour: reversing the re-queue order of a dead worker's chunks that never
started (a worker holds at most one: one running, one prefetched).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fake_backend import CRASH, FakePool, FakeWorker, delivered
from helpers import TIMEOUT
from workcrew._core._exceptions import (
    BrokenPoolError,
    SerializationError,
    TaskCancelled,
    TaskTimeout,
    WorkerCrashed,
    serialization_error,
)
from workcrew._core._jobs import StreamJob
from workcrew._core._master import State
from workcrew._core._options import TaskPolicy
from workcrew._core._startup import MAX_STARTUP_FAILURES

Make = Callable[..., FakePool]


@pytest.fixture
def fake() -> Iterator[Make]:
    """Makes FakePools; shuts each down (master thread joined) when the test ends."""
    pools: list[FakePool] = []

    def make(workers: int = 1, **options: Any) -> FakePool:
        pool = FakePool(workers, **options)
        pools.append(pool)
        return pool

    yield make
    errors = []
    for pool in pools:  # every pool, even if one fails: no thread may outlive the test
        try:
            pool.shutdown()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others
            errors.append(exc)
    if errors:
        raise errors[0]


def warm_up(pool: FakePool) -> FakeWorker:
    """Start a ready worker and teach the scheduler that ``task`` is fast (prefetch allowed)."""
    pool.call(0)
    worker = pool.worker()
    pool.ready(worker)
    pool.answer(pool.chunk(), duration=1e-4)
    return worker


def held(worker: FakeWorker) -> list[tuple[Any, ...]]:
    return [s.items for s in worker.held]


def sent_items(pool: FakePool, item: Any) -> list[tuple[Any, ...]]:
    """The chunks that carried ``item``, in the order sent."""
    return [s.items for s in pool.sends_of(item)]


def call_items(*args: Any) -> tuple[Any, ...]:
    """The items of the chunk of a single call: one (args, kwargs) pair."""
    return ((args, {}),)


def unloadable() -> SerializationError:
    return serialization_error("the worker could not unpickle the chunk", loading=True)


# -- a worker that dies (invariant 4) ----------------------------------------------------


def test_a_dead_worker_is_blamed_only_for_the_chunk_it_was_running(fake: Make) -> None:
    pool = fake(workers=1)
    first = warm_up(pool)
    job = pool.stream(range(6), chunksize=1)
    pool.feed(job)
    assert held(first) == [(0,), (1,)]  # running 0, 1 prefetched behind it
    pool.chunks()

    pool.exit(first, CRASH)
    crashed = delivered(job)
    # Checked: a copy of _salvage that settles every held chunk fails here (1 delivered).
    assert list(crashed) == [0]  # _salvage: only the head is settled
    assert isinstance(crashed[0], WorkerCrashed)
    assert (crashed[0].worker_id, crashed[0].exitcode) == (first.worker_id, CRASH)
    # The chunk that never started goes out first, untouched, to the replacement.
    resent = pool.chunk()
    assert resent.items == (1,)
    assert resent.worker is pool.worker() is not first

    pool.serve()
    outcomes = delivered(job)  # each index exactly once
    assert {i: v for i, v in outcomes.items() if i} == {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
    assert sent_items(pool, 0) == [(0,)]  # the culprit is not run again
    assert sent_items(pool, 1) == [(1,), (1,)]


def test_a_multi_item_head_chunk_is_retried_item_by_item(fake: Make) -> None:
    pool = fake(workers=1)
    first = warm_up(pool)
    job = pool.stream(range(8), chunksize=2)
    pool.feed(job)
    assert held(first) == [(0, 1), (2, 3)]
    before = len(pool.backend.log)

    pool.exit(first, CRASH)  # which of 0 and 1 killed it is unknown
    assert delivered(job) == {}  # nobody is blamed yet
    pool.serve(crash=lambda item: item == 1)  # 1 kills its worker again, alone this time

    outcomes = delivered(job)
    assert isinstance(outcomes.pop(1), WorkerCrashed)  # only the culprit fails
    assert outcomes == {i: i for i in (0, 2, 3, 4, 5, 6, 7)}
    # The untouched chunk first (it never started), then the suspects alone, in order.
    after = [s.items for s in pool.backend.log[before:]]
    assert after[:3] == [(2, 3), (0,), (1,)]
    assert sent_items(pool, 0) == [(0, 1), (0,)]
    assert sent_items(pool, 1) == [(0, 1), (1,)]  # failed alone: not run a third time
    assert sent_items(pool, 2) == [(2, 3), (2, 3)]


def test_a_worker_that_dies_before_ready_is_not_blamed_until_the_pool_breaks(
    fake: Make,
) -> None:
    pool = fake(workers=1)
    job = pool.call(7)
    for _ in range(MAX_STARTUP_FAILURES - 1):
        worker = pool.worker()
        assert pool.chunk().worker is worker  # sent before ready (not timed)
        pool.exit(worker, 1)  # died starting: the chunk never ran
        assert not job.future.done()
    last = pool.worker()
    assert pool.chunk().items == call_items(7)  # the same call, re-sent whole each time
    pool.exit(last, 1)
    assert isinstance(job.future.exception(0), BrokenPoolError)
    assert isinstance(pool.master.broken, BrokenPoolError)
    pool.master.thread.join(TIMEOUT)  # no worker left: the loop ended
    assert pool.state() is State.STOPPED


def test_no_chunk_goes_to_a_worker_whose_exit_is_seen_but_not_reported(fake: Make) -> None:
    pool = fake(workers=1)
    first = warm_up(pool)
    pool.run(lambda: setattr(first, "exited", True))  # gone; its last results still decoding
    job = pool.call(1)
    assert pool.chunks() == []  # _send_next checks handle.exited
    pool.exit(first, CRASH)
    assert pool.chunk().worker is pool.worker() is not first
    pool.serve()
    assert job.future.result(0) == call_items(1)[0]


# -- a chunk that fails as a whole (invariant 5) -----------------------------------------


def test_a_chunk_the_worker_could_not_unpickle_is_retried_item_by_item(fake: Make) -> None:
    pool = fake(workers=1)
    job = pool.stream(range(4), chunksize=4)
    pool.feed(job)
    worker = pool.worker()
    pool.ready(worker)
    pool.chunk_error(pool.chunk(), unloadable(), ran=False)
    assert delivered(job) == {}  # nothing ran: nothing fails as a whole
    while worker.held:  # item 2 is the one that cannot be unpickled
        head = worker.held[0]
        if head.items == (2,):
            pool.chunk_error(head, unloadable(), ran=False)
        else:
            pool.answer(head)
    outcomes = delivered(job)
    assert isinstance(outcomes.pop(2), SerializationError)
    assert outcomes == {0: 0, 1: 1, 3: 3}
    assert all(sent_items(pool, i) == [(0, 1, 2, 3), (i,)] for i in range(4))


def test_a_chunk_whose_results_were_lost_fails_and_never_runs_again(fake: Make) -> None:
    pool = fake(workers=1, retries=1)  # not even retries run it again (SerializationError)
    job = pool.stream(range(4), chunksize=4)
    pool.feed(job)
    error = unloadable()
    pool.chunk_error(pool.chunk(), error, ran=True)
    assert delivered(job) == dict.fromkeys(range(4), error)
    assert pool.chunks() == []
    assert not pool.backend.workers[0].held


def test_items_that_cannot_be_sent_fail_alone_and_the_rest_runs(fake: Make) -> None:
    pool = fake(workers=1)
    refused = unloadable()
    pool.backend.unsendable = lambda item: refused if item == 2 else None
    job = pool.stream(range(4), chunksize=4)
    pool.feed(job)
    sent = pool.chunk()
    assert sent.unsent == {2: refused}
    pool.answer(sent, [0, 1, None, 3])
    assert delivered(job) == {0: 0, 1: 1, 2: refused, 3: 3}
    lone = pool.map([2])  # no item could be sent: failed at once, nothing held
    assert lone.future.exception(0) is refused
    assert not pool.backend.workers[0].held


# -- timeouts (invariant 7) ----------------------------------------------------------------


def slow(x: Any = None) -> Any:
    """A second function (its own duration estimate) for the timed jobs."""
    raise AssertionError("the fake backend runs nothing")


def test_timed_chunks_go_to_idle_ready_workers_one_item_at_a_time(fake: Make) -> None:
    pool = fake(workers=2)
    timed = pool.map(list(range(6)), fn=slow, policy=TaskPolicy(timeout=60.0))
    first = pool.worker()
    assert pool.chunks() == []  # not ready: a timed chunk's send time must be its start time
    pool.ready(first)
    assert [(s.worker, s.items) for s in pool.chunks()] == [(first, (0,))]
    second = pool.worker()
    assert not second.held
    untimed = pool.stream(range(40), chunksize=1)  # fast: prefetched behind busy workers
    pool.answer(first.held[0], duration=1e-4)
    pool.feed(untimed)
    pool.serve()

    assert timed.future.result(0) == list(range(6))
    assert delivered(untimed) == {i: i for i in range(40)}
    log = pool.backend.log
    assert any(s.backlog for s in log)  # prefetching did happen (for the untimed job)
    for s in log:
        assert all(b.fn is not slow for b in s.backlog), "a chunk queued behind a timed one"
        if s.fn is slow:
            assert (len(s.items), s.backlog, s.ready) == (1, (), True)


def test_a_timed_out_thread_worker_is_retired_and_its_late_answer_dropped(
    fake: Make,
) -> None:
    pool = fake(workers=1)
    timed = pool.call(1, policy=TaskPolicy(timeout=0.01))
    first = pool.worker()
    pool.ready(first)
    late = pool.chunk()
    assert late.items == call_items(1)
    waiting = pool.call(2)  # a single call is never queued behind a busy worker
    assert isinstance(timed.future.exception(TIMEOUT), TaskTimeout)  # the timer fired
    pool.run(lambda: None)  # and the dispatch after it
    assert first.stop_requested  # a thread cannot be killed: it is retired
    replacement = pool.worker()
    assert pool.chunk().worker is replacement  # the waiting call does not wait for it
    pool.answer(late)  # the call returned at last: its answer is dropped
    assert isinstance(timed.future.exception(0), TaskTimeout)
    pool.exit(first, 0)
    pool.serve()
    assert waiting.future.result(0) == call_items(2)[0]


# -- retries (invariant 6) -------------------------------------------------------------------


def test_a_failed_item_is_retried_and_delivered_once(fake: Make) -> None:
    pool = fake(workers=1, retries=1)
    errors: dict[int, list[BaseException]] = {1: [], 2: []}

    def outcome(item: int) -> Any:
        if item == 1 and not errors[1]:  # fails once, then succeeds
            errors[1].append(ValueError("once"))
            return errors[1][-1]
        if item == 2:  # fails every time
            errors[2].append(ValueError(f"attempt {len(errors[2]) + 1}"))
            return errors[2][-1]
        return item

    job = pool.stream(range(4), chunksize=1)
    pool.feed(job)
    pool.serve(outcome)
    outcomes = delivered(job)  # each index once: the first failures were held back
    assert outcomes.pop(2) is errors[2][1]  # the last attempt's error ...
    assert errors[2][1].attempts == [errors[2][0]]  # ... carries the earlier ones
    assert outcomes == {0: 0, 1: 1, 3: 3}
    assert [len(pool.sends_of(i)) for i in range(4)] == [1, 2, 2, 1]


# -- lazy input (StreamJob) --------------------------------------------------------------------


class Source:
    """An input iterator that counts how far it was read, and by which threads."""

    def __init__(self, size: int) -> None:
        self.read = 0
        self.threads: set[str] = set()
        self._size = size

    def __iter__(self) -> Source:
        return self

    def __next__(self) -> int:
        if self.read >= self._size:
            raise StopIteration
        self.threads.add(threading.current_thread().name)
        self.read += 1
        return self.read - 1


def test_a_lazy_map_reads_no_more_than_its_window_ahead(fake: Make) -> None:
    pool = fake(workers=2)
    source = Source(10_000)
    job = pool.stream(source, chunksize=1)
    assert source.read == 0  # the master never reads the input
    window = job.window
    assert window == StreamJob.MIN_WINDOW
    pool.feed(job)
    assert source.read == window
    # every item read has its result, none consumed yet; at 2 tasks a second,
    # a second of work is less than the 64 items of MIN_WINDOW
    pool.serve(per_item=1.0)
    pool.feed(job)
    assert source.read == window  # results not consumed: no more input
    for _ in range(10):
        job.next_run(None)
    pool.feed(job)
    assert source.read == 10 + window  # consumed 10: read 10 more, no more
    assert source.threads == {threading.current_thread().name}  # only the reader reads


def read_while_the_head_runs(pool: FakePool, per_item: float, item_bytes: int) -> int:
    """Items a lazy map reads while its item 0 runs on (the reader waits for it).

    Its other items answer after ``per_item`` seconds each; ``item_bytes`` is
    what each "pickles" to (0: not pickled, as for thread workers).
    """
    pool.backend.item_bytes = item_bytes
    source = Source(100_000)
    job = pool.stream(source, chunksize=1)
    for _ in range(6):  # the reader wakes on each answer and reads on
        pool.feed(job)
        pool.serve(per_item=per_item, hold=lambda item: item == 0)
    return source.read


def test_a_lazy_map_reads_a_second_of_work_ahead_while_its_head_runs_long(fake: Make) -> None:
    # 10 ms tasks on 2 workers: 200 a second.  The other worker must go on past
    # the 64 items of MIN_WINDOW, up to a second of work (then memory is the limit).
    assert read_while_the_head_runs(fake(workers=2), per_item=0.010, item_bytes=100) == 200


def test_the_second_of_work_read_ahead_is_capped_in_items(fake: Make) -> None:
    read = read_while_the_head_runs(fake(workers=2), per_item=1e-5, item_bytes=100)
    assert read == StreamJob.MAX_RATE_WINDOW  # not 200,000 (a second of work)


def test_the_second_of_work_read_ahead_is_capped_in_bytes(fake: Make) -> None:
    # 1 MiB items: no more read ahead than four 4 MiB chunks a worker (32 items
    # here), whatever the rate; MIN_WINDOW still applies.
    read = read_while_the_head_runs(fake(workers=2), per_item=1e-4, item_bytes=1 << 20)
    assert read == StreamJob.MIN_WINDOW


def test_items_of_unknown_size_get_no_second_of_work_read_ahead(fake: Make) -> None:
    # Thread workers take the items as they are: workcrew does not know their
    # size, so a lazy map reads no more than its chunk term ahead.
    read = read_while_the_head_runs(fake(workers=2), per_item=0.010, item_bytes=0)
    assert read == StreamJob.MIN_WINDOW


# -- shutdown and state (invariant 8) --------------------------------------------------------


def record(pool: FakePool, states: list[State]) -> None:
    states.append(pool.state())


def assert_forward(states: list[State]) -> None:
    assert states == sorted(states, key=lambda s: s.value), states


def test_close_waits_for_in_flight_chunks_and_state_only_moves_forward(fake: Make) -> None:
    pool = fake(workers=1)
    states = [pool.state()]
    job = pool.map([0, 1], chunksize=1)
    worker = pool.worker()
    pool.close()
    record(pool, states)
    assert not worker.stop_requested
    pool.answer(pool.chunk())  # queued work accepted before close still runs
    record(pool, states)
    # Checked: without `not any(s.inflight ...)` in _advance_shutdown, a copy of the
    # master is STOPPING here with chunk 1 in flight.
    assert pool.chunk().items == (1,)
    assert not worker.stop_requested
    pool.answer(worker.held[0])
    record(pool, states)
    assert worker.stop_requested  # nothing in flight: workers are asked to exit ...
    assert pool.master.thread.is_alive()  # ... and the loop waits for them
    pool.exit(worker, 0)
    pool.master.thread.join(TIMEOUT)
    record(pool, states)
    assert job.future.result(0) == [0, 1]
    assert states == [State.RUNNING, State.CLOSING, State.CLOSING, State.STOPPING, State.STOPPED]
    assert_forward(states)


def test_while_closing_idle_workers_exit_once_nothing_is_left_to_hand_out(fake: Make) -> None:
    pool = fake(workers=2)
    job = pool.map([0, 1], chunksize=1)
    first, second = pool.chunk(), pool.chunk()
    assert first.worker is not second.worker
    pool.answer(first)  # still open: the idle worker waits for work
    assert not first.worker.stop_requested
    pool.close()
    pool.run(lambda: None)
    # Checked: before the idle worker was let go here, it waited for the last answer.
    assert first.worker.stop_requested and not second.worker.stop_requested
    assert pool.state() is State.CLOSING
    pool.answer(second)
    assert second.worker.stop_requested and pool.state() is State.STOPPING
    assert job.future.result(0) == [0, 1]


def test_while_closing_a_retry_after_the_idle_workers_left_starts_one_again(fake: Make) -> None:
    pool = fake(workers=2, retries=1)
    job = pool.map([0, 1], chunksize=1)
    first, second = pool.chunk(), pool.chunk()
    pool.close()
    pool.answer(first)
    assert first.worker.stop_requested  # nothing left to hand out
    pool.exit(first.worker, 0)
    pool.exit(second.worker, CRASH)  # the other item's worker dies: its retry needs a worker
    again = pool.chunk()
    assert again.items == (1,) and again.worker not in (first.worker, second.worker)
    pool.answer(again)
    assert job.future.result(0) == [0, 1]
    assert again.worker.stop_requested and pool.state() is State.STOPPING


def test_close_waits_for_a_retry_in_its_backoff(fake: Make) -> None:
    pool = fake(workers=1, retries=1, retry_backoff=0.01)
    job = pool.call(1)
    worker = pool.worker()
    pool.close()
    pool.answer(pool.chunk(), [None], {0: ValueError("first attempt")})
    # Nothing in flight or queued, but a retry waits (Attempts.pending): still closing.
    assert pool.state() is State.CLOSING
    assert not worker.stop_requested
    again = pool.chunk()  # the backoff passed
    assert again.items == call_items(1)
    pool.answer(again, ["second"])
    assert job.future.result(0) == "second"
    assert pool.state() is State.STOPPING


def test_terminate_fails_pending_work_and_waits_for_every_worker(fake: Make) -> None:
    pool = fake(workers=1)
    states = [pool.state()]
    running = pool.call(1)
    queued = pool.call(2)
    worker = pool.worker()
    assert pool.chunk().items == call_items(1)
    pool.terminate()
    record(pool, states)
    assert isinstance(queued.future.exception(0), TaskCancelled)
    assert isinstance(running.future.exception(0), TaskCancelled)
    assert worker.stop_requested and pool.master.thread.is_alive()
    pool.exit(worker, CRASH)  # while terminating, a death blames nobody
    pool.master.thread.join(TIMEOUT)
    record(pool, states)
    assert isinstance(running.future.exception(0), TaskCancelled)
    assert states == [State.RUNNING, State.TERMINATING, State.STOPPED]
    assert pool.chunks() == []  # the queued call was never sent


def test_the_fake_runs_nothing_by_itself(fake: Make) -> None:
    # The ground the other tests stand on: without events, chunks stay held.
    pool = fake(workers=2)
    job = pool.map(list(range(4)), chunksize=1)
    workers = [pool.worker(), pool.worker()]
    assert [held(w) for w in workers] == [[(0,)], [(1,)]]
    pool.run(lambda: None)
    assert not job.future.done()


# -- found by this test layer, fixed with it ---------------------------------------------------


def test_a_lazy_map_with_a_fixed_chunksize_reads_enough_to_feed_every_worker(fake: Make) -> None:
    pool = fake(workers=4)
    source = Source(100_000)
    job = pool.stream(source, chunksize=100)
    # Sized from the chunksize before any chunk is cut (it once used chunk_hint=1,
    # a window of 64 items: one chunk's worth of input for four workers).
    assert job.window == 4 * 4 * 100
    pool.feed(job)
    assert source.read == job.window
    busy = {sent.worker for sent in pool.chunks()}
    assert len(busy) == 4, f"{len(busy)} of 4 workers got work"


def test_a_requeued_chunk_of_a_job_that_already_failed_is_not_run(fake: Make) -> None:
    pool = fake(workers=1)
    first = warm_up(pool)
    job = pool.map(list(range(4)), chunksize=1)
    assert held(first) == [(0,), (1,)]  # running 0, 1 prefetched behind it
    pool.exit(first, CRASH)  # 0 killed it: the map fails at once (its future)
    assert isinstance(job.future.exception(TIMEOUT), WorkerCrashed)
    pool.run(lambda: None)  # the dispatch after the crash
    assert sent_items(pool, 1) == [(1,)]  # 1 was not sent again, for nobody
    assert sent_items(pool, 2) == sent_items(pool, 3) == []


def test_a_chunk_error_for_no_chunk_in_flight_is_ignored(fake: Make) -> None:
    pool = fake(workers=1)
    worker = warm_up(pool)
    stray = unloadable()
    # A report with nothing in flight (or for another seq) must not break the loop.
    pool.run(lambda: pool.master.on_chunk_error(worker, 12345, stray, ran=True))
    pool.run(lambda: pool.master.on_chunk_error(worker, -1, stray, ran=True))
    assert pool.master.broken is None
    job = pool.call(7)
    sent = pool.chunk()
    pool.run(lambda: pool.master.on_chunk_error(worker, sent.seq + 1, stray, ran=True))
    pool.answer(sent)
    assert job.future.result(TIMEOUT) == call_items(7)[0]  # the stray report took no place


def test_an_item_unsendable_on_its_retry_keeps_its_earlier_attempts(fake: Make) -> None:
    pool = fake(workers=1, retries=1, retry_backoff=0.01)
    job = pool.call(3)
    first = pool.chunk()
    refused = unloadable()
    pool.backend.unsendable = lambda item: refused  # from now on nothing can be sent
    failed = ValueError("first attempt")
    pool.answer(first, failures={0: failed})
    assert job.future.exception(TIMEOUT) is refused  # SerializationError: not retried
    assert refused.attempts == [failed]  # settled like any failure: history kept
