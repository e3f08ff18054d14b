"""Naming what does not pickle in a task's arguments, for the error a process pool reports.

When a chunk's arguments do not pickle, the master looks for the items that do not
(:meth:`ProcessHandle._strip_unpicklable`) and fails those alone, each with an error
naming the argument at fault and what to pass instead; the rest of the chunk is sent.
"""

from __future__ import annotations

from collections.abc import Callable

from .._core._exceptions import WorkcrewError, serialization_error
from .._core._execute import MAP, STAR, describe_call, short_repr
from . import _wire

TYPE_CHECKING = False  # no typing at run time (see _backend.Chunk)
if TYPE_CHECKING:
    from typing import Any

__all__ = ("argument_error",)


def argument_error(fn: Callable[..., Any], mode: int, item: Any) -> WorkcrewError | None:
    """The error for an item that does not pickle, naming the offending argument."""
    try:
        _wire.dumps(item)
    except BaseException as exc:  # noqa: BLE001 - whatever stops it pickling, this item is the culprit
        culprit = _find_unpicklable(item, mode)
        return serialization_error(
            f"cannot send the arguments of {describe_call(fn, mode, item)} to a process worker: "
            f"{culprit} is not picklable ({type(exc).__name__}: {exc}). Pass data the worker can "
            "rebuild (a path rather than an open file, settings rather than a connection), "
            "create such objects inside the task or an initializer, or use kind='thread'.",
            cause=exc,
        )
    return None


def _find_unpicklable(item: Any, mode: int) -> str:
    if mode == MAP:
        candidates: list[tuple[str, Any]] = [("argument", item)]
    elif mode == STAR:
        candidates = [(f"argument {i}", a) for i, a in enumerate(item)]
    else:
        args, kwargs = item
        candidates = [(f"argument {i}", a) for i, a in enumerate(args)]
        candidates += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in candidates:
        try:
            _wire.dumps(value)
        except BaseException:  # noqa: BLE001 - this argument does not pickle: it is the one to name
            return f"{label} {short_repr(value)} of type {type(value).__qualname__}"
    return "an argument"
