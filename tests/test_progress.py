"""progress= on every mapping call: plain lines off a terminal, a tqdm bar when asked."""

from __future__ import annotations

import re
from typing import Any

import pytest

import workcrew
from helpers import TIMEOUT, fail_on, identity, square


def _last_line(text: str) -> str:
    return [line for line in re.split(r"[\r\n]", text) if line.strip()][-1]


def test_map_shows_plain_lines_when_not_on_a_terminal(
    pool_kw: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with workcrew.Pool(2, **pool_kw) as pool:
        assert pool.map(square, range(300), progress=True) == [x * x for x in range(300)]
        err = capsys.readouterr().err
    assert "\r" not in err  # plain lines: no carriage returns in logs
    assert re.fullmatch(
        r"helpers\.square: 300/300 tasks \(100%\), 0 failed, [\d,.]+/s, elapsed \d:\d\d:\d\d",
        _last_line(err),
    )


def test_failures_are_counted(capsys: pytest.CaptureFixture[str]) -> None:
    with workcrew.Pool(2, kind="thread") as pool:
        got, failed = [], 0
        it = pool.imap(fail_on, range(10), progress="plain")  # item 3 raises
        for _ in range(10):
            try:
                got.append(next(it))
            except ValueError:
                failed += 1
        with pytest.raises(StopIteration):
            next(it)
    assert failed == 1 and len(got) == 9
    assert "10/10 tasks (100%), 1 failed" in _last_line(capsys.readouterr().err)


def test_bar_draws_count_and_failures(capsys: pytest.CaptureFixture[str]) -> None:
    with workcrew.Pool(2, kind="thread") as pool:
        results = pool.imap_unordered(fail_on, range(50), progress="bar")
        outcomes = []
        while True:
            try:
                outcomes.append(next(results))
            except ValueError:
                outcomes.append("failed")
            except StopIteration:
                break
    assert outcomes.count("failed") == 1
    last = _last_line(capsys.readouterr().err)
    assert "50/50" in last and "100%" in last and "failed=1" in last


def test_async_maps_executor_and_pipeline_show_progress(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with workcrew.Pool(2, kind="thread") as pool:
        assert pool.starmap_async(max, [(1, 2)] * 20, progress=True).get(TIMEOUT) == [2] * 20
    assert "20/20 tasks (100%)" in _last_line(capsys.readouterr().err)
    with workcrew.Executor(2, kind="thread") as ex:
        assert list(ex.map(identity, range(30), progress=True)) == list(range(30))
    assert "30/30 tasks (100%)" in _last_line(capsys.readouterr().err)
    pipe = workcrew.Pipeline(workcrew.Stage(square, workers=2), workcrew.Stage(identity))
    assert list(pipe.run(range(25), progress=True)) == [x * x for x in range(25)]
    last = _last_line(capsys.readouterr().err)
    assert last.startswith("Pipeline square -> identity: 25/25 tasks (100%)")


def test_unknown_total_and_auto_kind(capsys: pytest.CaptureFixture[str]) -> None:
    with workcrew.Pool(2, kind="auto") as pool:
        assert list(pool.imap(square, iter(range(40)), progress=True)) == [x * x for x in range(40)]
    last = _last_line(capsys.readouterr().err)
    assert last.startswith("helpers.square: 40 tasks, 0 failed")  # probes counted too


def test_bad_values_are_refused_and_nothing_is_shown_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with workcrew.Pool(1, kind="thread") as pool:
        with pytest.raises(ValueError, match="progress='yes' is invalid"):
            pool.map(square, [1], progress="yes")  # type: ignore[arg-type]
        assert pool.map(square, [2, 3]) == [4, 9]
    assert capsys.readouterr().err == ""
