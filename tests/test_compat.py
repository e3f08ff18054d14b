"""The drop-in contract: what CPython's own executor and Pool suites showed, kept fixed here.

Each test names the standard-library behaviour it protects (docs/compat.md, docs/errors.md).
Measured against the suites themselves with ../shared/stdlib-contract/score-workcrew.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import psutil
import pytest

import workcrew
from compat_helpers import (
    ExitAtPickle,
    ExitAtUnpickle,
    RefusesPickle,
    asquare,
    count_in,
    make,
    make_blob,
    nbytes,
    put_on,
    remember,
    say,
    segfault,
    set_on,
    use_remembered,
    wait_then_square,
)
from helpers import TIMEOUT, failing_initializer, square
from workcrew import Executor, Pool

START_METHODS = ["fork", "spawn", "forkserver"]


@pytest.fixture(params=START_METHODS)
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- 1. errors the standard library's except clauses catch --------------------------------


def test_crash_is_a_broken_process_pool_and_the_pool_goes_on(method: str) -> None:
    with Executor(2, start_method=method) as ex:
        with pytest.raises(BrokenProcessPool) as info:
            ex.submit(segfault).result(TIMEOUT)
        assert isinstance(info.value, workcrew.WorkerCrashed)
        assert "SIGSEGV" in str(info.value)
        assert ex.submit(square, 7).result(TIMEOUT) == 49


def test_unpicklable_argument_raises_what_pickle_raised(method: str) -> None:
    with Pool(2, start_method=method) as pool:
        # CPython's test_map_unplicklable: the __reduce__'s own RuntimeError
        with pytest.raises(RuntimeError, match="cannot pickle") as info:
            pool.map(square, [RefusesPickle()] * 3)
        error = info.value
        assert isinstance(error, workcrew.SerializationError)
        assert isinstance(error, pickle.PicklingError)
        assert "cannot send the arguments of" in str(error)  # the diagnosis is kept
        with pytest.raises(TypeError, match=r"_thread\.lock"):
            pool.apply(square, (threading.Lock(),))
        assert pool.map(square, [3]) == [9]


def test_result_pickling_that_exits_fails_the_task_as_system_exit(method: str) -> None:
    # CPython's test_exit_during_result_pickle_on_worker: the worker survives it
    with Executor(1, start_method=method) as ex:
        before = ex.submit(say, "x").result(TIMEOUT)
        with pytest.raises(SystemExit) as info:
            ex.submit(make, "ExitAtPickle").result(TIMEOUT)
        assert isinstance(info.value, workcrew.SerializationError)
        assert isinstance(info.value, pickle.PicklingError)
        assert "could not be pickled in worker" in str(info.value)
        assert ex.submit(say, "y").result(TIMEOUT) == before  # the same worker goes on


def test_result_unpickling_that_exits_in_the_caller_fails_only_that_task(method: str) -> None:
    # A SystemExit raised while the master unpickles a result once ended the master loop.
    with Executor(2, start_method=method) as ex:
        with pytest.raises(BrokenProcessPool) as info:
            ex.submit(make, "ExitAtUnpickleInCaller").result(TIMEOUT)
        assert isinstance(info.value, workcrew.SerializationError)
        assert isinstance(info.value, pickle.UnpicklingError)
        assert "could not be unpickled in the caller: SystemExit" in str(info.value)
        assert ex.submit(square, 5).result(TIMEOUT) == 25


def test_task_unpickling_that_exits_in_the_worker_is_a_broken_process_pool(method: str) -> None:
    with Executor(2, start_method=method) as ex:
        with pytest.raises(BrokenProcessPool, match="could not unpickle the task"):
            ex.submit(id, ExitAtUnpickle()).result(TIMEOUT)
        assert ex.submit(square, 6).result(TIMEOUT) == 36


def test_argument_pickling_that_exits_fails_only_its_task() -> None:
    # pickled on the master thread: a SystemExit there must not end the master loop
    with Executor(1, start_method="fork") as ex:
        with pytest.raises(SystemExit):
            ex.submit(id, ExitAtPickle()).result(TIMEOUT)
        assert ex.submit(square, 4).result(TIMEOUT) == 16


@pytest.mark.parametrize("kind", ["thread", "process", "async"])
def test_failing_initializer_is_a_broken_executor(kind: str) -> None:
    fn = asquare if kind == "async" else square
    with Executor(2, kind=kind, initializer=failing_initializer) as ex:
        with pytest.raises(BrokenExecutor):
            ex.submit(fn, 1).result(TIMEOUT)
        with pytest.raises(BrokenExecutor):  # from now on submit() itself refuses
            ex.submit(fn, 1)


def test_error_classes_keep_their_bases_through_pickle() -> None:
    timeout = workcrew.TaskTimeout("slow", timeout=1.0)
    assert isinstance(timeout, TimeoutError)
    assert isinstance(timeout, multiprocessing.TimeoutError)
    loading = pickle.loads(pickle.dumps(workcrew.SerializationError("x")))
    assert type(loading) is workcrew.SerializationError
    crashed = pickle.loads(pickle.dumps(workcrew.WorkerCrashed("died", pid=3, exitcode=-9)))
    assert isinstance(crashed, BrokenProcessPool)
    assert (crashed.pid, crashed.exitcode) == (3, -9)


def test_a_done_callback_raising_system_exit_does_not_end_the_pool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def leave(_: object) -> None:
        raise SystemExit("a callback tried to exit")

    with Pool(1, kind="thread") as pool:
        pool.apply_async(square, (2,), callback=leave).wait(TIMEOUT)
        assert pool.apply(square, (3,)) == 9
    assert "exception calling callback" in caplog.text


# -- 2. printed output is what the standard library prints -------------------------------


def test_printed_lines_are_untagged_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    with Pool(1, start_method="fork") as pool:
        pid = pool.apply(say, ("apple",))
    assert capsys.readouterr().out == "apple\n"
    with Pool(1, start_method="fork", worker_output="tagged") as pool:
        assert pool.apply(say, ("pear",)) != pid
    assert capsys.readouterr().out.endswith("] pear\n")


# -- 3. multiprocessing objects in initargs --------------------------------------------------


def test_multiprocessing_objects_reach_workers_through_initargs(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    with ctx.Manager() as manager:
        namespace = manager.Namespace()
        queue, lock, event, value = ctx.Queue(), ctx.Lock(), ctx.Event(), ctx.Value("i", 0)
        objects = (queue, lock, event, value, namespace)
        with Pool(2, start_method=method, initializer=remember, initargs=objects) as pool:
            assert pool.map(use_remembered, range(2), chunksize=1) == ["used", "used"]
        assert queue.get(timeout=TIMEOUT) == "from the worker"
        assert event.is_set()
        assert value.value == 2
        assert namespace.seen is True
        queue.close()
        queue.join_thread()


def test_a_fork_context_queue_picks_fork_when_no_method_was_chosen(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The common stdlib idiom on Python <= 3.13: the default context is fork.
    queue = multiprocessing.get_context("fork").Queue()
    caplog.set_level("INFO", logger="workcrew")
    with Pool(2, initializer=put_on, initargs=(queue, "ready")) as pool:
        assert pool.start_method == "fork"
        assert pool.map(square, range(3)) == [0, 1, 4]
    assert [queue.get(timeout=TIMEOUT), queue.get(timeout=TIMEOUT)] == ["ready", "ready"]
    assert "starts its workers with fork" in caplog.text
    queue.close()
    queue.join_thread()


def test_a_fork_context_queue_with_spawn_chosen_says_what_to_do() -> None:
    queue = multiprocessing.get_context("fork").Queue()
    with pytest.raises(workcrew.SerializationError, match=r"get_context\('spawn'\).Queue\(\)"):
        Pool(2, start_method="spawn", initializer=put_on, initargs=(queue, 1))
    queue.close()
    queue.join_thread()


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_pool_with_initializer_starts_its_workers_at_once(kind: str) -> None:
    # CPython's TestInitializers.test_pool_initializer: no task ever runs
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    pool = Pool(3, kind=kind, start_method="spawn", initializer=count_in, initargs=(counter,))
    pool.close()
    pool.join()
    assert counter.value == 3


# -- 4. nothing holds on to what the caller gave or got ------------------------------------


class _Owner:
    def method(self) -> None:
        pass


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_dropped_future_keeps_nothing_alive(kind: str) -> None:
    # CPython's test_no_stale_references: no gc.collect() allowed, only refcounts
    collected = threading.Event()
    with Executor(2, kind=kind, start_method="fork") as ex:
        owner = _Owner()
        ref = weakref.ref(owner, lambda _: collected.set())
        ex.submit(owner.method)
        del owner
        assert collected.wait(TIMEOUT), ref()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_map_results_are_freed_once_the_caller_drops_them(kind: str) -> None:
    # CPython's test_free_reference
    with Executor(2, kind=kind, start_method="fork") as ex:
        alive = []
        for obj in ex.map(_new_owner, range(10)):
            ref = weakref.ref(obj)
            del obj
            gc.collect()
            alive.append(ref() is not None)
        assert not any(alive)


def _new_owner(_: int) -> _Owner:
    return _Owner()


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_100_mib_argument_and_result_are_freed(kind: str) -> None:
    mib = 100
    with Executor(1, kind=kind, start_method="fork") as ex:
        ex.submit(nbytes, b"warm up").result(TIMEOUT)  # workers, pipes, caches in place
        gc.collect()
        baseline = _rss()
        data = b"y" * (mib << 20)
        future = ex.submit(nbytes, data)
        assert future.result(TIMEOUT) == mib << 20
        result = ex.submit(make_blob, mib).result(TIMEOUT)
        assert len(result) == mib << 20
        del data, future, result
        gc.collect()
        grown = (_rss() - baseline) / (1 << 20)
    assert grown < mib / 4, f"{grown:.0f} MiB still held after dropping 2 x {mib} MiB"


# -- 6. the smaller divergences -------------------------------------------------------------


def test_a_pool_cannot_be_entered_again_after_its_with_block() -> None:
    pool = Pool(1, kind="thread")
    with pool:
        pass
    with pytest.raises(ValueError, match="Pool not running"), pool:
        pass  # pragma: no cover - not reached
    pool.join()


def _raise_at(total: int, when: int) -> Iterator[int]:
    for i in range(total):
        if i == when:
            raise KeyError("the input said when")
        yield i


@pytest.mark.parametrize(("chunksize", "results_before_error"), [(None, 7), (1, 7), (2, 6), (4, 4)])
def test_imap_input_error_takes_the_place_of_its_chunk(
    chunksize: int | None, results_before_error: int
) -> None:
    with Pool(2, kind="thread") as pool:
        it = pool.imap(square, _raise_at(20, 7), chunksize)
        got = [next(it) for _ in range(results_before_error)]
        assert got == [i * i for i in range(results_before_error)]
        with pytest.raises(KeyError, match="the input said when"):
            next(it)


def test_cancel_futures_runs_what_workers_took_and_cancels_the_rest() -> None:
    gate = threading.Event()
    ex = Executor(2, kind="thread")
    futures = [ex.submit(wait_then_square, gate, i) for i in range(20)]
    ex.shutdown(wait=False, cancel_futures=True)
    gate.set()
    ex.shutdown(wait=True)
    ran = [f for f in futures if not f.cancelled()]
    assert ran, "every future was cancelled: none of the idle workers took work"
    assert all(f.result() == futures.index(f) ** 2 for f in ran)
    assert len(ran) <= 4  # two workers, each with at most one chunk queued behind


def test_submit_during_interpreter_exit_is_the_standard_runtime_error(tmp_path: Path) -> None:
    script = tmp_path / "late.py"
    script.write_text(
        textwrap.dedent(
            """
            import atexit
            from workcrew import Executor

            @atexit.register
            def run_last():
                try:
                    ex.submit(id, None)
                except RuntimeError:
                    print("runtime-error")
                    raise

            if __name__ == "__main__":
                ex = Executor(2, kind="thread")
                ex.submit(id, 42).result()
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.stdout.strip() == "runtime-error"
    assert "RuntimeError: cannot schedule new futures after interpreter shutdown" in done.stderr


def test_a_worker_that_cannot_start_breaks_the_pool_with_a_reason() -> None:
    pool = Pool(1, kind="thread")

    def refuse(*_: Any) -> Any:
        raise OSError(24, "Too many open files")

    pool._engine._master.backend.start_worker = refuse  # type: ignore[union-attr, method-assign]
    with pytest.raises(workcrew.BrokenPoolError, match=r"cannot start worker .* open files"):
        pool.apply(square, (2,))
    pool.terminate()


def test_thread_name_prefix_names_thread_workers_as_thread_pool_executor() -> None:
    with Executor(1, kind="thread", thread_name_prefix="io") as ex:
        assert ex.submit(lambda: threading.current_thread().name).result(TIMEOUT) == "io_0"


class _Sealed(Exception):
    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("this class takes no subclasses")


def test_a_pickling_error_whose_type_cannot_be_combined_keeps_the_rest() -> None:
    from workcrew._core._exceptions import serialization_error

    error = serialization_error("cannot send it", cause=_Sealed())
    assert isinstance(error, pickle.PicklingError)
    assert not isinstance(error, _Sealed)
    assert str(error) == "cannot send it"
    unicode = serialization_error("text", cause=UnicodeEncodeError("utf-8", "x", 0, 1, "bad"))
    assert isinstance(unicode, UnicodeEncodeError)
    assert str(unicode) == "text"  # not UnicodeEncodeError's own formatting


def test_manager_proxies_travel_as_task_arguments(method: str) -> None:
    with multiprocessing.get_context(method).Manager() as manager:
        namespace = manager.Namespace()
        with Pool(2, start_method=method) as pool:
            assert pool.apply(set_on, (namespace, method)) == method
        assert namespace.value == method


def test_a_multiprocessing_queue_as_a_task_argument_is_refused_as_multiprocessing_does() -> None:
    queue = multiprocessing.get_context("spawn").Queue()
    with Pool(1, start_method="spawn") as pool:
        # multiprocessing: "Queue objects should only be shared between processes through
        # inheritance": the same RuntimeError, with what to do
        with pytest.raises(RuntimeError, match="through inheritance") as info:
            pool.apply(put_on, (queue, 1))
        assert "initializer" in str(info.value)
        assert pool.apply(square, (2,)) == 4
    queue.close()
    queue.join_thread()
