"""The edges of the failure model (issue 13): each case fails on the main before the fix."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import edge_helpers
import workcrew
from edge_helpers import fork_then, segfault_at_start
from helpers import TIMEOUT, helper_pids, release_fifo, square, wait_for_fifo
from workcrew import Pool

SRC = str(Path(__file__).resolve().parent.parent / "src")


def sleep_long(_: object) -> None:
    time.sleep(3600)  # ended by terminate(): never by itself


class Blob:
    """A large argument whose lifetime a test watches."""

    def __init__(self, megabytes: int) -> None:
        self.data = bytearray(megabytes << 20)


async def measure(blob: Blob) -> int:
    return len(blob.data)


def test_an_imap_iterator_ends_after_raising_the_terminate_error_once() -> None:
    pool = Pool(2, start_method="fork")
    it = pool.imap(sleep_long, range(50), chunksize=1)
    pool.terminate()
    raised = 0
    for _ in range(100):  # a loop that catches and goes on, as the docs invite
        try:
            next(it)
        except StopIteration:
            break
        except workcrew.TaskCancelled:
            raised += 1
    else:
        pytest.fail("the iterator never ended")
    assert raised == 1


def test_the_async_kind_keeps_no_argument_alive_after_a_map() -> None:
    blobs = [Blob(2) for _ in range(20)]
    refs = [weakref.ref(b) for b in blobs]
    with Pool(4, kind="async") as pool:
        assert pool.map(measure, blobs, chunksize=1) == [2 << 20] * 20
        del blobs
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
    assert alive == 0, f"{alive} of 20 arguments still alive after map() returned"


def _use_in_child(pool: Pool, answer: Any) -> None:
    try:
        pool.apply(square, (3,))
    except workcrew.PoolClosedError as exc:
        answer.put(str(exc))
    else:  # pragma: no cover - the failure being tested
        answer.put("it ran")


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_pool_used_in_a_forked_child_refuses_at_once(kind: str) -> None:
    ctx = multiprocessing.get_context("fork")
    answer = ctx.SimpleQueue()
    with Pool(1, kind=kind, start_method="fork") as pool:
        assert pool.apply(square, (2,)) == 4
        child = ctx.Process(target=_use_in_child, args=(pool, answer))
        child.start()
        child.join(TIMEOUT)
        assert child.exitcode == 0, "the child hung or died using its parent's pool"
        assert "belongs to process" in answer.get()
        assert pool.apply(square, (5,)) == 25  # the parent's pool is untouched
    answer.close()


@pytest.fixture
def started(tmp_path: Path) -> str:
    path = str(tmp_path / "started")
    os.mkfifo(path)
    return path


def _grandchild(started: str) -> int:
    return int(wait_for_fifo(started))


@pytest.mark.parametrize("then", ["crash", "hang"])
def test_a_grandchild_that_outlives_its_task_delays_nothing(
    start_method: str, started: str, then: str
) -> None:
    timeout = 0.5 if then == "hang" else None
    expected = workcrew.WorkerCrashed if then == "crash" else workcrew.TaskTimeout
    with Pool(1, start_method=start_method, task_timeout=timeout) as pool:
        result = pool.apply_async(fork_then, (started, then))
        grandchild = _grandchild(started)
        try:
            with pytest.raises(expected):
                result.get(TIMEOUT)  # not when the grandchild ends: it never does by itself
            assert pool.apply(square, (3,)) == 9
        finally:
            os.kill(grandchild, signal.SIGKILL)


def test_terminate_returns_while_a_grandchild_lives_on(start_method: str, started: str) -> None:
    pool = Pool(1, start_method=start_method)
    pool.apply_async(fork_then, (started, "hang"))
    grandchild = _grandchild(started)
    try:
        stopper = threading.Thread(target=pool.terminate)
        stopper.start()
        stopper.join(TIMEOUT)
        assert not stopper.is_alive(), "terminate() waited for the task's grandchild"
    finally:
        os.kill(grandchild, signal.SIGKILL)


ORPHAN_SCRIPT = """
import os, re, signal, sys
from multiprocessing import forkserver, resource_tracker
from workcrew import Pool
from workcrew._backends._forkserver import server_pid

def pid(_):
    return os.getpid()

def hold_the_gil(started):
    with open(started, "w") as fifo:
        fifo.write("gil ")
    re.match(r"(a|aa)*c", "a" * 60)  # one C call, for far longer than the test

def stop_myself(started):
    with open(started, "w") as fifo:
        fifo.write("stopped ")
    os.kill(os.getpid(), signal.SIGSTOP)

if __name__ == "__main__":
    started = sys.argv[2]
    pool = Pool(2, start_method=sys.argv[1])
    pids = set(pool.map(pid, range(50), chunksize=1))
    pool.apply_async(hold_the_gil, (started,))
    pool.apply_async(stop_myself, (started,))
    # Held open for reading and writing until both tasks said so: it never
    # reads end of file, and a word written between two opens is not lost
    # with the reader that closed (one read may carry both words).
    fifo = os.open(started, os.O_RDWR)
    seen = b""
    while seen.count(b" ") < 2:
        seen += os.read(fifo, 64)
    os.close(fifo)
    helpers = [
        getattr(forkserver._forkserver, "_forkserver_pid", None),
        getattr(resource_tracker._resource_tracker, "_pid", None),
        server_pid(),
    ]
    pids.update(p for p in helpers if p)
    print(" ".join(map(str, pids)), flush=True)
    sys.stdin.read()  # wait to be killed
"""


def test_every_workcrew_process_ends_with_a_killed_caller_even_mid_c_call_or_stopped(
    tmp_path: Path, start_method: str, started: str
) -> None:
    script = tmp_path / "victim.py"
    script.write_text(ORPHAN_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), start_method, started],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) >= 2, "the workers did not report"
    processes = [psutil.Process(pid) for pid in pids]
    proc.kill()
    proc.communicate(timeout=TIMEOUT)
    _, alive = psutil.wait_procs(processes, timeout=TIMEOUT)
    for process in alive:  # do not leave them for the next test
        process.kill()
    assert not alive, f"outlived their SIGKILLed caller: {alive}"


# More deaths before start-up than the pool once tolerated (20) under spawn, whose workers
# take longest to become ready; a shorter storm under forkserver.  With an initializer
# argument larger than a pipe's buffer, Process.start() is still writing the start-up data
# when the kill lands, and raises BrokenPipeError (which once broke the pool as if the
# machine were out of processes): the worker must be reaped and replaced like the others.
@pytest.mark.parametrize(
    ("method", "storm", "init_bytes"),
    [("spawn", 21, 0), ("forkserver", 10, 0), ("forkserver", 10, 1 << 20)],
)
def test_a_kill_storm_on_starting_workers_does_not_break_the_pool(
    method: str, storm: int, init_bytes: int
) -> None:
    me = psutil.Process()
    seen: set[int] = set()
    stop = threading.Event()
    kills = 0

    def killer() -> None:  # kill every new worker the moment it shows up, `storm` times
        nonlocal kills
        while kills < storm and not stop.wait(0.002):
            spared = helper_pids()
            for child in me.children(recursive=True):
                if child.pid not in seen and child.pid not in spared:
                    seen.add(child.pid)
                    try:
                        child.kill()
                        kills += 1
                    except psutil.Error:
                        pass

    thread = threading.Thread(target=killer)
    init: dict[str, Any] = {}
    if init_bytes:
        init = {"initializer": edge_helpers.check_size, "initargs": (b"x" * init_bytes,)}
    with Pool(2, start_method=method, **init) as pool:
        thread.start()
        try:
            # A forkserver worker (its code preloaded) is ready within a millisecond or two,
            # so the killer also hits workers already running a task: retries absorb those.
            squares = pool.map(square, range(200), chunksize=1, retries=storm)
            assert squares == [x * x for x in range(200)]
        finally:
            stop.set()
            thread.join(TIMEOUT)
        stats = pool.statistics()
    assert kills > 0
    assert stats.workers_started > 2  # killed ones were replaced


def test_workers_crashing_while_they_start_break_the_pool_saying_so() -> None:
    pool = Pool(1, start_method="spawn", initializer=segfault_at_start)
    with pytest.raises(workcrew.BrokenPoolError) as info:
        pool.apply(square, (2,))
    message = str(info.value)
    assert (
        "3 workers in a row ended before becoming ready: the last was killed by SIGSEGV" in message
    )
    assert "A crash while starting" in message
    assert "main module" in message  # where such a crash comes from
    pool.terminate()


DAEMON_SCRIPT = """
import os, sys, time
from workcrew import Pool

def leave_a_daemon(pid_file):
    pid = os.fork()
    if pid == 0:  # holds every descriptor the worker had, the helpers' pipes included
        time.sleep(3600)
        os._exit(0)
    with open(pid_file, "w") as f:
        f.write(str(pid))

if __name__ == "__main__":
    with Pool(1, start_method=sys.argv[1]) as pool:
        pool.apply(leave_a_daemon, (sys.argv[2],))
    print("done", flush=True)
"""


def test_a_task_s_daemon_does_not_keep_the_caller_s_stdout_open(
    tmp_path: Path, start_method: str
) -> None:
    # `python script.py | cat` must end when the script does
    script, pid_file = tmp_path / "daemon.py", tmp_path / "daemon.pid"
    script.write_text(DAEMON_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), start_method, str(pid_file)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)  # end of file on its stdout, and its exit
        assert out == b"done\n"
    finally:
        proc.kill()
        proc.communicate()
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


# -- 10. a result slow to unpickle holds back nothing else ---------------------------


@pytest.fixture
def slow_results() -> Iterator[None]:
    """Results of ``edge_helpers.slow_to_load`` unpickle once the test sets MAY_FINISH."""
    edge_helpers.UNPICKLING.clear()
    edge_helpers.MAY_FINISH.clear()
    yield
    edge_helpers.MAY_FINISH.set()  # a failed test must not leave the pool stuck


@pytest.mark.usefixtures("slow_results")
def test_a_result_slow_to_unpickle_holds_back_no_other_worker(start_method: str) -> None:
    with workcrew.Executor(2, kind="process", start_method=start_method) as ex:
        slow = ex.submit(edge_helpers.slow_to_load)
        assert edge_helpers.UNPICKLING.wait(TIMEOUT)
        # While that result is being unpickled, the other worker's come through.
        assert [f.result(timeout=TIMEOUT) for f in [ex.submit(pow, 2, n) for n in range(5)]] == [
            1,
            2,
            4,
            8,
            16,
        ]
        assert not slow.done()
        edge_helpers.MAY_FINISH.set()
        assert isinstance(slow.result(timeout=TIMEOUT), edge_helpers.SlowToLoad)


@pytest.mark.usefixtures("slow_results")
def test_a_result_still_unpickling_at_its_deadline_is_no_timeout() -> None:
    with workcrew.Executor(2, kind="process", start_method="forkserver", task_timeout=0.5) as ex:
        slow = ex.submit(edge_helpers.slow_to_load)
        assert edge_helpers.UNPICKLING.wait(TIMEOUT)
        # Its deadline comes before this one's, so it has passed once this fails.
        with pytest.raises(workcrew.TaskTimeout):
            ex.submit(edge_helpers.run_until_stopped).result(timeout=TIMEOUT)
        edge_helpers.MAY_FINISH.set()
        pid = slow.result(timeout=TIMEOUT).pid
        (worker,) = [w for w in ex.statistics().workers if w.pid == pid]
        assert worker.exit != "killed"  # it answered in time: not stopped for its deadline


class Records(logging.Handler):
    """Hands every record to the test through a queue."""

    def __init__(self) -> None:
        super().__init__()
        self.records: queue.Queue[logging.LogRecord] = queue.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.put(record)


@pytest.mark.usefixtures("slow_results")
def test_a_worker_s_log_records_wait_for_its_result_being_unpickled(tmp_path: Path) -> None:
    go, logged = str(tmp_path / "go"), str(tmp_path / "logged")
    os.mkfifo(go)
    os.mkfifo(logged)
    handler = Records()
    logger = logging.getLogger("edge")
    logger.addHandler(handler)
    logger.setLevel("INFO")  # before the worker starts: it copies our levels
    try:
        with workcrew.Executor(1, kind="process", start_method="forkserver") as ex:
            slow = ex.submit(edge_helpers.slow_to_load_then_log, go, logged)
            assert edge_helpers.UNPICKLING.wait(TIMEOUT)  # its result was sent
            release_fifo(go)  # now a thread of the worker logs a record
            wait_for_fifo(logged)  # and has written it to us
            with pytest.raises(queue.Empty):  # it waits for the result before it
                handler.records.get_nowait()
            edge_helpers.MAY_FINISH.set()
            slow.result(timeout=TIMEOUT)
            record = handler.records.get(timeout=TIMEOUT)
            assert record.getMessage() == "after the slow result"
    finally:
        logger.removeHandler(handler)
        logger.setLevel("NOTSET")
