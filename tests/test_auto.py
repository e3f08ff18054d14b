"""kind="auto": functions are measured on their first tasks and routed to the right kind.

The workloads here (spinning, sleeping, waiting on a socket) are what auto must
classify; no test synchronises on them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import as_completed

import pytest

import helpers
import workcrew
from helpers import TIMEOUT
from workcrew import Executor, Pool


def choice_for(pool: Pool | Executor, fn: object) -> workcrew.KindChoice:
    name = f"{fn.__module__}.{fn.__qualname__}"  # type: ignore[attr-defined]
    [choice] = [c for c in pool.kind_choices() if c.function == name]
    return choice


def test_cpu_bound_function_goes_to_processes(start_method: str) -> None:
    with Pool(2, kind="auto", start_method=start_method) as pool:
        pids = pool.map(helpers.spin, [5] * 12)
        choice = choice_for(pool, helpers.spin)
    assert choice.kind == "process"
    assert choice.cpu_ratio is not None and choice.cpu_ratio >= 0.5
    # the probe ran in this process, on a thread; everything after it in worker processes
    assert pids[0] == os.getpid()
    assert os.getpid() not in pids[1:]


def test_sleeping_function_goes_to_threads() -> None:
    with Pool(4, kind="auto") as pool:
        pids = pool.map(helpers.doze, [5] * 12)
        choice = choice_for(pool, helpers.doze)
    assert choice.kind == "thread"
    assert choice.cpu_ratio is not None and choice.cpu_ratio < 0.5
    assert set(pids) == {os.getpid()}


@pytest.fixture
def slow_server() -> Iterator[tuple[str, int]]:
    """A local TCP server that answers each connection after a short delay."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed by the fixture
            with conn:
                stop.wait(0.01)  # the "network latency" the function waits on
                conn.sendall(b"reply")

    thread = threading.Thread(target=serve)
    thread.start()
    yield listener.getsockname()
    stop.set()
    listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
    listener.close()
    thread.join(TIMEOUT)


def test_network_reading_function_goes_to_threads(slow_server: tuple[str, int]) -> None:
    with Pool(4, kind="auto") as pool:
        assert pool.map(helpers.fetch, [slow_server] * 6) == [b"reply"] * 6
        assert choice_for(pool, helpers.fetch).kind == "thread"


def test_coroutine_function_goes_to_async_without_probing() -> None:
    with Pool(8, kind="auto") as pool:
        assert pool.map(helpers.async_square, range(20)) == [x * x for x in range(20)]
        choice = choice_for(pool, helpers.async_square)
    assert (choice.kind, choice.probes, choice.cpu_ratio) == ("async", 0, None)


def test_decision_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="workcrew"), Pool(2, kind="auto") as pool:
        pool.map(helpers.doze, [3, 3])
    [record] = [r for r in caplog.records if "doze" in r.getMessage()]
    assert "thread workers" in record.getMessage()


def test_set_kind_overrides_measurement(start_method: str) -> None:
    with Pool(2, kind="auto", start_method=start_method) as pool:
        pool.set_kind(helpers.doze, "process")
        pids = pool.map(helpers.doze, [1] * 4)
        choice = choice_for(pool, helpers.doze)
    assert os.getpid() not in pids  # no probe on a thread: every task ran in a process
    assert (choice.kind, choice.probes, choice.reason) == ("process", 0, "set by set_kind()")


def test_set_kind_rejects_bad_use() -> None:
    with Pool(2, kind="auto") as pool, pytest.raises(ValueError, match="choose one of"):
        pool.set_kind(helpers.doze, "fibre")
    with Pool(2, kind="thread") as pool, pytest.raises(ValueError, match="kind='auto'"):
        pool.set_kind(helpers.doze, "thread")
    with Pool(2, kind="thread") as pool:
        assert pool.kind_choices() == []


def test_every_call_shape_gives_right_results(start_method: str) -> None:
    # A fresh pool per shape, so that each shape probes an undecided function.
    expected = [x * x for x in range(1, 30)]
    with Pool(2, kind="auto", start_method=start_method) as pool:
        assert pool.map(helpers.slow_square, range(1, 30)) == expected
    with Pool(2, kind="auto", start_method=start_method) as pool:
        assert list(pool.imap(helpers.slow_square, range(1, 30))) == expected
    with Pool(2, kind="auto", start_method=start_method) as pool:
        assert sorted(pool.imap_unordered(helpers.slow_square, range(1, 30))) == expected
    with Pool(2, kind="auto", start_method=start_method) as pool:
        assert pool.starmap(helpers.add, [(i, i) for i in range(30)]) == [2 * i for i in range(30)]
    with Pool(2, kind="auto", start_method=start_method) as pool:
        results = [pool.apply_async(helpers.slow_square, (i,)) for i in range(1, 30)]
        assert [r.get(TIMEOUT) for r in results] == expected
    with Executor(2, kind="auto", start_method=start_method) as ex:
        assert list(ex.map(helpers.slow_square, range(1, 30))) == expected
        futures = [ex.submit(helpers.add, i, b=1) for i in range(20)]
        assert sorted(f.result() for f in as_completed(futures, TIMEOUT)) == list(range(1, 21))


def test_calls_submitted_while_probing_wait_for_the_decision(start_method: str) -> None:
    with Pool(2, kind="auto", start_method=start_method) as pool:
        futures = [pool.submit(helpers.spin, 5) for _ in range(10)]
        pids = [f.result(TIMEOUT) for f in futures]
    # exactly one probe ran on a thread; the nine others waited and went to processes
    assert pids.count(os.getpid()) == 1


def test_close_runs_calls_still_waiting_for_a_decision() -> None:
    pool = Pool(2, kind="auto")
    futures = [pool.submit(helpers.spin, 3) for _ in range(6)]
    pool.close()
    pool.join()
    assert all(isinstance(f.result(0), int) for f in futures)
    with pytest.raises(workcrew.PoolClosedError):
        pool.submit(helpers.spin, 1)


def test_terminate_cancels_calls_waiting_for_a_decision(tmp_path: object) -> None:
    started, gate = helpers.make_gates(tmp_path)
    pool = Pool(2, kind="auto")
    probe = pool.submit(helpers.signal_then_wait, started, gate)
    waiting = pool.submit(helpers.signal_then_wait, started, gate)
    helpers.wait_for_fifo(started)  # the probe runs; the second call waits for its decision
    terminate = threading.Thread(target=pool.terminate)
    terminate.start()  # fails waiting calls at once, then waits for the probe's thread
    with pytest.raises(workcrew.TaskCancelled):
        waiting.result(TIMEOUT)
    helpers.release_fifo(gate)
    terminate.join(TIMEOUT)
    assert probe.done()


def test_failing_probe_fails_map_and_imap_goes_on(start_method: str) -> None:
    pool = Pool(2, kind="auto", start_method=start_method)
    with pool, pytest.raises(ValueError, match="first item is bad"):
        pool.map(helpers.spin_then_fail, range(6))
    with Pool(2, kind="auto", start_method=start_method) as pool:
        it = pool.imap(helpers.spin_then_fail, range(6))
        with pytest.raises(ValueError, match="first item is bad"):
            next(it)
        assert list(it) == [1, 4, 9, 16, 25]


def test_probe_that_times_out_routes_to_processes() -> None:
    event = threading.Event()
    try:
        with Pool(2, kind="auto", task_timeout=0.2) as pool:
            with pytest.raises(workcrew.TaskTimeout):
                pool.apply(helpers.wait_event, (event,))
            assert choice_for(pool, helpers.wait_event).kind == "process"
    finally:
        event.set()  # the retired probe thread can now end


def test_unpicklable_cpu_function_stays_on_threads() -> None:
    lock = threading.Lock()

    def locked_spin(ms: float) -> int:
        with lock:
            return helpers.spin(ms)

    with Pool(2, kind="auto") as pool:
        assert set(pool.map(locked_spin, [3] * 4)) == {os.getpid()}
        choice = choice_for(pool, locked_spin)
    assert choice.kind == "thread"
    assert "cannot be pickled" in choice.reason and "lock" in choice.reason


def test_process_workers_are_capped_at_the_cpu_count() -> None:
    with Pool(16, kind="auto") as pool:
        pids = pool.map(helpers.spin, [3] * 64)
    assert len(set(pids) - {os.getpid()}) <= workcrew.available_cpu_count()


def test_auto_rejects_concurrency_per_worker() -> None:
    with pytest.raises(ValueError, match="needs kind='process'"):
        Pool(2, kind="auto", concurrency_per_worker=4)
