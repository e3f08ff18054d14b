"""Running one chunk of work: the code every worker kind shares.

A *chunk* is what the master hands a worker in one message: one function, a
calling mode and a list of argument items.  This module runs it and captures
every item's outcome in an :class:`Outcome`; it knows nothing about pipes,
pickling or threads, so every worker kind (thread, process, async, Dask) calls
the same loops.
"""

from __future__ import annotations

import reprlib
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from types import CodeType, GeneratorType, MethodType

TYPE_CHECKING = False  # typing is not loaded at run time: a worker imports this module
if TYPE_CHECKING:
    from typing import Any, TypeGuard

__all__ = (
    "CALL",
    "MAP",
    "STAR",
    "WRAPPER_CODES",
    "Failure",
    "Outcome",
    "describe_call",
    "run_chunk",
    "run_chunk_async",
    "run_chunk_async_timed",
    "run_chunk_concurrently",
    "run_chunk_timed",
    "short_repr",
)

#: Calling modes: ``fn(item)``, ``fn(*item)``, ``fn(*args, **kwargs)`` with item=(args, kwargs).
MAP, STAR, CALL = 0, 1, 2

#: Code of workcrew's own call wrappers (context variables, see _carry.py): their
#: frames are left out of a task's traceback, which starts at the user's code.
WRAPPER_CODES: set[CodeType] = set()

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 4
_repr.maxlevel = 2


class Failure:
    """One item's exception, captured where it was raised.

    ``exc`` is the exception object; ``tb`` its traceback formatted in the
    worker (the only form that survives a process boundary); ``call`` a short
    description of the call that raised, for messages.
    """

    __slots__ = ("call", "exc", "tb")

    def __init__(self, exc: BaseException, tb: str, call: str) -> None:
        self.exc = exc
        self.tb = tb
        self.call = call

    def __repr__(self) -> str:
        return f"Failure({self.exc!r}, call={self.call!r})"


class Outcome:
    """What running a chunk produced, item by item (read-only once made).

    ``values`` holds one value per item (``None`` where it failed or was
    skipped); ``failures`` the captured exceptions by item index (``None`` if
    none failed); ``spans`` each item's (start, end) on :data:`timer`, only
    when the pool records a timeline.  Workers in other processes send it as
    the plain tuple ``(values, failures, spans)`` and the master rebuilds it
    with ``Outcome(*that)``: a pickle naming no class stays cheap to load on
    the master thread (see ``_backends/_decoding.py``).

    A plain class rather than a dataclass: process workers import this module,
    and ``dataclasses`` would load ``inspect`` in every one of them.
    """

    __slots__ = ("failures", "spans", "values")

    def __init__(
        self,
        values: list[Any],
        failures: dict[int, Failure] | None = None,
        spans: list[tuple[float, float]] | None = None,
    ) -> None:
        self.values = values
        self.failures = failures
        self.spans = spans

    def __repr__(self) -> str:
        return f"Outcome({self.values!r}, {self.failures!r}, {self.spans!r})"


#: Code flags of ``async def`` functions and of ``@types.coroutine`` generators.
CO_COROUTINE = 0x80
CO_ITERABLE_COROUTINE = 0x100


def is_coroutine_function(fn: object) -> bool:
    """``inspect.iscoroutinefunction(fn)``, without importing ``inspect`` in a worker.

    ``inspect`` costs every process worker milliseconds to import, and this
    runs for each chunk.  Until it is loaded, no function can carry its
    ``markcoroutinefunction`` mark (3.12+), so the code flags of the function
    under bound methods and then ``functools.partial`` decide, as in ``inspect``.
    """
    inspect = sys.modules.get("inspect")
    if inspect is not None:
        return bool(inspect.iscoroutinefunction(fn))
    while isinstance(fn, MethodType):
        fn = fn.__func__
    while isinstance(fn, partial):
        fn = fn.func
    code = getattr(fn, "__code__", None)
    return isinstance(code, CodeType) and bool(code.co_flags & CO_COROUTINE)


def is_awaitable(value: object) -> TypeGuard[Awaitable[Any]]:
    """``inspect.isawaitable(value)``, without importing ``inspect`` in a worker."""
    if isinstance(value, Awaitable):
        return True
    return isinstance(value, GeneratorType) and bool(value.gi_code.co_flags & CO_ITERABLE_COROUTINE)


def function_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a callable, or its repr as a last resort."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return _repr.repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


def short_repr(value: Any) -> str:
    """``repr(value)`` abbreviated for messages; never raises."""
    try:
        return _repr.repr(value)
    # BaseException: messages are built on the master thread, which a
    # __repr__ raising SystemExit must not end.
    except BaseException:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        return f"<{type(value).__qualname__} object>"


def describe_call(fn: Callable[..., Any], mode: int, item: Any) -> str:
    """``fn(arg, ...)`` with arguments abbreviated, as shown in error messages."""
    if mode == MAP:
        inner = short_repr(item)
    elif mode == STAR:
        inner = (
            ", ".join(short_repr(a) for a in item)
            if isinstance(item, Sequence)
            else "*" + short_repr(item)
        )
    else:
        args, kwargs = item
        parts = [short_repr(a) for a in args] + [f"{k}={short_repr(v)}" for k, v in kwargs.items()]
        inner = ", ".join(parts)
    return f"{function_name(fn)}({inner})"


def run_chunk(
    fn: Callable[..., Any], mode: int, items: list[Any], skip: frozenset[int] | None = None
) -> Outcome:
    """Call ``fn`` on every item; never raises (each item's exception is captured).

    ``skip`` holds indices the master could not deliver (their arguments did not
    pickle); they get a ``None`` placeholder and are ignored by the master.
    """
    out: list[Any] = []
    failures: dict[int, Failure] | None = None
    append = out.append
    it = iter(items) if not skip else _skipping(items, skip, out)
    # The tight loops below are the hot path for tiny tasks; an exception
    # leaves the inner loop, is recorded, and the same iterator resumes.
    while True:
        try:
            if mode == MAP:
                for a in it:
                    append(fn(a))
            elif mode == STAR:
                for a in it:
                    append(fn(*a))
            else:
                for a, k in it:
                    append(fn(*a, **k))
            break
        except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the caller
            index = len(out)
            if failures is None:
                failures = {}
            failures[index] = _capture(exc, fn, mode, items[index])
            append(None)
    return Outcome(out, failures)


def run_chunk_timed(
    fn: Callable[..., Any], mode: int, items: list[Any], skip: frozenset[int] | None = None
) -> Outcome:
    """:func:`run_chunk`, timing each item (only when the pool records a timeline).

    ``timer`` is ``perf_counter``, CLOCK_MONOTONIC on Linux: one clock for every
    process of the machine, so the master can place spans from all workers.
    """
    values: list[Any] = []
    failures: dict[int, Failure] | None = None
    spans = []
    for index, item in enumerate(items):
        one_skip = frozenset({0}) if skip and index in skip else None
        start = timer()
        one = run_chunk(fn, mode, [item], one_skip)
        spans.append((start, timer()))
        values.append(one.values[0])
        if one.failures:
            failures = failures or {}
            failures[index] = one.failures[0]
    return Outcome(values, failures, spans)


async def run_chunk_async_timed(
    fn: Callable[..., Any], mode: int, items: list[Any], skip: frozenset[int] | None = None
) -> Outcome:
    """:func:`run_chunk_timed` for coroutine functions."""
    values: list[Any] = []
    failures: dict[int, Failure] | None = None
    spans = []
    for index, item in enumerate(items):
        one_skip = frozenset({0}) if skip and index in skip else None
        start = timer()
        one = await run_chunk_async(fn, mode, [item], one_skip)
        spans.append((start, timer()))
        values.append(one.values[0])
        if one.failures:
            failures = failures or {}
            failures[index] = one.failures[0]
    return Outcome(values, failures, spans)


def _skipping(items: list[Any], skip: frozenset[int], out: list[Any]) -> Any:
    for i, item in enumerate(items):
        if i in skip:
            out.append(None)
        else:
            yield item


def _capture(exc: BaseException, fn: Callable[..., Any], mode: int, item: Any) -> Failure:
    # Drop this frame from the traceback: users should see their own code first.
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    while tb is not None and tb.tb_frame.f_code in WRAPPER_CODES:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    try:
        call = describe_call(fn, mode, item)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        call = function_name(fn) + "(...)"
    return Failure(exc.with_traceback(tb), text, call)


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``; on 3.10 the note is kept in ``__notes__`` all the same.

    (3.10's tracebacks do not show it, but code can read it.)
    """
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # pragma: no cover - 3.10
        notes = getattr(exc, "__notes__", None)
        try:
            exc.__notes__ = [*(notes or ()), note]  # type: ignore[attr-defined]  # 3.10 has no such attribute
        except AttributeError:
            pass  # an exception type with __slots__: the note is lost, the error is not


timer = time.perf_counter


async def run_chunk_async(
    fn: Callable[..., Any], mode: int, items: list[Any], skip: frozenset[int] | None = None
) -> Outcome:
    """:func:`run_chunk` for coroutine functions: each call is awaited in turn.

    A ``CancelledError`` (the task's timeout) is captured like any other
    exception, so the master sees which item it hit.
    """
    out: list[Any] = []
    failures: dict[int, Failure] | None = None
    for index, item in enumerate(items):
        if skip and index in skip:
            out.append(None)
            continue
        try:
            if mode == MAP:
                out.append(await fn(item))
            elif mode == STAR:
                out.append(await fn(*item))
            else:
                args, kwargs = item
                out.append(await fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the caller
            if failures is None:
                failures = {}
            failures[index] = _capture(exc, fn, mode, item)
            out.append(None)
    return Outcome(out, failures)


EVENT_LOOPS = ("auto", "asyncio", "uvloop")


def new_event_loop(preference: str = "auto") -> Any:
    """A new event loop: uvloop's if ``preference`` is "uvloop", or "auto" and it is installed.

    uvloop runs many short coroutines faster than asyncio's own loop (about
    10 % more achieved concurrency in the benchmarks); "asyncio" never uses it.
    """
    import asyncio

    if preference != "asyncio":
        try:
            import uvloop
        except ImportError:
            if preference == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run_chunk_concurrently(
    fn: Callable[..., Any],
    mode: int,
    items: list[Any],
    skip: frozenset[int] | None,
    limit: int,
    *,
    loop: Any,
    threads: Any,
    timed: bool = False,
) -> Outcome:
    """Run a chunk's items ``limit`` at a time: coroutines on ``loop``, functions on ``threads``.

    Hybrid workers: each process runs several IO-bound tasks at once.  Every
    item's outcome is captured as in :func:`run_chunk`.
    """
    import asyncio

    singles = [
        ([item], frozenset({0}) if skip and i in skip else None) for i, item in enumerate(items)
    ]
    if is_coroutine_function(fn):

        async def run_all() -> list[Outcome]:
            gate = asyncio.Semaphore(limit)

            async def one(part: tuple[list[Any], frozenset[int] | None]) -> Outcome:
                async with gate:
                    return await run_chunk_async_timed(fn, mode, *part)

            return list(await asyncio.gather(*(one(part) for part in singles)))

        parts: list[Outcome] = loop.run_until_complete(run_all())
    else:
        parts = list(threads.map(lambda part: run_chunk_timed(fn, mode, *part), singles))
    values = [part.values[0] for part in parts]
    failures = {i: part.failures[0] for i, part in enumerate(parts) if part.failures}
    spans = [part.spans[0] for part in parts if part.spans] if timed else None
    return Outcome(values, failures or None, spans)
