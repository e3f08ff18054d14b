"""workcrew.Pipeline: results, ordering, errors, early exit, backpressure, statistics.

Every wait is on an Event with TIMEOUT (reached only on a deadlock); the autouse
``no_leaks`` fixture fails a test that leaves a thread or a process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from helpers import TIMEOUT
from pipeline_helpers import BAD, StageBoom, add_one, double_async, fail_at_bad, square
from workcrew import Pipeline, PipelineRun, Stage, StageStatistics

N = 300
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _mixed(start_method: str, **kw: Any) -> Pipeline:
    """thread (4) -> process (2) -> thread (2): the issue's fetch -> parse -> store shape."""
    return Pipeline(
        Stage(add_one, workers=4),
        Stage(square, kind="process", workers=2, start_method=start_method),
        Stage(add_one, workers=2),
        **kw,
    )


def _expected(n: int) -> list[int]:
    return [(x + 1) ** 2 + 1 for x in range(n)]


def _window(buffer: int, workers: int) -> int:
    """Items a stage holds at most (docs/pipelines.md, "Backpressure")."""
    return max(buffer, 2 * workers)


def _pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("workcrew-pipeline")]


# -- results ------------------------------------------------------------------------------


def test_mixed_kinds_ordered_give_results_in_source_order(start_method: str) -> None:
    assert list(_mixed(start_method).run(range(N))) == _expected(N)


def test_mixed_kinds_unordered_give_the_same_multiset(start_method: str) -> None:
    got = list(_mixed(start_method, ordered=False).run(range(N)))
    assert Counter(got) == Counter(_expected(N))


def test_unordered_passes_a_finished_item_before_an_earlier_slow_one() -> None:
    started, release = threading.Event(), threading.Event()

    def slow_first(x: int) -> int:
        if x == 0:
            started.set()
            assert release.wait(TIMEOUT)
        return x

    def source() -> Iterator[int]:
        yield 0
        assert started.wait(TIMEOUT)  # item 0 is running, alone in its batch
        yield 1

    with Pipeline(Stage(slow_first, workers=2), ordered=False).run(source()) as results:
        try:
            assert next(results) == 1
        finally:
            release.set()
        assert list(results) == [0]


def test_plain_functions_async_and_auto_stages() -> None:
    pipe = Pipeline(add_one, double_async, Stage(square, kind="auto", workers=2))
    assert pipe.stages[0] == Stage(add_one)
    assert list(pipe.run(range(50))) == [(2 * (x + 1)) ** 2 for x in range(50)]
    assert [(s.name, s.kind) for s in pipe.statistics()] == [
        ("add_one", "thread"),
        ("double_async", "async"),
        ("square", "auto"),
    ]


def test_empty_source_gives_no_results() -> None:
    pipe = Pipeline(add_one, add_one)
    assert list(pipe.run([])) == []
    assert [(s.items_in, s.items_out) for s in pipe.statistics()] == [(0, 0), (0, 0)]


# -- errors -------------------------------------------------------------------------------


def test_error_in_middle_stage_reraises_naming_the_stage(start_method: str) -> None:
    pipe = Pipeline(
        Stage(add_one, workers=4),
        Stage(fail_at_bad, kind="process", workers=2, start_method=start_method),
        Stage(add_one, workers=2),
    )
    got: list[int] = []
    results = pipe.run(range(N))
    with pytest.raises(StageBoom, match=f"bad item {BAD}") as info:
        got.extend(results)  # ordered: whatever arrives first is a prefix
    assert got == [x + 2 for x in range(len(got))]
    assert len(got) < BAD
    notes = getattr(info.value, "__notes__", [])
    assert "workcrew: raised in stage 2 of 3 ('fail_at_bad', kind='process')" in notes[-1]
    assert _pipeline_threads() == []  # everything ended before the error reached us
    assert next(results, "end") == "end"  # the error is raised once
    assert [s.failures for s in pipe.statistics()] == [0, 1, 0]


def test_error_in_source_iterator_reraises_and_stops(start_method: str) -> None:
    def source() -> Iterator[int]:
        yield from range(10)
        raise KeyError("source broke")

    pipe = Pipeline(Stage(square, kind="process", workers=2, start_method=start_method), add_one)
    got: list[int] = []
    with pytest.raises(KeyError, match="source broke") as info:
        got.extend(pipe.run(source()))
    assert got == [x * x + 1 for x in range(len(got))]
    notes = getattr(info.value, "__notes__", [])
    assert notes[-1] == "workcrew: raised by the source iterator of a Pipeline"
    assert _pipeline_threads() == []


def test_first_stage_error_stops_a_blocked_downstream() -> None:
    """A thread-stage error while later stages wait for input: no hang."""
    with pytest.raises(StageBoom):
        list(Pipeline(fail_at_bad, add_one, add_one).run(range(BAD, BAD + 1)))


def test_invalid_arguments_raise_at_construction() -> None:
    with pytest.raises(ValueError, match="at least one stage"):
        Pipeline()
    with pytest.raises(ValueError, match="buffer=0"):
        Pipeline(add_one, buffer=0)
    with pytest.raises(ValueError, match="kind='fiber'"):
        Stage(add_one, kind="fiber")
    with pytest.raises(ValueError, match="workers=0"):
        Stage(add_one, workers=0)
    with pytest.raises(TypeError, match="callable"):
        Stage(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Pipeline(add_one).run(42)  # type: ignore[arg-type]


def test_invalid_pool_option_raises_from_run_and_closes_earlier_pools() -> None:
    pipe = Pipeline(add_one, Stage(square, kind="process", start_method="nope"))
    with pytest.raises(ValueError, match="start_method='nope'"):
        pipe.run(range(3))


# -- early exit ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["break", "close", "with"])
def test_early_exit_stops_everything(start_method: str, how: str) -> None:
    def endless() -> Iterator[int]:
        n = 0
        while True:
            yield n
            n += 1

    pipe = _mixed(start_method)
    if how == "break":
        for i, _ in enumerate(pipe.run(endless())):
            if i == 5:
                break
    elif how == "close":
        results = pipe.run(endless())
        assert next(results) == _expected(1)[0]
        results.close()
        assert next(results, "end") == "end"
    else:
        with pipe.run(endless()) as results:
            assert next(results) == _expected(1)[0]
    assert _pipeline_threads() == []  # joined at once, not at garbage collection


# In a subprocess, signalled from outside once the stuck task runs: the caller has long been
# blocked by then.  (A thread of the test process signalling the main thread tends to do so
# in the instant between the main thread releasing the GIL and entering its wait, where
# CPython misses the signal until something else wakes the thread.)
CTRL_C_SCRIPT = """
import os, sys, threading, time
from workcrew import Pipeline, Stage

def stuck(x):
    os.write(1, f"running {os.getpid()}\\n".encode())
    time.sleep(3600)

if __name__ == "__main__":
    pipe = Pipeline(str, Stage(stuck, kind="process", workers=1, start_method=sys.argv[1]))
    try:
        for _ in pipe.run([1]):
            pass
    except KeyboardInterrupt:
        left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print("interrupted", left, flush=True)
        sys.exit(3)
"""


def test_ctrl_c_while_waiting_stops_a_stuck_process_stage(
    tmp_path: Path, start_method: str
) -> None:
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert proc.stdout is not None
    # The stuck task runs (its line reaches us tagged "[worker N]"): the caller waits in next().
    line = proc.stdout.readline().split("] ", 1)[-1]
    if not line.startswith("running"):
        proc.kill()
        pytest.fail(f"no task started: {line!r} {proc.communicate()}")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 3, err
    assert out.strip() == "interrupted []"  # no pipeline, pool or worker thread left
    worker = int(line.split()[1])
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE


# -- backpressure and memory --------------------------------------------------------------


def test_endless_source_keeps_in_flight_items_bounded() -> None:
    buffer, workers = 4, (3, 2, 1)
    bound = 1 + sum(buffer + _window(buffer, w) for w in workers) + buffer
    produced = 0

    def endless() -> Iterator[int]:
        nonlocal produced
        while True:
            produced += 1
            yield produced

    pipe = Pipeline(*(Stage(add_one, workers=w) for w in workers), buffer=buffer)
    consumed = 0
    for value in pipe.run(endless()):
        consumed += 1
        assert value == consumed + 3
        assert produced <= consumed + bound
        if consumed == 500:
            break
    assert produced <= consumed + bound


def test_slow_last_stage_stops_the_source_being_pulled() -> None:
    buffer, workers = 3, (2, 1, 1)
    # Blocked last stage: every window and queue full, one item in the source thread's hand.
    bound = 1 + sum(buffer + _window(buffer, w) for w in workers)
    gate, filled = threading.Event(), threading.Event()
    produced = 0
    overrun = []

    def source() -> Iterator[int]:
        nonlocal produced
        for item in range(10_000):
            produced += 1
            if produced > bound and not gate.is_set():
                overrun.append(produced)
            if produced == bound:
                filled.set()
            yield item

    def store(x: int) -> int:
        assert gate.wait(TIMEOUT)
        return x

    pipe = Pipeline(
        Stage(add_one, workers=workers[0]),
        Stage(add_one, workers=workers[1]),
        Stage(store, workers=workers[2]),
        buffer=buffer,
    )
    with pipe.run(source()) as results:
        try:
            assert filled.wait(TIMEOUT)  # the pipeline filled up to its bound ...
        finally:
            gate.set()  # ... and was not pulled past it while the last stage was stuck
        assert [next(results) for _ in range(20)] == [x + 2 for x in range(20)]
    assert overrun == []
    first, _, last = pipe.statistics()
    assert first.output_wait_seconds > 0  # it was blocked on its full output queue
    assert last.input_wait_seconds >= 0


# -- statistics ---------------------------------------------------------------------------


def test_statistics_count_exactly(start_method: str) -> None:
    pipe = _mixed(start_method)
    assert pipe.statistics() == ()
    run = pipe.run(range(N))
    assert isinstance(run, PipelineRun)
    assert len(list(run)) == N
    stats = pipe.statistics()
    assert stats == run.statistics()
    assert [(s.name, s.kind, s.workers) for s in stats] == [
        ("add_one", "thread", 4),
        ("square", "process", 2),
        ("add_one", "thread", 2),
    ]
    for s in stats:
        assert isinstance(s, StageStatistics)
        assert (s.items_in, s.items_out, s.failures) == (N, N, 0)
        assert s.wall_seconds > 0
        assert s.input_wait_seconds >= 0 and s.output_wait_seconds >= 0


def test_context_variables_reach_every_stage(start_method: str) -> None:
    import state_helpers

    token = state_helpers.request_id.set("req-42")
    try:
        pipe = Pipeline(
            Stage(state_helpers.read_request_id, kind="thread", workers=2),
            Stage(
                state_helpers.read_request_id, kind="process", workers=1, start_method=start_method
            ),
        )
        assert list(pipe.run(range(3))) == ["req-42"] * 3
    finally:
        state_helpers.request_id.reset(token)


def test_stages_have_per_worker_state(tmp_path: Path) -> None:
    import state_helpers

    log = str(tmp_path / "log")
    pipe = Pipeline(
        Stage(
            state_helpers.token,
            workers=2,
            initializer=state_helpers.open_state,
            initargs=(log,),
            worker_exit=state_helpers.close_state,
        )
    )
    tokens = list(pipe.run(range(20)))
    opened, closed = state_helpers.read_log(tmp_path / "log")
    assert len(tokens) == 20 and {t for _, t in tokens} <= set(opened)
    assert sorted(opened) == sorted(closed)  # every state built was torn down once


def test_leaving_early_does_not_wait_for_a_blocked_source() -> None:
    release = threading.Event()

    def source() -> Iterator[int]:
        yield 1
        release.wait(TIMEOUT)  # a socket or a queue with nothing more to give, for now
        yield 2

    try:
        with Pipeline(add_one).run(source()) as results:
            assert next(results) == 2
        # Leaving the block returned while the source still blocks in next().
        assert not release.is_set()
    finally:
        release.set()  # let the source thread end (the leak check waits for it)
