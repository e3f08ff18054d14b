"""The dispatch policy alone: no workers, no threads (``_core/_scheduler.py``)."""

from __future__ import annotations

from typing import Any

from workcrew._core._jobs import Job
from workcrew._core._scheduler import PREFETCH_LOOKS, Scheduler


class Call(Job):
    """A single call, as submit() makes; counts how often the scheduler looks at it."""

    def __init__(self, looks: list[int]) -> None:
        self.key, self.remaining, self._item = "f", 1, "x"
        self._looks = looks

    def take(self, n: int) -> tuple[int, list[Any]] | None:
        self._looks[0] += 1
        item, self._item = self._item, None
        self.remaining = 0
        return None if item is None else (0, [item])

    def exhausted(self) -> bool:
        self._looks[0] += 1
        return self._item is None


def test_pending_single_calls_cost_constant_work_per_dispatch() -> None:
    # 10,000 submits waiting: every dispatch step once scanned all of them (quadratic)
    looks = [0]
    scheduler = Scheduler(workers=2)
    for _ in range(10_000):
        scheduler.add(Call(looks))
    scheduler.record("f", 1, 1e-6)  # learned: tiny tasks, prefetch would be allowed by size
    for _ in range(100):
        looks[0] = 0
        assert not scheduler.idle()
        assert scheduler.next_chunk(None, prefetch=True) is None  # single calls never prefetch
        chunk = scheduler.next_chunk(None, prefetch=False)
        assert chunk is not None and chunk[2] == ["x"]
        assert looks[0] <= 2 * PREFETCH_LOOKS + 4, looks[0]


def test_every_call_is_handed_out_once_and_then_the_scheduler_is_idle() -> None:
    looks = [0]
    scheduler = Scheduler(workers=2)
    jobs = [Call(looks) for _ in range(50)]
    for job in jobs:
        scheduler.add(job)
    given = []
    while (chunk := scheduler.next_chunk(None, prefetch=False)) is not None:
        given.append(chunk[0])
    assert given == jobs  # round robin: in submission order, each once
    assert scheduler.idle()
    assert scheduler.jobs == []
