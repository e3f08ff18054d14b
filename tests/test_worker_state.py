"""Per-worker state (initializer -> worker_state() -> worker_exit) and context variables.

Every worker kind: thread, process (fork, spawn), async, hybrid and auto.
State is counted through a log file each initializer and worker_exit call
appends to (see state_helpers), read after the pool has joined.
"""

from __future__ import annotations

import asyncio
import contextvars
import decimal
import functools
import inspect
import logging
import os
import pickle
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import helpers
import state_helpers as sh
import workcrew
from helpers import TIMEOUT
from workcrew import Executor, Pool
from workcrew._core import _carry


def hooks(log: Path, *, coroutines: bool = False) -> dict[str, Any]:
    """Pool options that build a state per worker and tear it down, logged to ``log``."""
    if coroutines:
        return {
            "initializer": sh.aopen_state,
            "initargs": (str(log),),
            "worker_exit": sh.aclose_state,
        }
    return {"initializer": sh.open_state, "initargs": (str(log),), "worker_exit": sh.close_state}


def in_context(body: Callable[[], Any], **values: Any) -> Any:
    """``body()`` in a fresh context where state_helpers' variables hold ``values``.

    The test's own context stays clean: nothing leaks into later tests.
    """
    ctx = contextvars.Context()
    for name, value in values.items():
        ctx.run(getattr(sh, name).set, value)
    return ctx.run(body)


def check_once_per_worker(
    seen: list[tuple[str, str]], log: Path, *, at_most: int | None = None
) -> list[str]:
    """Each worker built its state once, tasks saw it, each was torn down once."""
    inits, exits = sh.read_log(log)
    assert inits, "no initializer ran"
    assert len(set(inits)) == len(inits)
    if at_most is not None:
        assert len(inits) <= at_most, inits
    token_of: dict[str, str] = {}
    for where, token in seen:
        assert token_of.setdefault(where, token) == token, f"{where} saw two states"
    assert {token for _, token in seen} <= set(inits)
    assert Counter(exits) == Counter(inits), (inits, exits)
    return inits


# -- worker state: built once, torn down once --------------------------------------------


def test_state_is_built_once_per_worker_and_torn_down_once(
    pool_kw: dict[str, Any], tmp_path: Path
) -> None:
    log = tmp_path / "log"
    with Pool(
        2,
        **hooks(log),
        **pool_kw,
    ) as pool:
        seen = pool.map(sh.token, range(40), chunksize=1)
        seen += [pool.submit(sh.token).result(TIMEOUT) for _ in range(5)]
        seen += list(pool.imap_unordered(sh.token, range(10)))
    check_once_per_worker(seen, log, at_most=2)


def test_recycled_workers_each_build_and_tear_down_their_own_state(
    pool_kw: dict[str, Any], tmp_path: Path
) -> None:
    log = tmp_path / "log"
    with Pool(
        2,
        initializer=sh.open_state,
        initargs=(str(log),),
        maxtasksperchild=2,
        worker_exit=sh.close_state,
        **pool_kw,
    ) as pool:
        seen = pool.map(sh.token, range(10), chunksize=1)
    inits, exits = sh.read_log(log)
    assert len(inits) >= 5 and len(set(inits)) == len(inits)
    uses = Counter(token for _, token in seen)
    assert max(uses.values()) <= 2 and set(uses) <= set(inits)
    assert Counter(exits) == Counter(inits)


def test_executor_takes_worker_exit(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with Executor(
        2,
        kind="thread",
        **hooks(log),
    ) as ex:
        seen = list(ex.map(sh.token, range(20)))
    check_once_per_worker(seen, log, at_most=2)


def test_async_kind_builds_one_state_per_loop_and_awaits_both_hooks(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with Pool(
        8,
        kind="async",
        **hooks(log, coroutines=True),
    ) as pool:
        seen = pool.map(sh.atoken, range(40), chunksize=1)
        seen.append(pool.submit(sh.atoken).result(TIMEOUT))
    inits = check_once_per_worker(seen, log)
    assert len(inits) == 1, "one state per event loop, shared by its slots"
    assert {token for _, token in seen} == set(inits)


@pytest.mark.parametrize("fn", [sh.token, sh.atoken], ids=["threads", "coroutines"])
def test_hybrid_workers_share_their_process_state(fn: Any, tmp_path: Path) -> None:
    log = tmp_path / "log"
    with Pool(
        2,
        start_method="fork",
        concurrency_per_worker=4,
        **hooks(log),
    ) as pool:
        seen = pool.map(fn, range(40))
    by_process = [(where.split(":")[0], token) for where, token in seen]
    check_once_per_worker(by_process, log, at_most=2)


def test_hybrid_workers_await_an_async_initializer_on_their_own_loop(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with Pool(
        1,
        start_method="fork",
        concurrency_per_worker=3,
        **hooks(log, coroutines=True),  # asserts it runs on the loop the state was built on
    ) as pool:
        seen = pool.map(sh.atoken, range(9))
    check_once_per_worker(seen, log, at_most=1)


def test_auto_kind_follows_the_rule_of_each_kind_it_uses(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with Pool(
        2,
        kind="auto",
        start_method="fork",
        **hooks(log),
    ) as pool:
        probed = pool.submit(sh.token).result(TIMEOUT)  # measured on a thread worker
        pool.set_kind(sh.token, "process")
        seen = [probed, *pool.map(sh.token, range(40))]
    check_once_per_worker(seen, log)
    pids = {where.split(":")[0] for where, _ in seen}
    assert probed[0].split(":")[0] == str(os.getpid()) and len(pids) >= 2


def test_worker_exit_without_an_initializer_gets_none() -> None:
    sh.EXITS.clear()
    with Pool(2, kind="thread", worker_exit=sh.remember_exit) as pool:
        pool.map(sh.read_request_id, range(4))
    assert sh.EXITS and set(sh.EXITS) == {None}


# -- worker_exit runs only on a graceful end; its errors do not break the pool --------------


def test_worker_exit_does_not_run_in_a_worker_killed_by_terminate(tmp_path: Path) -> None:
    log = tmp_path / "log"
    started, gate = helpers.make_gates(tmp_path)
    pool = Pool(
        1,
        start_method="fork",
        **hooks(log),
    )
    running = pool.submit(helpers.signal_then_wait, started, gate)
    assert helpers.wait_for_fifo(started) == "started"  # busy: terminate() kills it mid-task
    pool.terminate()
    with pytest.raises(workcrew.TaskCancelled):
        running.result(TIMEOUT)
    inits, exits = sh.read_log(log)
    assert len(inits) == 1 and exits == []


def test_worker_exit_does_not_run_for_a_crashed_worker(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with Pool(
        1,
        start_method="fork",
        **hooks(log),
    ) as pool:
        _, crashed = pool.submit(sh.token).result(TIMEOUT)
        with pytest.raises(workcrew.WorkerCrashed):
            pool.submit(sh.die).result(TIMEOUT)
        _, replacement = pool.submit(sh.token).result(TIMEOUT)
    inits, exits = sh.read_log(log)
    assert inits == [crashed, replacement]
    assert exits == [replacement]


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_a_failing_worker_exit_is_logged_and_the_pool_goes_on(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "log"
    fn = sh.token if kind == "thread" else sh.atoken
    with (
        caplog.at_level(logging.ERROR, logger="workcrew"),
        Pool(
            2,
            kind=kind,
            initializer=sh.open_state,
            initargs=(str(log),),
            worker_exit=sh.close_state_then_fail,
        ) as pool,
    ):
        seen = pool.map(fn, range(10))
    inits = check_once_per_worker(seen, log, at_most=2)  # every worker_exit was called
    failures = [r for r in caplog.records if "worker_exit" in r.getMessage()]
    assert len(failures) == len(inits)
    assert "close_state_then_fail raised RuntimeError" in failures[0].getMessage()
    assert failures[0].exc_info is not None


def test_a_failing_worker_exit_in_a_process_goes_to_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log"
    with Pool(
        2,
        start_method="fork",
        initializer=sh.open_state,
        initargs=(str(log),),
        worker_exit=sh.close_state_then_fail,
    ) as pool:
        seen = pool.map(sh.token, range(10), chunksize=1)
    inits = check_once_per_worker(seen, log, at_most=2)
    err = capfd.readouterr().err
    assert err.count("close_state_then_fail raised RuntimeError") == len(inits)
    assert "worker_exit refuses" in err


# -- worker_state() errors ------------------------------------------------------------------


def test_worker_state_outside_a_worker_says_where_to_call_it() -> None:
    with pytest.raises(RuntimeError, match="outside a worker: call it in a task"):
        workcrew.worker_state()


def test_worker_state_without_an_initializer_says_what_to_do(pool_kw: dict[str, Any]) -> None:
    with Pool(1, **pool_kw) as pool:
        message = pool.submit(sh.state_or_error).result(TIMEOUT)
    assert message.startswith("RuntimeError: ") and "this pool has no initializer" in message
    assert "initializer=" in message


def test_worker_state_without_an_initializer_on_the_async_kind() -> None:
    with Pool(2, kind="async") as pool:
        message = pool.submit(sh.astate_or_error).result(TIMEOUT)
    assert "this pool has no initializer" in message


@pytest.mark.parametrize("front", [Pool, Executor])
def test_worker_exit_must_be_callable(front: Any) -> None:
    with pytest.raises(TypeError, match="worker_exit must be callable"):
        front(1, kind="thread", worker_exit=42)


# -- context variables -----------------------------------------------------------------------

#: Every way to submit work to a Pool, each returning the values its tasks saw.
POOL_SHAPES: dict[str, Callable[[Pool, Any], list[Any]]] = {
    "submit": lambda pool, fn: [pool.submit(fn, 0).result(TIMEOUT)],
    "apply": lambda pool, fn: [pool.apply(fn, (0,))],
    "apply_async": lambda pool, fn: [pool.apply_async(fn, (0,)).get(TIMEOUT)],
    "map": lambda pool, fn: pool.map(fn, range(6)),
    "map_async": lambda pool, fn: pool.map_async(fn, range(6)).get(TIMEOUT),
    "imap": lambda pool, fn: list(pool.imap(fn, range(6))),
    "imap_unordered": lambda pool, fn: list(pool.imap_unordered(fn, range(6))),
    "starmap": lambda pool, fn: pool.starmap(fn, [(i,) for i in range(6)]),
    "starmap_async": lambda pool, fn: pool.starmap_async(fn, [(i,) for i in range(6)]).get(TIMEOUT),
    "asubmit": lambda pool, fn: [asyncio.run(pool.asubmit(fn, 0))],
}


def check_shapes(pool: Pool, fn: Any, expected: str) -> None:
    pool.map(fn, range(4))  # fork workers (and threads) before any variable is set
    seen = in_context(
        lambda: {name: run(pool, fn) for name, run in POOL_SHAPES.items()}, request_id=expected
    )
    for name, values in seen.items():
        assert values and set(values) == {expected}, name


def test_context_variables_reach_every_call_shape(pool_kw: dict[str, Any]) -> None:
    with Pool(2, **pool_kw) as pool:
        check_shapes(pool, sh.read_request_id, "req-7")
        assert pool.submit(sh.read_request_id).result(TIMEOUT) == sh.UNSET  # nothing stays behind


def test_context_variables_reach_executor_tasks(pool_kw: dict[str, Any]) -> None:
    def body(ex: Executor) -> list[str]:
        return [
            ex.submit(sh.read_request_id).result(TIMEOUT),
            *ex.map(sh.read_request_id, range(6)),
        ]

    with Executor(2, **pool_kw) as ex:
        list(ex.map(sh.read_request_id, range(4)))
        seen = in_context(lambda: body(ex), request_id="req-8")
    assert set(seen) == {"req-8"} and len(seen) == 7


@pytest.mark.parametrize("event_loop", ["asyncio", "auto"])  # auto: uvloop where installed
def test_context_variables_reach_coroutines_on_the_async_kind(event_loop: str) -> None:
    with Pool(4, kind="async", event_loop=event_loop) as pool:
        check_shapes(pool, sh.aread_request_id, "req-async")


@pytest.mark.parametrize(
    "fn", [sh.read_request_id, sh.aread_request_id], ids=["threads", "coroutines"]
)
def test_context_variables_reach_hybrid_workers(fn: Any) -> None:
    with Pool(2, start_method="fork", concurrency_per_worker=3) as pool:
        check_shapes(pool, fn, "req-hybrid")


def test_context_variables_reach_tasks_of_every_kind_auto_routes_to() -> None:
    def body(pool: Pool) -> list[str]:
        waiting = pool.map_async(sh.read_request_id, range(20))  # one probe, the rest waits
        pool.set_kind(sh.read_request_id, "process")  # decided by hand: the rest goes there
        return [*waiting.get(TIMEOUT), *pool.map(sh.aread_request_id, range(4))]

    with Pool(2, kind="auto", start_method="fork") as pool:
        seen = in_context(lambda: body(pool), request_id="req-auto")
        kinds = {choice.kind for choice in pool.kind_choices()}
    assert set(seen) == {"req-auto"} and len(seen) == 24
    assert kinds == {"process", "async"}


@pytest.mark.parametrize(
    ("pool_args", "fn"),
    [
        ({"kind": "thread"}, sh.read_then_set),
        ({"kind": "process", "start_method": "fork"}, sh.read_then_set),
        ({"kind": "process", "start_method": "spawn"}, sh.read_then_set),
        ({"kind": "async"}, sh.aread_then_set),
    ],
    ids=["thread", "process-fork", "process-spawn", "async"],
)
def test_a_tasks_own_set_leaks_neither_to_the_next_task_nor_to_the_caller(
    pool_args: dict[str, Any], fn: Any
) -> None:
    def body(pool: Pool) -> tuple[list[str], str, str]:
        seen = pool.map(fn, range(8), chunksize=4)  # one worker runs them one after another
        return seen, sh.request_id.get(), sh.user.get()

    with Pool(1, **pool_args) as pool:
        # The worker starts (forks) inside the context: it must not keep the values.
        seen, caller_request, caller_user = in_context(
            lambda: body(pool), request_id="req-1", user="alice"
        )
        later = pool.submit(sh.read_request_id if fn is sh.read_then_set else sh.aread_request_id)
        assert later.result(TIMEOUT) == sh.UNSET, "a later submission without variables saw some"
    assert seen == ["req-1"] * 8
    assert (caller_request, caller_user) == ("req-1", "alice")


@pytest.mark.parametrize(
    "pool_args",
    [{"kind": "thread"}, {"kind": "process", "start_method": "fork"}],
    ids=["thread", "process-fork"],
)
def test_callers_in_two_threads_each_see_their_own_values(pool_args: dict[str, Any]) -> None:
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    results: dict[int, list[str]] = {}

    def caller(i: int, pool: Pool) -> None:
        sh.request_id.set(f"thread-{i}")  # a new thread starts with an empty context
        barrier.wait()
        results[i] = pool.map(sh.read_request_id, range(30), chunksize=1)

    with Pool(2, **pool_args) as pool:
        threads = [threading.Thread(target=caller, args=(i, pool)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
    assert results == {i: [f"thread-{i}"] * 30 for i in range(2)}


def test_thread_workers_see_any_variable_and_any_value() -> None:
    local: contextvars.ContextVar[str] = contextvars.ContextVar("local")  # not module level
    lock = threading.Lock()

    def body(pool: Pool) -> tuple[str, str]:
        local.set("here")
        return pool.submit(sh.read_var, local).result(TIMEOUT), pool.submit(sh.read_handle).result(
            TIMEOUT
        )

    with Pool(1, kind="thread") as pool:
        assert in_context(lambda: body(pool), handle=lock) == ("here", "lock")


def test_variables_processes_cannot_get_are_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_carry, "_reported", set())
    local: contextvars.ContextVar[str] = contextvars.ContextVar("local_only")

    def body(pool: Pool) -> list[tuple[str, str]]:
        local.set("not module level")
        return [pool.submit(sh.read_both).result(TIMEOUT) for _ in range(3)] + [
            (pool.submit(sh.read_handle).result(TIMEOUT), "")
        ]

    with caplog.at_level(logging.INFO, logger="workcrew"), Pool(1, start_method="fork") as pool:
        pool.submit(sh.read_both).result(TIMEOUT)
        seen = in_context(lambda: body(pool), request_id="req-2", handle=threading.Lock())
    assert seen == [("req-2", "anonymous")] * 3 + [(sh.UNSET, "")]  # the lock stayed behind
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "'local_only'" in m]) == 1
    assert len([m for m in messages if "'handle'" in m]) == 1
    assert any("not defined at module level" in m for m in messages)
    assert any("does not pickle" in m for m in messages)


def test_the_decimal_context_reaches_threads_and_stays_quiet_for_processes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def body(thread_pool: Pool, process_pool: Pool) -> tuple[int, int]:
        decimal.getcontext().prec = 7  # Python keeps it in a context variable of its own
        return (
            thread_pool.submit(sh.decimal_precision).result(TIMEOUT),
            process_pool.submit(sh.decimal_precision).result(TIMEOUT),
        )

    with (
        caplog.at_level(logging.WARNING, logger="workcrew"),
        Pool(1, kind="thread") as thread_pool,
        Pool(1, start_method="fork") as process_pool,
    ):
        in_thread, in_process = in_context(lambda: body(thread_pool, process_pool))
    assert (in_thread, in_process) == (7, decimal.DefaultContext.prec)
    assert not caplog.records


@pytest.mark.parametrize("event_loop", ["asyncio", "auto"])
def test_a_timeout_cancels_a_coroutine_that_carries_variables(event_loop: str) -> None:
    with Pool(1, kind="async", task_timeout=0.2, event_loop=event_loop) as pool:
        future = in_context(lambda: pool.submit(sh.await_forever), request_id="req-3")
        with pytest.raises(workcrew.TaskTimeout):
            future.result(TIMEOUT)
        assert (
            in_context(lambda: pool.submit(sh.aread_request_id).result(TIMEOUT), request_id="x")
            == "x"
        )


def test_a_failing_tasks_traceback_starts_at_the_users_code(pool_kw: dict[str, Any]) -> None:
    with Pool(1, **pool_kw) as pool:
        future = in_context(lambda: pool.submit(sh.fail_with_request_id), request_id="req-4")
        with pytest.raises(ValueError, match="failed in request req-4") as info:
            future.result(TIMEOUT)
    text = "".join(traceback.format_exception(info.type, info.value, info.tb))
    assert "fail_with_request_id" in text
    assert "_carry.py" not in text


# -- the mechanism ------------------------------------------------------------------------------


def test_an_empty_context_adds_nothing_to_the_job() -> None:
    empty = contextvars.Context()
    assert empty.run(_carry.carry, sh.read_request_id) is sh.read_request_id


def test_a_carried_function_looks_like_the_users_and_survives_pickling() -> None:
    carried = in_context(lambda: _carry.carry(sh.read_request_id), request_id="req-5")
    carried_async = in_context(lambda: _carry.carry(sh.aread_request_id), request_id="req-5")
    assert not inspect.iscoroutinefunction(carried)
    assert inspect.iscoroutinefunction(carried_async)
    assert carried.__qualname__ == "state_helpers.read_request_id"
    assert carried() == "req-5" and sh.request_id.get(sh.UNSET) == sh.UNSET
    again = pickle.loads(cloudpickle.dumps(carried))  # what a process worker gets
    assert again(0) == "req-5"
    coro = pickle.loads(cloudpickle.dumps(carried_async))(0)
    assert inspect.iscoroutine(coro) and asyncio.run(coro) == "req-5"
    partial = functools.partial(sh.read_var, sh.request_id)
    carried_partial = in_context(lambda: _carry.carry(partial), request_id="req-6")
    assert pickle.loads(cloudpickle.dumps(carried_partial))() == "req-6"


def test_context_variables_pickle_by_reference_when_defined_at_module_level() -> None:
    assert pickle.loads(pickle.dumps(sh.request_id)) is sh.request_id
    with pytest.raises(TypeError, match="only context variables defined at module level"):
        pickle.dumps(contextvars.ContextVar("nowhere"))


def test_a_task_set_variable_does_not_reach_the_next_task(pool_kw: dict[str, Any]) -> None:
    # The caller's context holds no variables here: tasks run unwrapped.
    with workcrew.Pool(1, **pool_kw) as pool:
        assert pool.apply(sh.read_then_set, (1,)) == sh.UNSET
        assert pool.apply(sh.read_then_set, (2,)) == sh.UNSET
