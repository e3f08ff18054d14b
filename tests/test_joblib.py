"""workcrew as joblib's backend: joblib's behaviour kept, workcrew's crash isolation added.

scikit-learn runs here for real (GridSearchCV, cross_val_score, a random
forest): the same results under ``backend="workcrew"`` as under loky, and a
grid search whose one candidate segfaults scores it NaN and finishes.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
import shutil
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from joblib import Parallel, delayed, parallel_config
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score

import helpers
import joblib_helpers as jh
import workcrew
import workcrew.joblib
from helpers import TIMEOUT

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def idle_pools_closed() -> Iterator[None]:
    """The backend keeps pools between calls; each test closes them (the leak check follows)."""
    yield
    workcrew.joblib.shutdown()


def test_results_in_order_and_generators(pool_kw: dict[str, object]) -> None:
    with parallel_config(backend="workcrew", n_jobs=2, **pool_kw):
        assert Parallel()(delayed(helpers.square)(i) for i in range(50)) == [
            i * i for i in range(50)
        ]
        lazy = Parallel(return_as="generator")(delayed(helpers.square)(i) for i in range(20))
        assert list(lazy) == [i * i for i in range(20)]
        unordered = Parallel(return_as="generator_unordered")(
            delayed(helpers.square)(i) for i in range(20)
        )
        assert sorted(unordered) == [i * i for i in range(20)]


def test_tasks_run_in_the_workers_of_the_kind(pool_kw: dict[str, object]) -> None:
    with parallel_config(backend="workcrew", n_jobs=2, **pool_kw):
        pids = set(Parallel(batch_size=1)(delayed(helpers.worker_pid)(i) for i in range(20)))
    if pool_kw["kind"] == "thread":
        assert pids == {os.getpid()}
    else:
        assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_successive_calls_reuse_the_pool() -> None:
    with parallel_config(backend="workcrew", n_jobs=2):
        first = set(Parallel(batch_size=1)(delayed(helpers.worker_pid)(i) for i in range(20)))
        second = set(Parallel(batch_size=1)(delayed(helpers.worker_pid)(i) for i in range(20)))
    assert second <= first  # the same workers: no second start-up


def test_a_crash_fails_its_call_alone_and_the_next_call_runs(start_method: str) -> None:
    with parallel_config(backend="workcrew", n_jobs=2, start_method=start_method):
        with pytest.raises(workcrew.WorkerCrashed, match=r"crash_on\(3, 3\)"):
            Parallel(batch_size=1)(delayed(jh.crash_on)(i, 3) for i in range(8))
        assert Parallel()(delayed(helpers.square)(i) for i in range(10)) == [
            i * i for i in range(10)
        ]


def test_a_stuck_call_times_out_and_the_next_call_runs() -> None:
    with parallel_config(backend="workcrew", n_jobs=2, task_timeout=3.0):
        with pytest.raises(workcrew.TaskTimeout):
            Parallel()(delayed(jh.stuck_on)(i, 2) for i in range(4))
        assert Parallel()(delayed(helpers.square)(i) for i in range(10)) == [
            i * i for i in range(10)
        ]


def test_retries_rerun_a_failed_call(tmp_path: Path) -> None:
    log = str(tmp_path / "calls")
    with parallel_config(backend="workcrew", n_jobs=2, retries=1, retry_on=ValueError):
        assert Parallel()(delayed(helpers.flaky)(log, 1) for _ in range(1)) == [2]  # 2nd call


def test_a_user_error_is_raised_as_itself() -> None:
    with parallel_config(backend="workcrew", n_jobs=2):
        with pytest.raises(ValueError, match="bad input 3"):
            Parallel(batch_size=1)(delayed(helpers.fail_on)(i) for i in [3])
        assert Parallel()(delayed(helpers.square)(i) for i in range(4)) == [0, 1, 4, 9]


def test_n_jobs_follows_joblib() -> None:
    backend = workcrew.joblib.WorkcrewBackend()
    assert backend.effective_n_jobs(-1) == workcrew.available_cpu_count()
    assert backend.effective_n_jobs(None) == 1
    with pytest.raises(ValueError, match="n_jobs == 0"):
        backend.effective_n_jobs(0)
    with parallel_config(backend="workcrew", n_jobs=1):  # joblib's rule: runs in the caller
        assert Parallel()(delayed(helpers.worker_pid)(i) for i in range(3)) == [os.getpid()] * 3


def test_nested_calls_use_threads_inside_a_worker() -> None:
    with parallel_config(backend="workcrew", n_jobs=2):
        results = Parallel()(delayed(jh.inner_backend)(x) for x in (3, 4))
    assert results == [("ThreadingBackend", 5), ("ThreadingBackend", 14)]


def test_named_inside_its_own_workers_and_below_a_multiprocessing_pool() -> None:
    # In a workcrew worker the backend is registered (its task function comes
    # from workcrew.joblib); in a multiprocessing worker (daemonic, inherits the
    # caller's idle pools by fork) it runs the calls there, with a warning.
    with parallel_config(backend="workcrew", n_jobs=2):
        inside_workcrew = Parallel()(delayed(jh.nested_on)("workcrew") for _ in range(2))
    assert inside_workcrew == [(False, [])] * 2  # a pool of its own in the worker
    Parallel(n_jobs=2, backend="workcrew")(
        delayed(helpers.square)(i) for i in range(4)
    )  # idle pool
    # A forked child inherits that idle pool (none of its threads or workers): it must not use it.
    fork = multiprocessing.get_context("fork")
    receive, send = fork.Pipe(duplex=False)
    child = fork.Process(target=jh.send_nested_on, args=("workcrew", send))
    child.start()
    send.close()
    assert receive.poll(TIMEOUT) and receive.recv() == (False, [])
    child.join(TIMEOUT)
    assert child.exitcode == 0
    with parallel_config(backend="multiprocessing", n_jobs=2):
        inside_daemon = Parallel()(delayed(jh.nested_on)("workcrew") for _ in range(2))
    for ran_here, said in inside_daemon:  # n_jobs=1: in the daemonic worker itself
        assert ran_here and len(said) == 1 and "daemonic process" in said[0]


def test_a_call_after_an_environment_change_sees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with parallel_config(backend="workcrew", n_jobs=2):
        assert Parallel()(delayed(jh.env_of)("OMP_NUM_THREADS") for _ in range(2)) != ["4"] * 2
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
        assert Parallel()(delayed(jh.env_of)("OMP_NUM_THREADS") for _ in range(2)) == ["4"] * 2


def test_prefer_threads_and_require_sharedmem() -> None:
    with parallel_config(backend="workcrew", n_jobs=2):
        pids = Parallel(prefer="threads")(delayed(helpers.worker_pid)(i) for i in range(4))
        assert set(pids) == {os.getpid()}
        shared: list[int] = []
        Parallel(require="sharedmem")(delayed(shared.append)(i) for i in range(4))
        assert sorted(shared) == [0, 1, 2, 3]


def test_progress_lines(capfd: pytest.CaptureFixture[str]) -> None:
    with parallel_config(backend="workcrew", n_jobs=2, progress="plain"):
        Parallel()(delayed(helpers.square)(i) for i in range(30))
    assert re.search(r"joblib: 30 tasks", capfd.readouterr().err)


def test_bad_options_say_what_is_accepted() -> None:
    unknown = r"unknown option\(s\) procesess: it takes workcrew.Pool's options \(.*task_timeout"
    with pytest.raises(TypeError, match=unknown):
        parallel_config(backend="workcrew", procesess=2)
    with pytest.raises(ValueError, match="progress='yes' is invalid"):
        parallel_config(backend="workcrew", progress="yes")
    with (
        pytest.raises(ValueError, match="kind"),
        parallel_config(backend="workcrew", n_jobs=2, kind="gpu"),
    ):
        Parallel()(delayed(helpers.square)(i) for i in range(2))


# -- scikit-learn --


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=200, n_features=6, random_state=0)  # type: ignore[no-any-return]


def _on(backend: str, run: object) -> object:
    with parallel_config(backend=backend, n_jobs=2):
        return run()  # type: ignore[operator]


@pytest.fixture
def loky_stopped() -> Iterator[None]:
    """loky keeps its executor for the process's life: stop it before the leak check."""
    yield
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor  # private: loky has no public "stop yours"
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)
    # joblib leaves some of its memory-mapping folders to loky's resource
    # tracker, which deletes them when this process exits: delete ours now.
    for folder in Path("/dev/shm").glob(f"joblib_memmapping_folder_{os.getpid()}_*"):
        shutil.rmtree(folder, ignore_errors=True)


def test_scikit_learn_gives_the_same_results_as_under_loky(
    data: tuple[np.ndarray, np.ndarray], loky_stopped: None
) -> None:
    X, y = data

    def search() -> object:
        grid = GridSearchCV(LogisticRegression(max_iter=500), {"C": [0.01, 0.1, 1.0]}, cv=3)
        return grid.fit(X, y).cv_results_["mean_test_score"].tolist()

    def scores() -> object:
        return cross_val_score(LogisticRegression(max_iter=500), X, y, cv=4).tolist()

    def forest() -> object:
        model = RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=2)
        return model.fit(X, y).predict_proba(X).tolist()

    for run in (search, scores, forest):
        assert _on("workcrew", run) == _on("loky", run)


def test_a_grid_search_whose_one_candidate_segfaults_scores_it_nan(
    data: tuple[np.ndarray, np.ndarray], start_method: str
) -> None:
    X, y = data
    grid = GridSearchCV(
        jh.CrashingClassifier(),
        {"shrink": [0.0, 0.5], "crash": [False, True]},
        cv=3,
        error_score=np.nan,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with parallel_config(backend="workcrew", n_jobs=2, start_method=start_method):
            grid.fit(X, y)
    failed = [str(w.message) for w in caught if issubclass(w.category, FitFailedWarning)]
    assert len(failed) == 1 and "6 fits failed out of a total of 12" in failed[0]
    assert "WorkerCrashed: CrashingClassifier.fit crashed its process (exit code -11" in failed[0]
    scores = grid.cv_results_["mean_test_score"]
    crashed = np.array([params["crash"] for params in grid.cv_results_["params"]])
    assert np.isnan(scores[crashed]).all()
    assert not np.isnan(scores[~crashed]).any()


def test_callbacks_run_in_order_on_a_thread_of_the_call_not_the_pool_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # joblib's callback dispatches the next batch (its iterator may be slow):
    # while one callback is busy, the pool still settles other results.
    backend = workcrew.joblib.WorkcrewBackend(kind="thread")
    backend.configure(n_jobs=2)
    backend.start_call()
    busy, release = threading.Event(), threading.Event()
    ran: list[tuple[str, str]] = []

    def first(future: object) -> None:
        ran.append(("first", threading.current_thread().name))
        busy.set()
        assert release.wait(TIMEOUT)

    def broken(future: object) -> None:
        ran.append(("broken", threading.current_thread().name))
        raise RuntimeError("a callback that fails")

    def last(future: object) -> None:
        ran.append(("last", threading.current_thread().name))

    try:
        # a batch returns the list of its calls' results
        one = backend.submit(functools.partial(list, range(1)), first)
        assert busy.wait(TIMEOUT)
        two = backend.submit(functools.partial(list, range(2)), broken)
        assert two.result(TIMEOUT) == [0, 1]  # settled before the next: its callback runs first
        three = backend.submit(functools.partial(list, range(3)), last)
        # settled by the pool while the first callback still runs
        assert [f.result(TIMEOUT) for f in (one, two, three)] == [[0], [0, 1], [0, 1, 2]]
        assert [name for name, _ in ran] == ["first"]  # the others wait their turn
    finally:
        release.set()
        backend.stop_call()  # waits for the queued callbacks
        backend.terminate()
    assert [name for name, _ in ran] == ["first", "broken", "last"]
    assert {thread for _, thread in ran} == {"workcrew-joblib-callbacks"}
    logged = [r for r in caplog.records if r.name == "workcrew.joblib"]
    assert len(logged) == 1  # logged, as concurrent.futures does
    assert "a callback that fails" in caplog.text
    assert backend._tally.done == 6  # the backend's own callback counted every call


def test_a_callback_of_a_call_that_has_ended_runs_where_its_future_settles() -> None:
    from workcrew.joblib import _Callbacks

    callbacks = _Callbacks()
    ran: list[str] = []
    future: Future[int] = Future()
    callbacks.put(future, (lambda f: ran.append(threading.current_thread().name),))
    callbacks.close()  # runs what was queued, on its thread
    callbacks.put(future, (lambda f: ran.append(threading.current_thread().name),))
    assert ran == ["workcrew-joblib-callbacks", threading.current_thread().name]
