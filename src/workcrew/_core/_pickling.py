"""The pickling rules: the standard pickle, then cloudpickle; and what a new process gets.

:func:`dumps` is what every transport uses for tasks and results;
:func:`dumps_function` what process workers use for a task's function.
:func:`dumps_for_child` and :class:`ForChild` carry a process worker's start-up
arguments (the initializer and ``initargs``) the way ``multiprocessing``
carries a ``Process``'s arguments, so objects it passes only "through
inheritance" (its queues, locks, values, manager proxies) reach the workers.
"""

from __future__ import annotations

import builtins
import functools
import io
import marshal
import pickle
import sys
import types

TYPE_CHECKING = False  # a worker imports this module: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

__all__ = (
    "ForChild",
    "PickledForChild",
    "check_for_child",
    "dumps",
    "dumps_for_child",
    "dumps_function",
)


def dumps(obj: Any) -> bytes:
    """pickle (protocol 5), falling back to cloudpickle for what pickle cannot name.

    The standard pickle first, because it is the fastest; cloudpickle only when
    it refuses (lambdas, closures, functions defined in ``__main__`` under
    spawn), and cloudpickle raises the real error if neither can.
    """
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:  # noqa: BLE001 - any refusal: let cloudpickle try, it raises the real error
        import cloudpickle

        return bytes(cloudpickle.dumps(obj, protocol=5))


def dumps_function(fn: Any) -> bytes:
    """Pickle a task's function for a process worker, as cloudpickle would.

    Importable functions travel by reference; functions of ``__main__``
    (and lambdas and closures there) by value: their code, defaults,
    closure and the globals they name, modules by reference, so that a
    function behaves the same under every start method.

    cloudpickle does exactly that, but importing it costs a program about
    10 ms, and the fork server as much again, before the first task of the
    first pool.  So the standard pickle goes first, with one addition
    (:class:`_ByValuePickler`): functions of ``__main__`` by value, the way
    cloudpickle pickles them.  Whatever that cannot do (a class or TypeVar
    defined in ``__main__``, a module registered with cloudpickle's
    ``register_pickle_by_value``, an object the standard pickle refuses)
    goes to cloudpickle, which also raises the real error if neither can.
    """
    if "cloudpickle" not in sys.modules or not _registered_by_value():
        buffer = io.BytesIO()
        try:
            _ByValuePickler(buffer).dump(fn)
            return buffer.getvalue()
        except Exception:  # noqa: BLE001 - any refusal: cloudpickle decides, and says why
            pass
    import cloudpickle

    return bytes(cloudpickle.dumps(fn, protocol=5))


def _registered_by_value() -> bool:
    import cloudpickle

    return bool(cloudpickle.list_registry_pickle_by_value())


#: Module attributes a function's new globals keep (relative imports in it
#: resolve against them), as cloudpickle keeps them.
_MODULE_KEYS = ("__package__", "__name__", "__path__", "__file__")


class _ByValuePickler(pickle.Pickler):
    """The standard pickler, plus functions of ``__main__`` by value.

    What reaches a worker is what cloudpickle would send (its
    ``_dynamic_function_reduce``): the code (``marshal``, the format of
    ``.pyc`` files: the worker runs the same Python), a new globals dict per
    globals dict of the caller, shared by the functions of one pickle, with
    the globals the code names (read at pickling time), the closure's values,
    defaults, names, annotations and ``__dict__``.  Modules travel by name,
    with the submodules the code reaches through them; a bound method as
    its function and its object.  Classes and TypeVars of ``__main__`` and
    3.12's generic functions are refused (cloudpickle rebuilds them; this
    does not).
    """

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=5)
        self._globals: dict[int, dict[str, Any]] = {}

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.FunctionType) and obj.__module__ == "__main__":
            return self._reduce_function(obj)
        if isinstance(obj, types.MethodType):
            # As cloudpickle's: the function itself, not the method's name looked
            # up on the object (a private method's name is mangled there).
            return (_make_method, (obj.__func__, obj.__self__))
        if isinstance(obj, types.ModuleType):
            return _reduce_module(obj)
        if getattr(obj, "__module__", None) == "__main__" and (
            isinstance(obj, type) or type(obj).__module__ == "typing"
        ):
            # A class or a TypeVar of __main__: cloudpickle sends them by value.
            raise pickle.PicklingError(f"{obj!r} is defined in __main__: cloudpickle's work")
        return NotImplemented

    def _reduce_function(self, fn: types.FunctionType) -> tuple[Any, ...]:
        if getattr(fn, "__type_params__", ()):  # 3.12's generic functions: cloudpickle's work
            raise pickle.PicklingError(f"{fn!r} has type parameters")
        code = fn.__code__
        scope = fn.__globals__
        base = self._globals.get(id(scope))
        if base is None:  # fn keeps scope alive while this pickle is made: its id stays its own
            base = self._globals[id(scope)] = {k: scope[k] for k in _MODULE_KEYS if k in scope}
        named = {name: scope[name] for name in _global_names(code) if name in scope}
        cells = [_cell_value(cell) for cell in fn.__closure__ or ()]
        reached = _submodules([*named.values(), *(value for _, value in cells)], _names(code))
        attributes = {
            "__qualname__": fn.__qualname__,
            "__defaults__": fn.__defaults__,
            "__kwdefaults__": fn.__kwdefaults__,
            "__annotations__": fn.__annotations__,
            "__doc__": fn.__doc__,
            "__module__": fn.__module__,
        }
        state = (named, cells, attributes, dict(fn.__dict__), reached)
        made = (marshal.dumps(code), base, fn.__name__, len(cells), sys.version_info[:2])
        return (_make_function, made, state, None, None, _set_function_state)


def _global_names(code: types.CodeType) -> dict[str, None]:
    """The globals ``code`` and the code nested in it read, write or delete, in order.

    Only those: ``co_names`` also holds attribute and imported names, and a
    global that merely shares one (``x.data`` and a global ``data``) must not
    travel.  What cloudpickle's ``_extract_code_globals`` finds, read from
    the bytecode without ``dis`` (whose import would cost the first pool
    ~1.7 ms): each instruction is two bytes, ``EXTENDED_ARG`` prefixes widen
    the next one's argument, and from Python 3.11 ``LOAD_GLOBAL``'s argument
    is the name's index shifted left by one (its low bit pushes a NULL).
    """
    ops, extended_arg = _global_opcodes()
    found: dict[str, None] = {}
    for each in _codes(code):
        raw = each.co_code
        extended = 0
        for i in range(0, len(raw), 2):
            op, arg = raw[i], raw[i + 1] | extended
            extended = arg << 8 if op == extended_arg else 0
            shift = ops.get(op)
            if shift is not None:
                found[each.co_names[arg >> shift]] = None
    return found


#: LOAD_GLOBAL, STORE_GLOBAL, DELETE_GLOBAL and EXTENDED_ARG, by Python version: what
#: ``opcode`` says (tests compare), without its import (~0.5-0.8 ms on the first pool).
#: Another version, or a pre-release (whose opcodes may still move), reads ``opcode``.
OPCODES = {
    (3, 10): (116, 97, 98, 144),
    (3, 11): (116, 97, 98, 144),
    (3, 12): (116, 97, 98, 144),
    (3, 13): (91, 113, 66, 71),
}


@functools.cache
def _global_opcodes() -> tuple[dict[int, int], int]:
    """{opcode: shift of its name index} for the global-access instructions; EXTENDED_ARG."""
    final = sys.version_info.releaselevel == "final"
    known = OPCODES.get(sys.version_info[:2]) if final else None
    load, store, delete, extended_arg = known if known is not None else read_opcodes()
    load_shift = 1 if sys.version_info >= (3, 11) else 0
    return {load: load_shift, store: 0, delete: 0}, extended_arg


def read_opcodes() -> tuple[int, int, int, int]:
    """LOAD_GLOBAL, STORE_GLOBAL, DELETE_GLOBAL and EXTENDED_ARG, from ``opcode``."""
    import opcode

    return (
        opcode.opmap["LOAD_GLOBAL"],
        opcode.opmap["STORE_GLOBAL"],
        opcode.opmap["DELETE_GLOBAL"],
        opcode.EXTENDED_ARG,
    )


def _names(code: types.CodeType) -> frozenset[str]:
    """Every name ``code`` and the code nested in it use (attributes included)."""
    return frozenset(name for each in _codes(code) for name in each.co_names)


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code``, then the code nested in it (functions, lambdas, classes), depth first."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _cell_value(cell: types.CellType) -> tuple[bool, Any]:
    try:
        return True, cell.cell_contents
    except ValueError:  # an empty cell (a name not yet bound in the enclosing scope)
        return False, None


def _submodules(values: list[Any], names: frozenset[str]) -> list[types.ModuleType]:
    """Imported submodules of the modules in ``values`` that the code reaches by attribute.

    ``import os.path`` binds ``os``; a function that calls ``os.path.join``
    needs ``os.path`` imported in the worker too.
    """
    found = []
    for value in values:
        if isinstance(value, types.ModuleType):
            prefix = value.__name__ + "."
            for name, module in list(sys.modules.items()):
                if name.startswith(prefix) and names.issuperset(name[len(prefix) :].split(".")):
                    found.append(module)
    return found


def _reduce_module(module: types.ModuleType) -> tuple[Any, ...]:
    name = module.__name__
    if name == "__main__" or sys.modules.get(name) is not module:
        raise pickle.PicklingError(f"module {name} cannot be imported by name: cloudpickle's work")
    return (_import_module, (name,))


def _import_module(name: str) -> types.ModuleType:
    """A module, by name (imported if need be): how modules travel."""
    __import__(name)
    return sys.modules[name]


def _make_method(fn: Any, obj: Any) -> types.MethodType:
    """A bound method, from its function and object (``types.MethodType`` does not pickle)."""
    return types.MethodType(fn, obj)


def _make_function(
    code: bytes, scope: dict[str, Any], name: str, cells: int, version: tuple[int, int]
) -> types.FunctionType:
    """A function sent by value, before its state: code, globals dict, empty closure cells."""
    if version != sys.version_info[:2]:
        raise pickle.UnpicklingError(
            f"a function was pickled by Python {version[0]}.{version[1]} and cannot run on "
            f"{sys.version_info[0]}.{sys.version_info[1]}: run workers on the caller's Python"
        )
    closure = tuple(types.CellType() for _ in range(cells)) if cells else None
    return types.FunctionType(marshal.loads(code), scope, name, None, closure)


def _set_function_state(fn: types.FunctionType, state: tuple[Any, ...]) -> None:
    """Fill in what :func:`_make_function` left out (it may name ``fn`` itself)."""
    named, cells, attributes, extra, _reached = state  # _reached: imported by unpickling it
    fn.__globals__.update(named)
    fn.__globals__["__builtins__"] = builtins
    for cell, (bound, value) in zip(fn.__closure__ or (), cells):
        if bound:
            cell.cell_contents = value
    for key, value in attributes.items():
        setattr(fn, key, value)
    fn.__dict__.update(extra)


def dumps_for_child(obj: Any) -> bytes:
    """cloudpickle ``obj`` as ``multiprocessing`` pickles a new process's arguments.

    Called while a child process is being started (inside ``Process.start``,
    where ``multiprocessing`` sets its "spawning popen"), objects that may only
    travel "through inheritance" pickle: ``multiprocessing`` queues, locks,
    events, values, connections and manager proxies (with their authkey), their
    descriptors handed to that child as for ``Process(args=...)``.
    """
    buffer = io.BytesIO()
    _child_pickler()(buffer, protocol=5).dump(obj)
    return buffer.getvalue()


@functools.cache
def _child_pickler() -> type[Any]:
    """The pickler of :func:`dumps_for_child` (made on first use: cloudpickle loads then)."""
    from collections import ChainMap
    from multiprocessing.reduction import ForkingPickler
    from multiprocessing.synchronize import SemLock
    from typing import ClassVar

    import cloudpickle

    class _ChildPickler(cloudpickle.Pickler):  # type: ignore[misc]  # untyped base
        # multiprocessing's reducers (Connection, socket, heap arenas, ...) after
        # cloudpickle's own.  _extra_reducers is the live registry behind
        # multiprocessing.reduction.register (private, unchanged since 3.4): a copy
        # would miss the reducers modules such as multiprocessing.heap add when
        # first imported.  The C pickler reads dispatch_table once, at __init__,
        # so it must be a class attribute.
        dispatch_table: ClassVar[ChainMap[type, Any]] = ChainMap(
            cloudpickle.Pickler.dispatch_table,
            ForkingPickler._extra_reducers,  # type: ignore[attr-defined]  # private, see above
        )

        if sys.version_info < (3, 11):

            def reducer_override(self, obj: Any) -> Any:
                # Python 3.10 lacks the check 3.11 added to SemLock.__getstate__:
                # a lock made in a fork context has no name (it was unlinked at
                # once), and a spawned child would rebuild it from the parent's
                # raw pointer.  Refuse with 3.11's words.
                if isinstance(obj, SemLock) and obj._semlock.name is None:  # type: ignore[attr-defined]  # private CPython attribute
                    raise RuntimeError(
                        "A SemLock created in a fork context is being shared with a process in "
                        "a spawn context. This is not supported. Please use the same context to "
                        "create multiprocessing objects and Process."
                    )
                return super().reducer_override(obj)

    return _ChildPickler


def check_for_child(obj: Any) -> None:
    """Raise what pickling ``obj`` for a spawned child process would raise.

    A dry run of :func:`dumps_for_child` outside any process start: descriptors
    are not duplicated, only checked.
    """
    from multiprocessing import context as mp_context

    previous = mp_context.get_spawning_popen()
    mp_context.set_spawning_popen(_DryRun())  # type: ignore[arg-type]  # duck-typed Popen
    try:
        dumps_for_child(obj)
    finally:
        mp_context.set_spawning_popen(previous)


class _DryRun:
    """Stands in for a starting process's Popen while objects are checked."""

    @staticmethod
    def duplicate_for_child(fd: int) -> int:
        return fd

    @staticmethod
    def DupFd(fd: int) -> int:  # the name multiprocessing.reduction calls
        return fd


class ForChild:
    """A value for a new process, pickled only while that process starts.

    A process worker's ``Process`` arguments hold one: under ``fork`` the child
    gets it by inheritance, unpickled; under spawn and forkserver it becomes a
    :class:`PickledForChild` made by :func:`dumps_for_child`.  Either way the
    child calls ``load()``.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (PickledForChild, (dumps_for_child(self.value),))

    def load(self) -> Any:
        """The value."""
        return self.value


class PickledForChild:
    """A :class:`ForChild` as it reaches a spawned child: unpickled on ``load()``.

    Unpickling waits for ``load()`` so that the worker can report a failure
    (an initializer it cannot import) instead of dying while it starts.
    """

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def load(self) -> Any:
        """The value, unpickled."""
        return pickle.loads(self.blob)
