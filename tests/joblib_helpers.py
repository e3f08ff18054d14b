"""Tasks and estimators for tests/test_joblib.py, importable by workers of every start method."""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from helpers import segfault, square, worker_pid


def crash_on(x: int, bad: int) -> int:
    """Exit the worker abruptly (no exception, no cleanup) on ``bad``."""
    if x == bad:
        os._exit(9)
    return x


def stuck_on(x: int, bad: int) -> int:
    """Block forever on ``bad`` (an event nobody sets): only a timeout ends it."""
    if x == bad:
        threading.Event().wait()
    return x


def inner_backend(x: int) -> tuple[str, int]:
    """What a Parallel call inside a task runs on, and its result."""
    from joblib import Parallel, delayed
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    total = sum(Parallel(n_jobs=2)(delayed(square)(i) for i in range(x)))
    return type(backend).__name__, total


class CrashingClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A nearest-centroid classifier whose ``fit`` segfaults when ``crash`` is true.

    The crash is a real SIGSEGV (a read of address 0), as a buggy extension
    would raise, not a Python exception.
    """

    def __init__(self, shrink: float = 0.0, crash: bool = False) -> None:
        self.shrink = shrink
        self.crash = crash

    def fit(self, X: np.ndarray, y: np.ndarray) -> CrashingClassifier:
        if self.crash:
            segfault()
        self.classes_ = np.unique(y)
        centroids = np.array([X[y == c].mean(axis=0) for c in self.classes_])
        self.centroids_ = centroids * (1.0 - self.shrink)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        distances = ((X[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        return self.classes_[distances.argmin(axis=1)]


def nested_on(backend: str) -> tuple[bool, list[str]]:
    """A Parallel call on ``backend`` inside a task: whether it ran right here, its warnings."""
    from joblib import Parallel, delayed

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inner = Parallel(n_jobs=2, backend=backend)(delayed(worker_pid)(i) for i in range(3))
    said = [str(w.message) for w in caught if w.category is UserWarning]
    return set(inner) == {os.getpid()}, said


def env_of(name: str) -> str | None:
    return os.environ.get(name)


def send_nested_on(backend: str, conn: Any) -> None:
    """:func:`nested_on` in a child process, its answer sent on ``conn``."""
    import workcrew.joblib

    try:
        conn.send(nested_on(backend))
    except Exception as exc:  # noqa: BLE001 - the test reads what went wrong
        conn.send(repr(exc))
    finally:
        workcrew.joblib.shutdown()
