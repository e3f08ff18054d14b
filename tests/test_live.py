"""The dashboard's record of a pool (``_core/_live.py``), driven directly as the master does."""

from __future__ import annotations

import gc
import time
import weakref

from helpers import square
from workcrew import WorkerCrashed
from workcrew._core._execute import MAP
from workcrew._core._live import SLOWEST, LiveLog


class Loud:
    """An argument whose repr is user code: counted, and raising on demand."""

    calls = 0

    def __init__(self, raises: BaseException | None = None) -> None:
        self.raises = raises

    def __repr__(self) -> str:
        Loud.calls += 1
        if self.raises is not None:
            raise self.raises
        return "Loud()"


def test_a_worker_runs_the_head_of_what_it_was_sent() -> None:
    live = LiveLog(origin=0.0)
    live.ready(1)
    live.sent(1, 10, square, MAP, [3])
    live.sent(1, 11, square, MAP, [4, 5])  # prefetched behind it
    assert live.view()["running"][1]["task"] == "helpers.square(3)"
    live.answered(1, 10, 0.5, None, None)
    assert live.view()["running"][1]["task"] == "helpers.square(4) and 1 more (one chunk)"
    live.answered(1, 11, 0.1, None, None)
    view = live.view()
    assert view["running"] == {} and view["ready"] == {1}
    assert [s["function"] for s in view["timeline"]["spans"]] == [
        "helpers.square",
        "helpers.square x2",
    ]
    assert [s["seconds"] for s in view["slowest"]] == [0.5, 0.1]
    live.gone(1)
    assert live.view()["ready"] == set()


def test_failures_name_the_task_and_a_crash_is_marked() -> None:
    live = LiveLog(origin=0.0)
    live.sent(2, 1, square, MAP, [7, 8])
    live.answered(2, 1, 0.2, None, {1: ValueError("bad 8")})
    live.sent(2, 2, square, MAP, [9])
    live.failed(2, 2, {0: WorkerCrashed("it died")}, gone=True)
    failures = live.view()["failures"]
    assert [(f["task"], f["crash"]) for f in failures] == [
        ("helpers.square(8)", False),
        ("helpers.square(9)", True),
    ]
    assert failures[0]["error"] == "ValueError: bad 8"
    assert live.view()["running"] == {}


class LoudCall(Loud):
    """A callable whose name is its repr (user code)."""

    def __call__(self, x: object) -> object:
        return x


def test_user_code_runs_once_in_the_reader_and_cannot_break_it() -> None:
    Loud.calls = 0
    live = LiveLog(origin=0.0)
    fn = LoudCall(KeyboardInterrupt())
    live.sent(1, 1, fn, MAP, [Loud(KeyboardInterrupt())])
    live.sent(1, 2, square, MAP, [Loud()])
    assert Loud.calls == 0  # the master thread made no text
    live.answered(1, 1, 1.0, None, {0: RuntimeError("x")})
    first = live.view()
    assert first["failures"][0]["task"] == "<could not format: KeyboardInterrupt>"
    assert first["running"][1]["task"] == "helpers.square(Loud())"
    assert first["slowest"][0]["task"] == "<could not format: KeyboardInterrupt>"
    calls = Loud.calls
    second = live.view()
    # Each text is made once; only the span's function name is made once per view.
    assert Loud.calls == calls + 1
    assert second["failures"] == first["failures"]


def test_texts_made_drop_the_objects_and_the_slowest_list_is_bounded() -> None:
    live = LiveLog(origin=0.0)
    arg = Loud()
    ref = weakref.ref(arg)
    live.sent(1, 1, square, MAP, [arg])
    live.answered(1, 1, 100.0, None, {0: ValueError("slow and failed")})
    del arg
    live.view()
    gc.collect()
    assert ref() is None  # only its text is kept
    for seq in range(2, 2 + 3 * SLOWEST):
        live.sent(1, seq, square, MAP, [seq])
        live.answered(1, seq, float(seq), None, None)
    slowest = live.view()["slowest"]
    assert len(slowest) == SLOWEST and slowest[0]["seconds"] == 100.0
    assert [s["seconds"] for s in slowest[1:]] == sorted(
        (s["seconds"] for s in slowest[1:]), reverse=True
    )


def test_timed_chunks_give_a_span_per_task() -> None:
    origin = time.perf_counter()
    live = LiveLog(origin)
    live.sent(3, 1, square, MAP, [1, 2])
    live.answered(
        3,
        1,
        0.3,
        [(origin + 0.5, origin + 0.6), (origin + 0.6, origin + 0.9)],
        {1: ValueError("no")},
    )
    spans = live.view()["timeline"]["spans"]
    assert [(round(s["start"], 6), round(s["end"], 6), s["ok"]) for s in spans] == [
        (0.5, 0.6, True),
        (0.6, 0.9, False),
    ]
    slowest = live.view()["slowest"]
    assert [(s["task"], round(s["seconds"], 6)) for s in slowest] == [
        ("helpers.square(2)", 0.3),
        ("helpers.square(1)", 0.1),
    ]
