"""The public surface: __all__, docstrings, public module paths (layering: test_layering.py)."""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path

import workcrew

PACKAGE = Path(workcrew.__file__).parent


def test_all_names_exist_are_documented_and_public() -> None:
    for name in workcrew.__all__:
        obj = getattr(workcrew, name)
        assert inspect.getdoc(obj), f"{name} has no docstring"
        assert obj.__module__ == "workcrew", f"{name}.__module__ is {obj.__module__}"
    public = {n for n in dir(workcrew) if not n.startswith("_")}
    assert public - set(workcrew.__all__) == set()


def test_public_methods_have_docstrings() -> None:
    for name in ("Pool", "Executor", "AsyncResult", "IMapIterator"):
        cls = getattr(workcrew, name)
        for attr, member in vars(cls).items():
            if not attr.startswith("_") and callable(member):
                assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


def test_errors_pickle_and_catch_as_stdlib_types() -> None:
    import concurrent.futures
    import multiprocessing

    crash = workcrew.WorkerCrashed("gone", worker_id=3, pid=42, exitcode=-9)
    again = pickle.loads(pickle.dumps(crash))
    assert (str(again), again.worker_id, again.pid, again.exitcode) == ("gone", 3, 42, -9)
    timeout = pickle.loads(pickle.dumps(workcrew.TimeoutError("late")))
    assert isinstance(timeout, multiprocessing.TimeoutError)
    assert isinstance(timeout, concurrent.futures.TimeoutError)
    assert issubclass(workcrew.PoolClosedError, ValueError)
    assert issubclass(workcrew.PoolClosedError, RuntimeError)
    assert issubclass(workcrew.InitializerError, workcrew.BrokenPoolError)
