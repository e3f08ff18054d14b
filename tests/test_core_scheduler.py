"""The dispatch policy alone (``_core/_scheduler.py``): chunk sizes, prefetch, re-queue order.

Complements tests/test_scheduler.py (which covers the cost of many pending
calls and their round robin).  Real jobs, no master, no threads.
"""

from __future__ import annotations

import math
import random
from typing import Any

from workcrew._core._execute import MAP
from workcrew._core._jobs import Job, ListJob, StreamJob
from workcrew._core._options import TaskPolicy
from workcrew._core._scheduler import (
    CHUNK_BYTES,
    CHUNK_SECONDS_PER_WORKER,
    GROWTH,
    MAX_ESTIMATES,
    PREFETCH_MAX_SECONDS,
    PREFETCH_TAIL,
    SMOOTHING,
    STEADY_STRETCH,
    STEADY_TARGET_SECONDS,
    TAPER,
    TARGET_CHUNK_SECONDS,
    Scheduler,
)

TIMED = TaskPolicy(timeout=10.0)


def listed(
    n: int, key: Any = "f", chunksize: int | None = None, policy: TaskPolicy | None = None
) -> ListJob:
    job = ListJob(abs, MAP, list(range(n)), key, chunksize)
    if policy is not None:
        job.policy = policy
    return job


def streamed(n: int, key: Any = "f") -> StreamJob:
    job = StreamJob(abs, MAP, range(n), key, None, True, 1, lambda _: None)
    job.feed()  # the reader's thread pulls the input; here, the test's
    return job


def sizes(scheduler: Scheduler, job: Job, steps: int, per_item: float) -> list[int]:
    """Sizes of the next ``steps`` chunks, each reported back as taking ``per_item`` per item."""
    out = []
    for _ in range(steps):
        chunk = scheduler.next_chunk(None, prefetch=False)
        assert chunk is not None
        out.append(len(chunk[2]))
        scheduler.record(job.key, len(chunk[2]), per_item * len(chunk[2]))
    return out


def make_steady(scheduler: Scheduler, key: Any, per_item: float) -> int:
    """Report chunks of ``key`` whose items take ``per_item`` each until it is steady.

    Returns how many chunks that took (bounded: a function that never turns
    steady fails the test instead of looping).
    """
    for count in range(1, 101):
        scheduler.record(key, 1, per_item)
        if scheduler.steady(key):
            return count
    raise AssertionError(f"{key!r} did not become steady after 100 identical chunks")


# -- chunk sizing -------------------------------------------------------------------------


def test_chunks_start_at_one_item_and_grow_at_most_growth_fold_to_the_target() -> None:
    # The first measurement may be an unusually fast item: growth is capped per step.
    scheduler = Scheduler(workers=1)
    job = listed(10**5)
    scheduler.add(job)
    ideal = round(TARGET_CHUNK_SECONDS / 1e-6)  # 5000 items of 1 µs
    assert sizes(scheduler, job, 7, 1e-6) == [1, 8, 64, 512, 4096, ideal, ideal]
    assert GROWTH == 8


def test_a_new_job_of_a_known_function_starts_at_its_ideal_size() -> None:
    scheduler = Scheduler(workers=1)
    scheduler.record("f", 10, 10 * 1e-4)  # learned from an earlier job: 100 µs per item
    job = listed(10**5)
    scheduler.add(job)
    assert sizes(scheduler, job, 1, 1e-4) == [round(TARGET_CHUNK_SECONDS / 1e-4)]
    assert job.chunk_hint == 50  # a StreamJob sizes its read-ahead window from this


def test_many_workers_aim_at_longer_chunks() -> None:
    # Each finished chunk costs the master a round trip (under the GIL that
    # thread and async workers share): hundreds of workers get longer chunks.
    assert Scheduler(workers=1).target == TARGET_CHUNK_SECONDS
    assert math.isclose(Scheduler(workers=200).target, 200 * CHUNK_SECONDS_PER_WORKER)
    assert Scheduler(workers=200).target > TARGET_CHUNK_SECONDS


def test_a_fixed_chunksize_wins_and_a_timeout_means_one_item_per_chunk() -> None:
    scheduler = Scheduler(workers=1)
    scheduler.record("f", 1, 1e-6)
    fixed, timed = listed(100, chunksize=7), listed(100, chunksize=7, policy=TIMED)
    assert scheduler.chunk_size(fixed) == 7
    assert scheduler.chunk_size(timed) == 1  # its timer starts when it is sent


def test_the_last_chunks_of_a_finite_job_shrink_so_workers_finish_together() -> None:
    workers, per_item = 4, 1e-4  # ideal 50 items; taper floor 1 ms = 10 items
    scheduler = Scheduler(workers)
    scheduler.record("f", 1, per_item)
    job = listed(200)
    scheduler.add(job)
    got = []
    while (chunk := scheduler.next_chunk(None, prefetch=False)) is not None:
        remaining = 200 - chunk[1]
        tapered = max(math.ceil(remaining / (TAPER * workers)), 10)
        assert len(chunk[2]) == min(50, tapered, remaining)
        got.append(len(chunk[2]))
    assert got[0] == 25 and got[-1] <= 10 and sum(got) == 200
    assert got == sorted(got, reverse=True)


def drain(scheduler: Scheduler, job: Job) -> list[int]:
    """Sizes of every chunk of ``job``, each queued behind one of the same job if allowed."""
    got = []
    while (chunk := scheduler.next_chunk(None, prefetch=True, behind=job)) is not None:
        got.append(len(chunk[2]))
    return got


def test_a_steady_job_on_many_workers_ends_in_even_shares_per_round() -> None:
    # 20 workers, 0.9 ms items: the steady aim (50 ms) makes 55 items per
    # chunk.  Each round of 20 chunks takes an even share of what was left
    # when it began: 2,000 left: 100 each, capped at 55 (1,100 taken); 900
    # left: 45 each, the last round (STEADY_STRETCH).  Recomputed per chunk
    # instead, the first chunks of a round would be larger than its last ones.
    workers = 20
    scheduler = Scheduler(workers)
    assert scheduler.target > TARGET_CHUNK_SECONDS  # many workers
    make_steady(scheduler, "f", 0.9e-3)
    assert int(STEADY_TARGET_SECONDS / 0.9e-3) == 55
    job = listed(2000)
    scheduler.add(job)
    assert drain(scheduler, job) == [55] * 20 + [45] * 20


def test_a_steady_job_s_last_round_may_stretch_its_shares_past_the_aim() -> None:
    # 1,300 left: 65 each, within STEADY_STRETCH of the aim's 55: one round of
    # 65s ends the job, instead of 55s and then a round of 10s.  100 each
    # (2,000 left, above) is past it: that round keeps to the aim.
    workers = 20
    scheduler = Scheduler(workers)
    make_steady(scheduler, "f", 0.9e-3)
    assert 55 < 65 <= 55 * STEADY_STRETCH < 100
    job = listed(1300)
    scheduler.add(job)
    assert drain(scheduler, job) == [65] * 20
    short = listed(250)  # 13 each, under the aim: the even share alone
    scheduler.add(short)
    assert drain(scheduler, short) == [13] * 19 + [3]


def test_a_steady_finite_job_aims_at_longer_chunks_than_a_lazy_or_unsteady_one() -> None:
    # Two workers on two cores: each round trip takes a core from a worker for
    # a while, so a map of steady 10 ms items goes out 5 to a chunk, not 1.
    # A lazy job keeps the target (its end is unknown, its read-ahead window
    # grows with its chunks), and so does a function not known to be steady.
    scheduler = Scheduler(workers=2)
    make_steady(scheduler, "steady", 0.010)
    scheduler.record("new", 1, 0.010)
    assert scheduler.chunk_size(listed(400, key="steady")) == 5
    assert scheduler.chunk_size(streamed(400, key="steady")) == 1
    assert scheduler.chunk_size(listed(400, key="new")) == 1
    assert STEADY_TARGET_SECONDS == 0.05 and TARGET_CHUNK_SECONDS < 0.010


def test_200_io_workers_get_one_even_share_each() -> None:
    # The IO benchmark's shape: 2,000 steady waits of a bit over 10 ms on 200
    # workers.  The aim (100 ms) makes 9 items; the even share of 10 is within
    # STEADY_STRETCH of it and ends the job: one chunk per worker, and none
    # ends with more items than another.  (9 each and then 1 each would cost
    # the master 200 more dispatches while the 200 threads are starting.)
    workers = 200
    scheduler = Scheduler(workers)
    make_steady(scheduler, "f", 0.0102)
    job = listed(2000)
    scheduler.add(job)
    assert drain(scheduler, job) == [10] * 200
    wide = listed(4000)  # twice as long: 9s first (20 each is no last round)
    scheduler.add(wide)
    assert drain(scheduler, wide)[:200] == [9] * 200


def test_a_steady_job_on_few_workers_still_halves_to_single_items() -> None:
    # Two workers: round trips are cheap, and the halving also absorbs workers
    # that run at different speeds (a core shared with another program).
    workers = 2
    scheduler = Scheduler(workers)
    make_steady(scheduler, "f", 0.9e-3)  # steady aim 55 items, floor 1
    job = listed(400)
    scheduler.add(job)
    got = []
    while (chunk := scheduler.next_chunk(None, prefetch=False)) is not None:
        remaining = 400 - chunk[1]
        assert len(chunk[2]) == min(55, math.ceil(remaining / (TAPER * workers)))
        got.append(len(chunk[2]))
    assert got[-4:] == [1, 1, 1, 1]


def test_an_unsteady_job_on_many_workers_keeps_halving_and_its_tail_waits() -> None:
    workers = 200
    scheduler = Scheduler(workers)
    scheduler.record("f", 1, 0.010)  # one sample: not known to be steady
    assert not scheduler.steady("f")
    job = listed(2000)
    scheduler.add(job)
    got = drain(scheduler, job)  # queued behind busy workers: stops at the tail
    assert got[0] == math.ceil(2000 / (TAPER * workers))
    assert sum(got) == 2000 - PREFETCH_TAIL * workers
    assert scheduler.next_chunk(None, prefetch=False) is not None  # for a free worker


def test_large_pickled_items_make_small_chunks() -> None:
    scheduler = Scheduler(workers=1)
    scheduler.record("f", 1, 1e-6)
    scheduler.record_size("f", 2, 2 << 20)  # 1 MiB per item
    assert scheduler.chunk_size(listed(10**5)) == CHUNK_BYTES // (1 << 20)


def test_hybrid_workers_never_get_fewer_items_than_they_run_at_once() -> None:
    scheduler = Scheduler(workers=1, min_chunk=4)
    assert scheduler.chunk_size(listed(100)) == 4  # no estimate yet: still 4


def test_estimates_are_a_moving_average() -> None:
    scheduler = Scheduler(workers=1)
    scheduler.record("f", 1, 1e-3)
    scheduler.record("f", 2, 2 * 3e-3)  # per item: 1 ms, then 3 ms
    per_item = 1e-3 + SMOOTHING * (3e-3 - 1e-3)
    assert scheduler.chunk_size(listed(10**5)) == int(TARGET_CHUNK_SECONDS / per_item)


def test_a_function_turns_steady_after_consistent_chunks_and_an_outlier_undoes_it() -> None:
    scheduler = Scheduler(workers=2)
    assert not scheduler.steady("f")  # unknown
    scheduler.record("f", 1, 1e-3)
    assert not scheduler.steady("f")  # one sample says nothing about the spread
    count = make_steady(scheduler, "f", 1e-3)
    assert 10 <= count <= 40  # a run of a few similar chunks is not enough
    scheduler.record("f", 1, 20e-3)  # one item 20 times the usual
    assert not scheduler.steady("f")
    # Small jitter (a few %) keeps a steady function steady.
    make_steady(scheduler, "f", 1e-3)
    for i in range(50):
        scheduler.record("f", 4, 4 * 1e-3 * (1.03 if i % 2 else 0.97))
        assert scheduler.steady("f")


def test_heavy_tailed_durations_never_count_as_steady() -> None:
    # Pareto(1.5), as in the benchmarks' skewed workload: many items near the
    # minimum, a few very long ones.  Their tail must stay handed out one
    # chunk at a time, so they must never look steady.
    rng = random.Random(12345)
    scheduler = Scheduler(workers=2)
    for _ in range(2000):
        scheduler.record("f", 1, 1e-3 * rng.paretovariate(1.5))
        assert not scheduler.steady("f")


def test_only_the_most_recent_functions_keep_an_estimate() -> None:
    scheduler = Scheduler(workers=1)
    for key in range(MAX_ESTIMATES + 1):
        scheduler.record(key, 1, 1e-4)
    # Both jobs stay referenced: the scheduler keys a job's last size by id(job),
    # which a job created after another was freed may reuse.
    forgotten, remembered = listed(10**5, key=0), listed(10**5, key=1)
    assert scheduler.chunk_size(forgotten) == 1  # forgotten: starts over
    assert scheduler.chunk_size(remembered) == 50


# -- prefetch (a second chunk queued behind a busy worker) ---------------------------------------


def test_prefetch_only_for_short_known_untimed_items_far_from_the_end() -> None:
    workers = 2
    scheduler = Scheduler(workers)
    assert not scheduler.can_prefetch(listed(100))  # duration unknown
    scheduler.record("f", 1, 1e-4)
    scheduler.record("slow", 1, PREFETCH_MAX_SECONDS * 2)
    assert scheduler.can_prefetch(listed(100))
    assert scheduler.can_prefetch(streamed(100))  # lazy: its end is unknown
    assert not scheduler.can_prefetch(listed(100, key="slow"))
    assert not scheduler.can_prefetch(listed(100, policy=TIMED))
    assert not scheduler.can_prefetch(listed(PREFETCH_TAIL * workers))  # the tail
    assert scheduler.can_prefetch(listed(PREFETCH_TAIL * workers + 1))


def test_the_tail_of_a_steady_job_is_prefetched_too() -> None:
    # Busy workers of a steady function end their (tapered, short) chunks when
    # expected: queuing the last items behind them saves each a round trip.
    workers = 4
    scheduler = Scheduler(workers)
    make_steady(scheduler, "steady", 1e-3)
    scheduler.record("new", 1, 1e-3)
    steady, new = listed(1, key="steady"), listed(1, key="new")
    assert scheduler.can_prefetch(steady, behind=steady)
    assert not scheduler.can_prefetch(new, behind=new)  # not known to be steady
    # Behind another job's chunk (whose length the tail's taper does not bound),
    # or behind an unknown one, the last items still wait for a free worker.
    assert not scheduler.can_prefetch(steady, behind=listed(100, key="steady"))
    assert not scheduler.can_prefetch(steady)
    timed = listed(1, key="steady", policy=TIMED)
    assert not scheduler.can_prefetch(timed, behind=timed)


def test_the_tail_of_items_longer_than_the_target_waits_for_a_free_worker() -> None:
    # Two CPU workers, steady 10 ms items (longer than the 5 ms target): a
    # queued last item would wait a whole item behind one worker while the
    # other, half-way through its own, frees up first.
    scheduler = Scheduler(workers=2)
    make_steady(scheduler, "f", 0.010)
    assert scheduler.target < 0.010
    job = listed(2)
    assert not scheduler.can_prefetch(job, behind=job)
    assert scheduler.can_prefetch(listed(3), behind=job)  # not the tail yet


def test_a_prefetch_skips_jobs_that_cannot_be_prefetched() -> None:
    scheduler = Scheduler(workers=1)
    scheduler.record("slow", 1, 1.0)
    scheduler.record("fast", 1, 1e-4)
    slow, fast = listed(100, key="slow"), listed(100, key="fast")
    scheduler.add(slow)
    scheduler.add(fast)
    chunk = scheduler.next_chunk(None, prefetch=True)
    assert chunk is not None and chunk[0] is fast
    chunk = scheduler.next_chunk(None, prefetch=False)  # an idle worker takes anything
    assert chunk is not None and chunk[0] is slow


# -- re-queued chunks ---------------------------------------------------------------------------


def test_requeued_chunks_go_first_in_the_order_given_back() -> None:
    scheduler = Scheduler(workers=1)
    job = listed(10, chunksize=2)
    scheduler.add(job)
    taken = [scheduler.next_chunk(None, prefetch=False) for _ in range(3)]
    assert [c[1] for c in taken if c] == [0, 2, 4]
    scheduler.requeue(job, 2, [2, 3])
    scheduler.requeue(job, 4, [4, 5])
    scheduler.requeue(job, 0, [0])
    got = [scheduler.next_chunk(None, prefetch=False) for _ in range(4)]
    assert [(c[1], c[2]) for c in got if c] == [(2, [2, 3]), (4, [4, 5]), (0, [0]), (6, [6, 7])]


def test_a_requeued_chunk_over_a_workers_quota_is_split_and_its_rest_stays_first() -> None:
    scheduler = Scheduler(workers=1)
    job = listed(10)
    scheduler.add(job)
    scheduler.requeue(job, 3, [3, 4, 5])
    assert scheduler.next_chunk(2, prefetch=False) == (job, 3, [3, 4])
    assert scheduler.next_chunk(None, prefetch=False) == (job, 5, [5])


def test_a_requeued_timed_chunk_waits_for_a_ready_worker() -> None:
    scheduler = Scheduler(workers=1)
    timed, other = listed(1, key="t", policy=TIMED), listed(5, key="o")
    scheduler.add(other)
    scheduler.requeue(timed, 0, [0])
    chunk = scheduler.next_chunk(None, prefetch=False, timed_ok=False)
    assert chunk is not None and chunk[0] is other  # the starting worker gets other work
    assert scheduler.next_chunk(None, prefetch=False, timed_ok=True) == (timed, 0, [0])


def test_dropping_requeued_chunks_returns_their_jobs_to_settle() -> None:
    scheduler = Scheduler(workers=1)
    job = listed(2)
    scheduler.add(job)
    while scheduler.next_chunk(None, prefetch=False) is not None:
        pass
    assert scheduler.idle()
    scheduler.requeue(job, 1, [1])
    assert not scheduler.idle() and scheduler.jobs == [job]
    assert scheduler.clear_requeued() == [job]
    assert scheduler.idle() and scheduler.jobs == []
