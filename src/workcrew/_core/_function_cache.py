"""What a backend made of each function it sent (its pickle), kept by the function's identity."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable

TYPE_CHECKING = False  # no typing at run time (see _typing)
if TYPE_CHECKING:
    from typing import Any, Generic, TypeVar
else:
    from ._typing import Generic, TypeVar

__all__ = ("FunctionCache",)

V = TypeVar("V")


class FunctionCache(Generic[V]):
    """What a backend made of each function it sent (its pickle), by identity.

    It holds no function alive: entries keep a weak reference, so a bound
    method's object (or a closure's captured data) is freed once the caller
    and its jobs drop it (CPython's test_no_stale_references).  A dead entry
    whose id is reused never matches the new function; callables that take no
    weak reference are not cached (made again for every use).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[int, tuple[weakref.ref[Any], V]] = OrderedDict()

    def get(self, fn: Callable[..., Any], make: Callable[[Callable[..., Any]], V]) -> V:
        """The cached value for ``fn``, or ``make(fn)``, cached."""
        entry = self._entries.get(id(fn))
        if entry is not None and entry[0]() is fn:
            self._entries.move_to_end(id(fn))
            return entry[1]
        value = make(fn)
        try:
            ref = weakref.ref(fn)
        except TypeError:  # e.g. an instance of a class with __slots__ and __call__
            return value
        self._entries[id(fn)] = (ref, value)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return value
