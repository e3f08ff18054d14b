"""The public surface: __all__, docstrings, public module paths, and the layering rule."""

from __future__ import annotations

import ast
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


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_core_imports_nothing_outside_core() -> None:
    for path in (PACKAGE / "_core").glob("*.py"):
        for module in _imports(path):
            assert not module.startswith(".."), f"{path.name} imports {module}"
            assert not module.startswith("workcrew"), f"{path.name} imports {module}"


def test_sharing_imports_only_core() -> None:
    for path in (PACKAGE / "_sharing").glob("*.py"):
        for module in _imports(path):
            if module.startswith(".."):
                assert module.startswith(".._core"), f"{path.name} imports {module}"
            assert not module.startswith("workcrew"), f"{path.name} imports {module}"


def test_backends_import_only_core_and_sharing() -> None:
    for path in (PACKAGE / "_backends").glob("*.py"):
        for module in _imports(path):
            if module.startswith(".."):
                assert module.startswith((".._core", ".._sharing")), f"{path.name} imports {module}"


def test_displays_know_nothing_of_the_engine() -> None:
    for name in ("_progress.py", "_timeline.py"):
        for module in _imports(PACKAGE / name):
            assert not module.startswith(("workcrew", ".")), f"{name} imports {module}"


def test_edges_use_only_the_public_api() -> None:
    for name in ("_cli.py", "_demo.py", "_advise.py", "_run.py", "_mapcmd.py"):
        for module in _imports(PACKAGE / name):
            allowed = module in {"workcrew", "._demo", "._cli", "._advise", "._run", "._mapcmd"}
            assert allowed or not module.startswith(("workcrew.", ".")), f"{name} imports {module}"
