"""Functions of ``__main__`` travel by value without cloudpickle, exactly as cloudpickle sends them.

``_pickling.dumps_function`` pickles them with the standard pickler plus one
reducer; these tests hold it to cloudpickle's behaviour (what a copy computes,
the attributes it keeps, the globals it reads and shares) and check that a
program whose functions need nothing more never loads cloudpickle, in the
caller, the fork server or a worker.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import helpers
import workcrew
from test_startup import run_fresh
from workcrew._core import _pickling
from workcrew._core._pickling import dumps_function

#: A module run as ``__main__`` (its functions name ``__main__`` as their module).
MAIN = '''
import os
import xml.etree.ElementTree
from math import floor

N = 3
CONFIG = {"k": 2}
COUNT = 0


def helper(x):
    return x + N


def compute(x: int, y: int = 2, *, z: int = 1) -> int:
    """Doc."""
    return helper(x) * CONFIG["k"] + floor(1.5) + y + z + len(os.sep)


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)


def is_even(n):
    return True if n == 0 else is_odd(n - 1)


def is_odd(n):
    return False if n == 0 else is_even(n - 1)


def make_scaler(k):
    def scale(x):
        return x * k

    return scale


squares = lambda n: [i * i * N for i in range(n)]


def parse(text):
    return xml.etree.ElementTree.fromstring(text).tag


def bump(x):
    global COUNT
    COUNT += x
    return COUNT


class Point:
    pass


def uses_class(_):
    return type(Point()).__name__
'''


def main_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(MAIN, "<main>", "exec"), namespace)
    namespace["CONFIG"]["k"] = 10  # changed after definition: a copy reads it when pickled
    namespace["compute"].tag = "kept"  # a function attribute travels too
    return namespace


CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("compute", (1,)),
    ("fact", (6,)),
    ("is_even", (7,)),
    ("squares", (4,)),
    ("parse", ("<tag/>",)),
]


@pytest.mark.parametrize(("name", "args"), CALLS)
def test_a_copy_computes_what_the_function_and_cloudpickle_s_copy_compute(
    name: str, args: tuple[Any, ...]
) -> None:
    fn = main_namespace()[name]
    blob = dumps_function(fn)
    assert b"cloudpickle" not in blob  # nothing of cloudpickle is needed to load it
    copy = pickle.loads(blob)
    assert copy is not fn
    assert copy(*args) == fn(*args) == cloudpickle.loads(cloudpickle.dumps(fn))(*args)


def test_a_copy_keeps_the_function_s_names_defaults_doc_annotations_and_attributes() -> None:
    fn = main_namespace()["compute"]
    copy = pickle.loads(dumps_function(fn))
    for attribute in (
        "__name__",
        "__qualname__",
        "__module__",
        "__doc__",
        "__defaults__",
        "__kwdefaults__",
        "__annotations__",
        "__dict__",
    ):
        assert getattr(copy, attribute) == getattr(fn, attribute), attribute
    assert copy(1, 5, z=7) == fn(1, 5, z=7)


def test_a_closure_travels_with_its_cells() -> None:
    scale = main_namespace()["make_scaler"](7)
    copy = pickle.loads(dumps_function(scale))
    assert scale.__closure__ is not None and copy.__closure__ is not None
    assert copy(3) == 21 and copy.__closure__[0] is not scale.__closure__[0]


def test_functions_of_one_pickle_share_new_globals_as_cloudpickle_s_do() -> None:
    namespace = main_namespace()
    copy = pickle.loads(dumps_function(namespace["is_even"]))
    odd = copy.__globals__["is_odd"]
    assert odd.__globals__ is copy.__globals__ and odd.__globals__["is_even"] is copy
    assert copy.__globals__ is not namespace
    # Only what the code names is copied (and the module's identity).
    assert "helper" not in copy.__globals__ and copy.__globals__["__name__"] == "__main__"


def test_a_global_the_copy_writes_is_its_own_as_with_cloudpickle() -> None:
    namespace = main_namespace()
    ours = pickle.loads(dumps_function(namespace["bump"]))
    theirs = cloudpickle.loads(cloudpickle.dumps(namespace["bump"]))
    assert [ours(2), ours(3)] == [theirs(2), theirs(3)] == [2, 5]
    assert namespace["COUNT"] == 0


def test_a_module_the_function_reaches_through_its_package_is_imported_with_it() -> None:
    fn = main_namespace()["parse"]
    named, _cells, _attributes, _extra, reached = _by_value_state(fn)
    assert named["xml"] is __import__("xml")
    assert {module.__name__ for module in reached} >= {"xml.etree", "xml.etree.ElementTree"}


def _by_value_state(fn: types.FunctionType) -> tuple[Any, ...]:
    reduced = _pickling._ByValuePickler(__import__("io").BytesIO())._reduce_function(fn)
    state: tuple[Any, ...] = reduced[2]
    return state


def test_a_class_of_main_sends_its_function_to_cloudpickle_which_rebuilds_it() -> None:
    fn = main_namespace()["uses_class"]
    blob = dumps_function(fn)
    assert b"cloudpickle" in blob and pickle.loads(blob)(0) == "Point"


def test_importable_functions_travel_by_reference() -> None:
    blob = dumps_function(helpers.square)
    assert pickle.loads(blob) is helpers.square and b"helpers" in blob


def test_a_module_registered_with_cloudpickle_by_value_is_pickled_by_cloudpickle() -> None:
    cloudpickle.register_pickle_by_value(helpers)
    try:
        blob = dumps_function(helpers.square)
    finally:
        cloudpickle.unregister_pickle_by_value(helpers)
    copy = pickle.loads(blob)
    assert copy is not helpers.square and copy(5) == 25 and b"cloudpickle" in blob


def test_bound_methods_travel_as_cloudpickle_sends_them() -> None:
    scaler = helpers.Scaler(3)
    public = dumps_function(scaler.scale)
    assert b"cloudpickle" not in public and pickle.loads(public)(2) == 6
    # A private method's name is mangled on the object: the standard pickler
    # would look up "__scale" there; the function itself travels instead.
    private = dumps_function(scaler.private())
    assert pickle.loads(private)(5) == 15


def test_a_private_method_runs_in_a_process_worker(start_method: str) -> None:
    with workcrew.Pool(1, start_method=start_method) as pool:
        assert pool.map(helpers.Scaler(4).private(), [1, 2]) == [4, 8]


def test_only_the_globals_the_code_reads_travel() -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("data = bytes(10**6)\ndef attribute(x):\n    return x.data\n", namespace)
    blob = dumps_function(namespace["attribute"])
    copy = pickle.loads(blob)
    assert len(blob) < 10_000 and "data" not in copy.__globals__
    assert copy(types.SimpleNamespace(data=7)) == 7


def _functions_of(*modules: types.ModuleType) -> list[types.FunctionType]:
    found = []
    for module in modules:
        for value in vars(module).values():
            members = vars(value).values() if isinstance(value, type) else [value]
            found += [f for f in members if isinstance(f, types.FunctionType)]
    return found


def test_the_globals_found_are_those_cloudpickle_finds() -> None:
    import argparse
    import json.decoder
    import textwrap

    from cloudpickle.cloudpickle import _extract_code_globals

    functions = [
        *_functions_of(argparse, json.decoder, textwrap, _pickling),
        *(f for f in main_namespace().values() if isinstance(f, types.FunctionType)),
    ]
    assert len(functions) > 150
    for fn in functions:
        ours = _pickling._global_names(fn.__code__)
        assert list(ours) == list(_extract_code_globals(fn.__code__)), fn.__qualname__


def test_the_opcodes_known_for_this_python_are_those_of_its_opcode_module() -> None:
    # The scan reads them from a table, to spare the first pool opcode's import.
    assert _pickling.OPCODES[sys.version_info[:2]] == _pickling.read_opcodes()


def test_a_type_variable_of_main_goes_to_cloudpickle_as_its_classes_do() -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("from typing import TypeVar\nT = TypeVar('T')\ndef which():\n    return T\n", namespace)
    blob = dumps_function(namespace["which"])
    assert b"cloudpickle" in blob and pickle.loads(blob)().__name__ == "T"


def test_a_function_pickled_by_another_python_says_so() -> None:
    with pytest.raises(pickle.UnpicklingError, match=r"pickled by Python 2\.7 .* caller's Python"):
        _pickling._make_function(b"", {}, "f", 0, (2, 7))


#: A program whose functions are defined in ``__main__``, some only in its
#: main block (the workers' copy of the module does not define those).
PROGRAM = """
import json, sys
import workcrew

N = 3
CONFIG = {"k": 2}


def helper(x):
    return x + N


def compute(x):
    return helper(x) * CONFIG["k"]


def cloudpickle_loaded(_):
    return "cloudpickle" in sys.modules


if __name__ == "__main__":
    import xml.etree.ElementTree  # only here: it travels with the function that uses it

    CONFIG["k"] = 10  # the workers' copy of the module says 2: the function's copy says 10

    def parse(text):
        return xml.etree.ElementTree.fromstring(text).tag

    with workcrew.Pool(2, start_method=sys.argv[1]) as pool:
        out = [
            pool.map(compute, [1, 2]),
            pool.map(parse, ["<a/>"]),
            pool.map(lambda x: x * N, [2]),
            any(pool.map(cloudpickle_loaded, range(4), chunksize=1)),
            "cloudpickle" in sys.modules,
        ]
    print(json.dumps(out))
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_program_s_own_functions_run_with_no_cloudpickle_anywhere(
    method: str, tmp_path: Path
) -> None:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    assert run_fresh("", str(script), method) == [[40, 50], ["a"], [6], False, False]


#: Once the program has loaded cloudpickle, the fork server imports it, so that
#: the workers forked after that start with it.
SERVER_IMPORTS = """
import json, sys
import workcrew


def cloudpickle_loaded(_):
    return "cloudpickle" in sys.modules


if __name__ == "__main__":
    out = []
    for step in range(2):
        if step == 1:
            import cloudpickle  # as when some function needed it
        with workcrew.Pool(1, start_method="forkserver") as pool:
            out.append(pool.apply(cloudpickle_loaded, (0,)))
    print(json.dumps(out))
"""


def test_the_fork_server_imports_cloudpickle_once_the_program_uses_it(tmp_path: Path) -> None:
    script = tmp_path / "server_imports.py"
    script.write_text(SERVER_IMPORTS)
    assert run_fresh("", str(script)) == [False, True]
