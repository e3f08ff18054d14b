"""Start-up: what `import workcrew` loads, and the forkserver's preloaded worker code.

Each check runs in a fresh interpreter: what a program has imported, and which
forkserver it runs, is process-wide state the test session itself has changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TIMEOUT

SRC = str(Path(__file__).resolve().parent.parent / "src")
#: Loaded only when the feature that needs them is first used.
HEAVY = ("asyncio", "cloudpickle", "psutil", "tqdm", "numpy", "distributed", "threadpoolctl")


def run_fresh(code: str, *args: str) -> object:
    """Run ``code`` (or, with ``args``, a script) in a new interpreter; return its JSON line."""
    done = subprocess.run(
        [sys.executable, *(args or ("-c", code))],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


#: What a process worker does not import when it starts (every worker, and the
#: fork server, would pay for them): loaded where a feature or an error needs them.
NOT_IN_WORKERS = (
    *HEAVY,
    "typing",
    "inspect",
    "dataclasses",
    "ctypes",
    "concurrent.futures",
    "multiprocessing.connection",
    "workcrew._core._exceptions",
)


@pytest.mark.parametrize(
    "statement",
    ["import workcrew", "from workcrew import Pool", "from workcrew import Executor"],
)
def test_importing_loads_no_heavy_module(statement: str) -> None:
    report = f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    loaded = run_fresh(f"{statement}\nimport json, sys\n{report}")
    assert loaded == [], f"`{statement}` loaded {loaded}"


def test_the_worker_s_code_imports_nothing_a_worker_can_do_without() -> None:
    report = f"print(json.dumps([m for m in {NOT_IN_WORKERS!r} if m in sys.modules]))"
    loaded = run_fresh(f"import workcrew._backends._process_worker\nimport json, sys\n{report}")
    assert loaded == []


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="lazy annotations: typing's own names")
def test_from_workcrew_import_pool_loads_no_dataclasses_inspect_nor_typing() -> None:
    wanted = ("dataclasses", "inspect", "typing")
    report = f"print(json.dumps([m for m in {wanted!r} if m in sys.modules]))"
    assert run_fresh(f"from workcrew import Pool\nimport json, sys\n{report}") == []


def test_the_typing_stand_ins_make_what_typing_makes() -> None:
    from workcrew._core import _typing

    class Record(_typing.NamedTuple):
        """A record."""

        name: str
        size: int = 1

        def double(self) -> int:
            return self.size * 2

    record = Record("a")
    assert (record, record.double(), Record.__doc__) == (("a", 1), 2, "A record.")
    assert record._replace(size=3) == Record("a", 3) and Record._fields == ("name", "size")
    assert Record.__qualname__.endswith("<locals>.Record")
    with pytest.raises(TypeError, match="without a default follows"):

        class Bad(_typing.NamedTuple):
            first: int = 0
            second: int

    with pytest.raises(AttributeError, match="cannot overwrite NamedTuple attribute _replace"):

        class Overwrites(_typing.NamedTuple):
            name: str

            def _replace(self) -> None: ...

    class Box(_typing.Generic[_typing.TypeVar("T")]):  # type: ignore[misc]
        pass

    assert Box[int].__origin__ is Box and Box[int].__args__ == (int,)


def test_import_workcrew_loads_no_front_end_until_one_is_used() -> None:
    loaded = run_fresh(
        "import json, sys, workcrew\n"
        "before = 'workcrew._front._pool' in sys.modules\n"
        "workcrew.Pool\n"
        "after = 'workcrew._front._pool' in sys.modules\n"
        "print(json.dumps([before, after, workcrew.Pool.__module__]))"
    )
    assert loaded == [False, True, "workcrew"]


PRELOADED = """
import json, os
import workcrew

def where_imported(_):
    from workcrew._backends import _process_worker
    return _process_worker.IMPORTED_BY, os.getpid()

if __name__ == "__main__":
    with workcrew.Pool(1, start_method="forkserver") as pool:
        imported_by, worker = pool.apply(where_imported, (0,))
    print(json.dumps([imported_by, worker, os.getpid()]))
"""


def test_forkserver_workers_start_with_the_worker_code_preloaded(tmp_path: Path) -> None:
    script = tmp_path / "preloaded.py"
    script.write_text(PRELOADED)
    imported_by, worker, caller = run_fresh(
        f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')"
    )  # type: ignore[misc]
    # Imported neither by the worker nor by the caller: by the forkserver, once.
    assert imported_by not in (worker, caller)


CALLER_MODULES = """
import json, sys
import workcrew

def square(x):
    return x * x

if __name__ == "__main__":
    with workcrew.Pool(2, start_method="forkserver") as pool:
        assert pool.apply(square, (7,)) == 49
    print(json.dumps(["multiprocessing.connection" in sys.modules, "tempfile" in sys.modules]))
"""


def test_a_forkserver_pool_loads_no_connection_machinery_in_the_caller(tmp_path: Path) -> None:
    # The caller imports while the server boots, on a machine that may have
    # one core free: what it need not load (multiprocessing.connection and its
    # tempfile, shutil, random, bz2, lzma) would delay the first worker there.
    script = tmp_path / "caller_modules.py"
    script.write_text(CALLER_MODULES)
    assert run_fresh("", str(script)) == [False, False]
