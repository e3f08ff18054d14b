"""pool.statistics() and the timeline (Chrome trace, HTML, text)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import workcrew
from helpers import TIMEOUT, async_square, fail_on, hard_exit, square


def test_statistics_count_tasks_per_worker(pool_kw: dict[str, Any]) -> None:
    with workcrew.Pool(2, **pool_kw) as pool:
        assert pool.map(square, range(100), chunksize=10) == [x * x for x in range(100)]
        running = pool.statistics()
        pool.close()
        pool.join()
    assert isinstance(running, workcrew.PoolStatistics)
    assert running.tasks_done == 100 and running.tasks_failed == 0
    assert sum(w.tasks for w in running.workers) == 100
    assert running.chunk_size == 10.0 and running.in_flight == 0 and running.queued == 0
    assert running.throughput > 0 and running.crashes == 0 and running.restarts == 0
    assert {w.exit for w in running.workers} == {"running"}
    for w in running.workers:
        assert w.busy_seconds >= 0 and w.idle_seconds >= 0
        assert (w.peak_memory is None) == (pool_kw["kind"] == "thread")
        assert (w.pid is None) == (pool_kw["kind"] == "thread")
    final = pool.statistics()  # after join: the last state, still readable
    assert {w.exit for w in final.workers} == {"stopped"}
    assert "100 tasks done (0 failed)" in str(final)


def test_statistics_count_failures_crashes_and_restarts(start_method: str) -> None:
    with workcrew.Pool(1, start_method=start_method) as pool:
        it = pool.imap(fail_on, range(6), chunksize=1)
        outcomes = []
        for _ in range(6):
            try:
                outcomes.append(next(it))
            except ValueError:
                outcomes.append("failed")
        with pytest.raises(workcrew.WorkerCrashed):
            pool.apply(hard_exit, (3,))
        assert pool.apply(square, (4,)) == 16  # on the replacement worker
        stats = pool.statistics()
    assert outcomes.count("failed") == 1
    assert stats.tasks_failed == 2  # the ValueError and the crash
    assert stats.crashes == 1 and stats.restarts == 1 and stats.workers_started == 2
    assert [w.exit for w in stats.workers] == ["crashed", "running"]


def test_timeline_has_one_span_per_task_and_writes_a_trace(
    pool_kw: dict[str, Any], tmp_path: Path
) -> None:
    with workcrew.Pool(2, timeline=True, **pool_kw) as pool:
        pool.map(square, range(30), chunksize=4)
        it = pool.imap(fail_on, range(5))
        for _ in range(5):
            try:
                next(it)
            except ValueError:
                pass
        timeline = pool.timeline()
    assert len(timeline) == 35
    assert sum(not span.ok for span in timeline.spans) == 1
    for span in timeline.spans:
        assert 0 <= span.start <= span.end
    trace = json.loads(timeline.write_trace(tmp_path / "t.json").read_text())
    tasks = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(tasks) == 35 and {e["name"] for e in tasks} == {"helpers.square", "helpers.fail_on"}
    names = [e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"]
    assert len(names) == len(timeline.workers()) and all("worker" in n for n in names)
    page = timeline.write_html(tmp_path / "t.html").read_text()
    assert page.count("<rect") == 35 and "1 failed" in page
    lines = timeline.text(40).splitlines()
    assert len(lines) == len(timeline.workers()) + 1
    assert all("#" in line or "x" in line for line in lines[:-1])  # every worker ran tasks


def test_timeline_of_coroutines_and_of_an_auto_pool() -> None:
    with workcrew.Pool(4, kind="async", timeline=True) as pool:
        assert pool.map(async_square, range(12)) == [x * x for x in range(12)]
        assert len(pool.timeline()) == 12
    with workcrew.Pool(4, kind="auto", timeline=True) as pool:
        pool.map(square, range(20))
        spans = pool.timeline().spans
        stats = pool.statistics()
    assert len(spans) == 20 and stats.kind == "auto" and stats.tasks_done == 20
    assert {w.kind for w in stats.workers} <= {"thread", "process"}


def test_executor_statistics_and_timeline() -> None:
    with workcrew.Executor(2, kind="thread", timeline=True) as ex:
        assert list(ex.map(square, range(10))) == [x * x for x in range(10)]
        assert ex.submit(square, 3).result(TIMEOUT) == 9
        assert len(ex.timeline()) == 11
        assert ex.statistics().tasks_done == 11


def test_timeline_must_be_asked_for() -> None:
    with workcrew.Pool(1, kind="thread") as pool:
        with pytest.raises(ValueError, match=r"timeline=True"):
            pool.timeline()
        with pytest.raises(TypeError, match="timeline must be True or False"):
            workcrew.Pool(1, kind="thread", timeline="yes")  # type: ignore[arg-type]
        assert pool.map(square, [3]) == [9]
