"""Carrying the submitter's context variables (``contextvars``) into its tasks.

Every submission copies the caller's context (``contextvars.copy_context()``,
constant time).  When it holds no variable, the common case, nothing else
happens: the job runs the function as it is, and maps of tiny tasks pay
nothing per item.  Otherwise the job's function is wrapped in
:class:`Carried`, which runs each call in a fresh copy of that context: a task
sees the submitter's values, and its own ``var.set()`` reaches neither the
next task nor the caller.  Coroutine functions get :class:`CarriedAsync`,
which steps the coroutine inside the copy (Python 3.10 has no ``context=``
for ``create_task``).

Thread and async workers use the context object itself: every variable, any
value.  Process workers get a pickle (:meth:`Carried.__reduce__`): the
variables defined at module level, by (module, attribute) and value, looked
up once per variable.  A variable that is not found at module level, or whose
value does not pickle, is skipped and logged once on the ``workcrew`` logger
(a log, not a warning: pickling happens on the master thread, where a
warning points at no user code).

For the same reason ContextVar objects pickle by reference (module,
attribute), as functions and classes do, once workcrew is imported: a
function defined in ``__main__`` that reads a module-level variable is copied
to process workers with its globals (cloudpickle), and could not be sent
otherwise.  A variable not found at module level still refuses to pickle.
"""

from __future__ import annotations

import contextvars
import copyreg
import functools
import importlib
import logging
import pickle
import sys
import types
from collections.abc import Callable, Coroutine, Generator

from ._execute import WRAPPER_CODES, function_name, short_repr

TYPE_CHECKING = False  # no typing at run time (see _backend.Chunk)
if TYPE_CHECKING:
    from typing import Any
else:
    from ._typing import Any  # a base class below names it at run time

__all__ = ("Carried", "CarriedAsync", "carry", "locate")

log = logging.getLogger("workcrew")

#: Variables looked up (module, attribute), or None if not at module level; and
#: variables already reported as skipped.  Bounded: cleared when this large.
_CACHE_LIMIT = 1024
_where: dict[contextvars.ContextVar[Any], tuple[str, str] | None] = {}
_reported: set[contextvars.ContextVar[Any]] = set()
#: Variables Python itself sets, which no module attribute holds: skipped for
#: processes without a word (the decimal module keeps the thread's decimal
#: context in one as soon as Decimal arithmetic runs).
_IMPLICIT = frozenset({"decimal_context"})


def carry(fn: Callable[..., Any], context: contextvars.Context | None = None) -> Callable[..., Any]:
    """``fn`` as a job runs it: in ``context`` (default: the caller's, copied now).

    Returns ``fn`` itself when the context holds no variable.
    """
    if context is None:
        context = contextvars.copy_context()
    if len(context) == 0:
        return fn
    import inspect  # ~4 ms: only a program that sets context variables pays it

    cls = CarriedAsync if inspect.iscoroutinefunction(fn) else Carried
    return cls(fn, context)


class Carried(functools.partial[Any]):
    """``fn`` called in a fresh copy of the submitter's context, each time.

    A ``functools.partial`` of ``fn``, so that ``inspect.iscoroutinefunction``
    sees through it; pickles to what :func:`_rebuild` turns back into a
    ``Carried`` in a process worker.
    """

    target: Callable[..., Any]  # fn itself (partial may have flattened a partial into func/args)
    context: contextvars.Context

    def __new__(cls, fn: Callable[..., Any], context: contextvars.Context) -> Carried:
        self = super().__new__(cls, fn)
        self.target, self.context = fn, context
        # What function_name() reads: messages name the user's function (the
        # qualified name is complete, so no module is added to it).
        self.__dict__.update(__qualname__=function_name(fn), __module__=None)
        return self

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.context.copy().run(self.target, *args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self.target, _portable(self.context))


class CarriedAsync(Carried):
    """:class:`Carried` for a coroutine function: the coroutine runs in the copy."""

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        context = self.context.copy()
        return _await_in(context, context.run(self.target, *args, **kwargs))


async def _await_in(context: contextvars.Context, coro: Coroutine[Any, Any, Any]) -> Any:
    """What calling a CarriedAsync returns: a coroutine, as for the user's function."""
    return await _in_context(context, coro)


@types.coroutine
def _in_context(
    context: contextvars.Context, coro: Coroutine[Any, Any, Any]
) -> Generator[Any, Any, Any]:
    """Await ``coro`` with each of its steps run in ``context``."""
    send, throw = coro.send, coro.throw
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            signal = context.run(send, value) if error is None else context.run(throw, error)
        except StopIteration as stop:
            return stop.value
        value = error = None
        try:
            value = yield signal  # the event loop's futures pass through untouched
        except GeneratorExit:
            context.run(coro.close)
            raise
        except BaseException as exc:  # noqa: BLE001 - cancellation and the like go to the coroutine
            error = exc


WRAPPER_CODES.update(
    {
        Carried.__call__.__code__,
        CarriedAsync.__call__.__code__,
        _await_in.__code__,
        _in_context.__code__,
    }
)


def _portable(context: contextvars.Context) -> tuple[tuple[str, str, bytes], ...]:
    """The variables a process worker can rebuild: (module, attribute, pickled value)."""
    out = []
    for var, value in context.items():
        where = locate(var)
        if where is None:
            if var.name not in _IMPLICIT:
                _skip(var, "it is not defined at module level (define it at the top of a module)")
            continue
        try:
            import cloudpickle

            blob = cloudpickle.dumps(value, protocol=5)
        except Exception as exc:  # noqa: BLE001 - skipped, and reported once
            _skip(var, f"its value {short_repr(value)} does not pickle ({type(exc).__name__})")
            continue
        out.append((*where, blob))
    return tuple(out)


def _skip(var: contextvars.ContextVar[Any], why: str) -> None:
    if var in _reported:
        return
    if len(_reported) >= _CACHE_LIMIT:
        _reported.clear()
    _reported.add(var)
    # INFO, not WARNING: libraries set variables of their own (Dask's current
    # client, decimal's context) that no task expects to see.
    log.info(
        "context variable %r is not carried to process workers: %s; tasks there see its default",
        var.name,
        why,
    )


def _rebuild(
    fn: Callable[..., Any], variables: tuple[tuple[str, str, bytes], ...]
) -> Callable[..., Any]:
    """In a process worker: the ``Carried`` function, with the variables that load here."""
    context = contextvars.Context()
    for module, name, blob in variables:
        try:
            var = _load_var(module, name)
            value = pickle.loads(blob)
        except Exception as exc:  # noqa: BLE001 - this variable only: tasks see its default
            log.warning(
                "context variable %s.%s could not be restored in this worker (%s: %s)",
                module,
                name,
                type(exc).__name__,
                exc,
            )
            continue
        context.run(var.set, value)
    return carry(fn, context)


def locate(var: contextvars.ContextVar[Any]) -> tuple[str, str] | None:
    """(module, attribute) of the module global holding ``var``, or None; cached."""
    try:
        return _where[var]
    except KeyError:
        pass
    where = _search(var)
    if len(_where) >= _CACHE_LIMIT:
        _where.clear()
    _where[var] = where
    return where


def _search(var: contextvars.ContextVar[Any]) -> tuple[str, str] | None:
    # __main__ last: other modules are importable under every start method.
    modules = list(sys.modules.items())  # a copy: another thread may import meanwhile
    modules.sort(key=lambda item: item[0] in _MAIN_NAMES)
    namespaces = []
    for module_name, module in modules:
        try:
            namespace = vars(module)
        except TypeError:  # not a module (sys.modules may hold anything)
            continue
        if namespace.get(var.name) is var:  # the usual spelling: name = ContextVar("name")
            return module_name, var.name
        namespaces.append((module_name, namespace))
    for module_name, namespace in namespaces:
        for attribute, value in list(namespace.items()):
            if value is var:
                return module_name, attribute
    return None


_MAIN_NAMES = ("__main__", "__mp_main__")


def _load_var(module: str, name: str) -> contextvars.ContextVar[Any]:
    var = getattr(importlib.import_module(module), name)
    if not isinstance(var, contextvars.ContextVar):
        raise TypeError(f"{module}.{name} is not a ContextVar here but {type(var).__name__}")
    return var


def _reduce_var(var: contextvars.ContextVar[Any]) -> tuple[Any, ...]:
    where = locate(var)
    if where is None:
        raise TypeError(
            f"cannot pickle {var!r}: only context variables defined at module level pickle "
            "(by reference, as functions do)"
        )
    return _load_var, where


if contextvars.ContextVar not in copyreg.dispatch_table:  # someone's own reducer wins
    copyreg.pickle(contextvars.ContextVar, _reduce_var)
