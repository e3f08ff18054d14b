"""The command line, driven as a user would: a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import TIMEOUT

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _workcrew(*args: str, path: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *path])}
    return subprocess.run(
        [sys.executable, "-m", "workcrew", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT * 2,
        check=False,
    )


def test_demo_pool_lesson_shows_five_tasks_on_four_workers() -> None:
    proc = _workcrew("demo", "--lesson", "pool", "--start-method", "fork")
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^\s+(\d)\s+(\d+)\s+([\d.]+) s\s+([\d.]+) s$", proc.stdout, re.M)
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4]
    pids = {r[1] for r in rows}
    assert 1 <= len(pids) <= 4
    assert "5 tasks done" in proc.stdout
    # ... and the pool's own timeline of them: a row per worker that ran one.
    bars = re.findall(r"^process worker \d+ \(pid (\d+)\)\s+\|([#.]+)\|$", proc.stdout, re.M)
    assert {pid for pid, _ in bars} == pids and all("#" in bar for _, bar in bars)
    [trace] = re.findall(r"^Trace for Perfetto / chrome://tracing: (.+)$", proc.stdout, re.M)
    events = json.loads(Path(trace).read_text())["traceEvents"]
    assert len([e for e in events if e["ph"] == "X"]) == 5  # one span per task


def test_demo_cpu_lesson_in_chinese_prints_a_speedup_table() -> None:
    proc = _workcrew("demo", "--lang", "zh", "--lesson", "cpu", "--start-method", "fork")
    assert proc.returncode == 0, proc.stderr
    assert "多线程 vs 多进程" in proc.stdout
    speedups = re.findall(r"([\d.]+)x$", proc.stdout, re.M)
    assert len(speedups) == 3
    assert float(speedups[0]) == 1.0


def test_bad_arguments_exit_2_with_a_message() -> None:
    proc = _workcrew("demo", "--lang", "fr")
    assert proc.returncode == 2
    assert "invalid choice: 'fr'" in proc.stderr
    proc = _workcrew("frobnicate")
    assert proc.returncode == 2


def test_help_shows_examples() -> None:
    proc = _workcrew("demo", "--help")
    assert proc.returncode == 0
    assert "workcrew demo --lang zh" in proc.stdout


def test_demo_crash_lesson_shows_isolation_and_the_stdlib() -> None:
    proc = _workcrew("demo", "--lesson", "crash", "--start-method", "fork")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "task 3: worker" in out
    assert "exited with status 1" in out
    assert "task 5: result 50" in out
    assert "the whole process died (exit status 1)" in out
    assert "multiprocessing.Pool.map: still waiting" in out
    assert "failed with BrokenProcessPool" in out


def test_advise_recommends_threads_for_waiting_work() -> None:
    tests = str(Path(__file__).resolve().parent)  # where `helpers` is importable
    proc = _workcrew("advise", "helpers:nap", "--tasks", "40", path=(tests,))
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^(process|thread)\s+(\d+)\s+([\d,]+)$", proc.stdout, re.M)
    assert {kind for kind, _, _ in rows} == {"process", "thread"}
    # 40 sleeps of 10 ms: 4 x CPUs threads wait in parallel, far ahead of 1 process
    assert re.search(r"^recommendation: Pool\(\d+, kind='thread'\)", proc.stdout, re.M)


def test_advise_rejects_a_bad_function_spec() -> None:
    proc = _workcrew("advise", "no_colon_here")
    assert proc.returncode == 2
    assert "expected MODULE:FUNCTION" in proc.stderr


def test_demo_io_lesson_measures_threads_processes_and_auto() -> None:
    proc = _workcrew("demo", "--lesson", "io", "--start-method", "fork")
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^(20 threads|(\d+) processes)\s+[\d.]+ s\s+([\d.]+)$", proc.stdout, re.M)
    [(_, _, threads)] = [r for r in rows if r[0] == "20 threads"]
    [(_, processes, process_waits)] = [r for r in rows if r[1]]
    assert float(threads) > 10  # 20 threads wait at once (minus start-up and scheduling)
    assert float(process_waits) <= int(processes) + 0.5  # one wait per process at a time
    assert re.search(r"^\s+spin\s+-> process \(CPU-bound", proc.stdout, re.M)
    assert re.search(r"^\s+download\s+-> thread\s+\(mostly waiting", proc.stdout, re.M)


def test_demo_async_lesson_waits_on_one_thread() -> None:
    proc = _workcrew("demo", "--lesson", "async", "--start-method", "fork")
    assert proc.returncode == 0, proc.stderr
    pattern = r"^(kind='\w+'.*?|\d+ processes x \d+ coroutines)\s+([\d.]+) s\s+(.+)$"
    rows = re.findall(pattern, proc.stdout, re.M)
    assert [how.split(",")[0] for how, _, _ in rows[:2]] == ["kind='thread'", "kind='async'"]
    assert [threads.strip() for _, _, threads in rows[:2]] == ["20", "1"]
    assert re.fullmatch(r"\d+ x 1", rows[2][2].strip())  # one loop thread per process
    thread_secs, async_secs = float(rows[0][1]), float(rows[1][1])
    assert async_secs < thread_secs  # 200 waits at once beat 20 at a time


def test_demo_queue_lesson_reader_ends_by_itself() -> None:
    proc = _workcrew("demo", "--lesson", "queue", "--start-method", "spawn")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^writer \(pid \d+\) put:  A, B, C$", proc.stdout, re.M)
    assert re.search(r"^reader \(pid \d+\) got:  A, B, C  - its loop ended", proc.stdout, re.M)
    [ahead] = re.findall(r"never more than (\d+) items ahead", proc.stdout)
    assert int(ahead) <= 100  # the queue's maxsize held the writer back


def test_demo_lock_lesson_balances_and_reports_the_deadlock() -> None:
    proc = _workcrew("demo", "--lesson", "lock", "--start-method", "fork")
    assert proc.returncode == 0, proc.stderr
    rows = dict(re.findall(r"^(2 \w+, [\w. ()]+?)\s{2,}(-?[\d,]+)\s+[\d.]+ s$", proc.stdout, re.M))
    assert rows["2 processes, workcrew.Lock"] == "0"
    assert rows["2 threads, workcrew.Lock"] == "0"
    assert "2 processes, no lock" in rows and "2 threads, no lock (the lecture)" in rows
    failed = re.findall(r"^  worker pid \d+: DeadlockError: deadlock: (.+)$", proc.stdout, re.M)
    assert len(failed) == 1 and "'first'" in failed[0] and "'second'" in failed[0]
    assert len(re.findall(r"took both locks once the other let go$", proc.stdout, re.M)) == 1


def test_demo_state_lesson_opens_one_connection_per_worker() -> None:
    proc = _workcrew("demo", "--lesson", "state", "--start-method", "spawn")
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^(thread|process)\s+(\d+)\s+100\s+(\d+)\s+(\d+)$", proc.stdout, re.M)
    assert [kind for kind, *_ in rows] == ["thread", "process"]
    for _, workers, opened, closed in rows:
        assert 1 <= int(opened) <= int(workers)  # one per worker, never one per task
        assert int(closed) >= int(opened)  # every worker that ran tasks closed its own
    assert "tasks on threads and processes saw req-7." in proc.stdout
