"""joblib's backends side by side: workcrew's, loky (joblib's default) and threading.

Two workloads a joblib user runs: a small scikit-learn grid search (dozens of
fits of tens of milliseconds) and many tiny ``delayed`` calls.  Each backend
runs the same calls in the same process, warm (a first untimed call starts its
workers), best of the repeats; results are checked equal across backends.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from common import BenchmarkError, Result, progress, square

N_JOBS = 2
TINY_CALLS = 100_000
BACKENDS = (("workcrew", True), ("loky", False), ("threading", False))


def _grid_search() -> Callable[[], Any]:
    from sklearn.datasets import make_classification
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = make_classification(n_samples=1500, n_features=20, random_state=0)
    grid = {"C": [0.1, 0.3, 1.0, 3.0, 10.0, 30.0], "gamma": ["scale", 0.01]}

    def run() -> Any:
        search = GridSearchCV(SVC(), grid, cv=4)
        return search.fit(X, y).cv_results_["mean_test_score"].round(12).tolist()

    return run


def _tiny_calls() -> Any:
    from joblib import Parallel, delayed

    return Parallel()(delayed(square)(i) for i in range(TINY_CALLS))


def _interleaved(run: Callable[[], Any], repeats: int) -> dict[str, tuple[float, Any]]:
    """Best wall time and result per backend, the backends taking turns in each round.

    Turns rather than one backend's repeats after another's: a shared
    machine's slow minute then falls on all of them alike.  Each backend's
    first call is an untimed warm-up (its workers start, modules load in them);
    the backends keep their workers between calls (loky's executor, workcrew's
    idle pool).
    """
    from joblib import parallel_config

    best: dict[str, tuple[float, Any]] = {}
    for backend, _ in BACKENDS:
        with parallel_config(backend=backend, n_jobs=N_JOBS):
            best[backend] = (float("inf"), run())
    for _ in range(repeats):
        for backend, _ in BACKENDS:
            with parallel_config(backend=backend, n_jobs=N_JOBS):
                # Each call starts from the same collector state: joblib's
                # 100,000 delayed() calls set off two or three full garbage
                # collections of a heap holding scikit-learn (~35 ms each), and
                # whether a third fell inside a call depended on the garbage
                # the backend before it had left (a 10% swing either way).
                gc.collect()
                start = time.perf_counter()
                result = run()
                seconds = time.perf_counter() - start
            if result != best[backend][1]:
                raise BenchmarkError(f"joblib {backend}: results differ between runs")
            best[backend] = (min(best[backend][0], seconds), result)
    return best


def bench_joblib(repeats: int, quick: bool) -> tuple[str, list[str], list[Result], list[str]]:
    """Fits per second of a grid search, and tiny calls per second, per joblib backend."""
    import workcrew.joblib

    fits = 12 * 4
    rows: list[Result] = []
    for section, run, count in (
        ("grid search, fits/s", _grid_search(), fits),
        ("tiny delayed calls, calls/s", _tiny_calls, TINY_CALLS),
    ):
        best = _interleaved(run, 4 * repeats)
        expected = best["workcrew"][1]
        for backend, ours in BACKENDS:
            seconds, result = best[backend]
            if result != expected:
                raise BenchmarkError(f"joblib {backend}: {section} results differ from workcrew's")
            rows.append(Result(f"{section}: backend={backend!r}", count / seconds, ours))
            progress(f"joblib {section} {backend}: {count / seconds:,.1f}")
    workcrew.joblib.shutdown()
    notes = [
        f"`parallel_config(backend=..., n_jobs={N_JOBS})`, joblib's default batching. Grid "
        f"search: scikit-learn `GridSearchCV(SVC(), 12 candidates, cv=4)` on 1,500 x 20 "
        f"samples ({fits} fits of tens of milliseconds), fits per second. Tiny calls: "
        f"`Parallel()(delayed(square)(i) for i in range({TINY_CALLS:,}))`, calls per second. "
        f"Warm backends (a first call starts the workers), taking turns, a full garbage "
        f"collection before each (untimed: the garbage of the backend before must not fall "
        f"on the next), best of {4 * repeats} each; results checked equal across backends.",
    ]
    return "joblib backends: scikit-learn grid search and tiny calls", ["per second"], rows, notes
