"""What process workers print and log reaches the caller: whole lines, tagged, records intact."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator

import pytest

import helpers
import workcrew
from helpers import TIMEOUT
from workcrew import Executor, Pool

#: The body of each printed line: long, so that a split or a mix would show.
FILLER = "abcdefghij" * 30
LINE = re.compile(r"\[worker (\d+)\] <(\d+):(\d+):" + FILLER + r":(\d+):(\d+)>")


def _worker_id() -> int:
    return int(os.environ.get("WORKCREW_WORKER", 0))  # set in process workers


def print_lines(task: int) -> int:
    for i in range(200):
        print(f"<{task}:{i}:{FILLER}:{task}:{i}>")
    return _worker_id()


def test_printed_lines_arrive_whole_tagged_before_the_result(
    start_method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Pool(3, start_method=start_method, worker_output="tagged") as pool:
        ran_on = pool.map(print_lines, range(6), chunksize=1)
        # no waiting: a task's lines reach sys.stdout before its result does
        lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 * 200
    seen: dict[int, list[int]] = {}
    for line in lines:
        match = LINE.fullmatch(line)
        assert match, f"a line was split or mixed: {line[:120]!r}"
        worker, task, i, task_again, i_again = map(int, match.groups())
        assert (task, i) == (task_again, i_again)
        assert worker == ran_on[task], f"line of task {task} tagged with worker {worker}"
        seen.setdefault(task, []).append(i)
    assert seen == {task: list(range(200)) for task in range(6)}  # each task's lines in order


def print_unfinished(text: str) -> None:
    print("done line")
    print(text, end="")


def test_an_unfinished_last_line_arrives_when_the_worker_exits(
    start_method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Executor(1, start_method=start_method, worker_output="tagged") as ex:
        ex.submit(print_unfinished, "no newline at the end").result(TIMEOUT)
        assert capsys.readouterr().out == "[worker 1] done line\n"  # held until its end comes
    assert capsys.readouterr().out == "[worker 1] no newline at the end\n"


def test_lines_of_consecutive_tasks_join_as_in_one_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Pool(1, start_method="fork", worker_output="tagged") as pool:
        pool.apply(print_unfinished, ("first ",))
        pool.apply(print_unfinished, ("second",))
    out = capsys.readouterr().out
    assert out == "[worker 1] done line\n[worker 1] first done line\n[worker 1] second\n"


def write_stderr(text: str) -> None:
    print(text, file=sys.stderr)
    sys.stderr.write("unfinished")


def test_stderr_lines_are_tagged_and_go_to_the_callers_stderr(
    start_method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Pool(1, start_method=start_method, worker_output="tagged") as pool:
        pool.apply(write_stderr, ("to stderr",))
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "[worker 1] to stderr\n[worker 1] unfinished\n"


def test_plain_output_is_untagged(capsys: pytest.CaptureFixture[str]) -> None:
    with Pool(1, start_method="fork", worker_output="plain") as pool:
        pool.apply(print_unfinished, ("end",))
        pool.apply(write_stderr, ("err",))
    out, err = capsys.readouterr()
    assert out == "done line\nend\n"
    assert err == "err\nunfinished\n"


def test_the_callers_current_stdout_receives_the_lines() -> None:
    redirected = io.StringIO()
    with (
        Pool(1, start_method="fork", worker_output="tagged") as pool,
        contextlib.redirect_stdout(redirected),
    ):
        pool.apply(print_unfinished, ("",))
    assert redirected.getvalue() == "[worker 1] done line\n"


def print_long(size: int) -> None:
    sys.stdout.write("x" * size)


def test_a_very_long_line_arrives_in_pieces(capsys: pytest.CaptureFixture[str]) -> None:
    limit = 1 << 20  # _output.LINE_LIMIT
    with Pool(1, start_method="fork", worker_output="plain") as pool:
        pool.apply(print_long, (2 * limit + 10,))
    out = capsys.readouterr().out
    assert out == f"{'x' * limit}\n{'x' * limit}\n{'x' * 10}\n"


def test_worker_output_is_checked() -> None:
    with pytest.raises(ValueError, match="worker_output='loud' is invalid"):
        Pool(1, worker_output="loud")


# -- logging --------------------------------------------------------------------------


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def handler() -> Iterator[ListHandler]:
    """Collects what reaches the caller's logger ``out``; ``out.app`` is at INFO."""
    collector = ListHandler()
    parent, app = logging.getLogger("out"), logging.getLogger("out.app")
    parent.addHandler(collector)
    app.setLevel(logging.INFO)
    try:
        yield collector
    finally:
        parent.removeHandler(collector)
        app.setLevel(logging.NOTSET)


def log_some(task: int) -> tuple[int, int]:
    app, other = logging.getLogger("out.app"), logging.getLogger("out.other")
    app.debug("not sent: below out.app's INFO")
    app.info("info %d from %s", task, "app")
    other.info("not sent: out.other follows the root's WARNING")
    other.warning("warning %d", task, extra={"lock": threading.Lock(), "n": task})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        app.exception("failed %d", task)
    return _worker_id(), os.getpid()


def test_log_records_reach_the_callers_handlers(start_method: str, handler: ListHandler) -> None:
    with Pool(2, start_method=start_method) as pool:
        ran_on = pool.map(log_some, range(4), chunksize=1)
        # no waiting: a task's records are handled before its result arrives
        records = list(handler.records)
    assert len(records) == 4 * 3
    by_task: dict[int, list[logging.LogRecord]] = {}
    for record in records:
        task = int(record.getMessage().split()[1])
        by_task.setdefault(task, []).append(record)
    for task, (worker, pid) in enumerate(ran_on):
        info, warning, error = by_task[task]
        assert [r.levelname for r in (info, warning, error)] == ["INFO", "WARNING", "ERROR"]
        assert [r.name for r in (info, warning, error)] == ["out.app", "out.other", "out.app"]
        assert info.getMessage() == f"info {task} from app"
        assert info.args is None
        assert vars(warning)["n"] == task
        assert vars(warning)["lock"].startswith("<unlocked _thread.lock")  # sent as its repr
        assert error.exc_info is None
        assert error.exc_text is not None
        assert "Traceback" in error.exc_text and "ZeroDivisionError" in error.exc_text
        for record in (info, warning, error):
            assert vars(record)["worker_id"] == worker
            assert vars(record)["worker_pid"] == pid
            assert record.process == pid


def test_a_formatter_shows_the_worker_and_the_traceback(
    start_method: str, handler: ListHandler
) -> None:
    formatter = logging.Formatter("[%(worker_id)s] %(levelname)s %(name)s: %(message)s")
    with Pool(1, start_method=start_method) as pool:
        pool.apply(log_some, (7,))
    text = formatter.format(handler.records[-1])
    assert text.startswith("[1] ERROR out.app: failed 7\nTraceback (most recent call last):")
    assert text.endswith("ZeroDivisionError: division by zero")


def log_from_threads(task: int) -> None:
    log = logging.getLogger("out.app")

    def burst(thread: int) -> None:
        for i in range(100):
            log.warning("%d/%d/%d %s", task, thread, i, FILLER)

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    burst(3)
    for t in threads:
        t.join()


def test_records_logged_by_many_threads_of_a_hybrid_worker_arrive_intact(
    start_method: str, handler: ListHandler
) -> None:
    with Pool(1, start_method=start_method, concurrency_per_worker=4) as pool:
        pool.map(log_from_threads, range(4), chunksize=4)  # 4 tasks at once, 4 threads each
    messages = sorted(r.getMessage() for r in handler.records)
    expected = sorted(
        f"{task}/{thread}/{i} {FILLER}"
        for task in range(4)
        for thread in range(4)
        for i in range(100)
    )
    assert messages == expected
    assert {vars(r)["worker_id"] for r in handler.records} == {1}


def log_hello() -> None:
    logging.getLogger("out.app").warning("hello from the initializer")


def log_bye(_: object) -> None:
    logging.getLogger("out.app").warning("bye from worker_exit")


def log_and_exit(code: int) -> None:
    logging.getLogger("out.app").warning("about to exit")
    print("last words", file=sys.stderr)
    helpers.hard_exit(code)


def test_records_logged_as_a_worker_starts_ends_or_dies_are_not_lost(
    start_method: str, handler: ListHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    with Pool(
        1,
        start_method=start_method,
        initializer=log_hello,
        worker_exit=log_bye,
        worker_output="tagged",
    ) as pool:
        with pytest.raises(workcrew.WorkerCrashed) as info:
            pool.apply(log_and_exit, (3,))
        assert pool.apply(helpers.square, (3,)) == 9  # on the replacement, worker 2
    messages = [(vars(r)["worker_id"], r.getMessage()) for r in handler.records]
    assert messages == [
        (1, "hello from the initializer"),
        (1, "about to exit"),
        (2, "hello from the initializer"),
        (2, "bye from worker_exit"),
    ]
    # the crash report quotes the worker's stderr as written; the caller's stderr got it tagged
    assert "Last lines on the worker's stderr:\n    last words" in str(info.value)
    assert "[worker 1] last words\n" in capsys.readouterr().err


def test_thread_workers_log_and_print_in_the_callers_process(
    handler: ListHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    with Pool(2, kind="thread") as pool:
        pool.map(print_unfinished, ["\n"])
        pool.map(log_some, [1])
    assert capsys.readouterr().out == "done line\n\n"  # straight to sys.stdout, no tag
    assert len(handler.records) == 3
    assert handler.records[0].threadName.startswith("workcrew-worker-")
