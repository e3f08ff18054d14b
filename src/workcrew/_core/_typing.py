"""Run-time stand-ins for the few ``typing`` names used by ``from workcrew import Pool``.

``import typing`` costs a program ~2 ms (7 % of that import), and a ``typing.NamedTuple``
class compiles every annotation of its fields.  The modules on the import path of
``Pool`` therefore take these names from here at run time and ``typing``'s under
``TYPE_CHECKING`` (type checkers read only that branch)::

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import NamedTuple
    else:
        from ._typing import NamedTuple

Each stand-in keeps the run-time behaviour workcrew and its users rely on:

* ``NamedTuple``: a class statement with annotated fields (defaults are class
  values) becomes a ``collections.namedtuple`` class carrying the statement's
  methods, properties and docstring, as ``typing.NamedTuple`` makes it;
* ``Generic`` and ``TypeVar``: ``class C(Generic[T])`` works, and ``C[int]``
  is a ``types.GenericAlias`` usable in annotations evaluated at run time;
* ``Protocol``: a plain base for interface classes that are only annotations;
* ``Any``: ``object``, for the rare alias evaluated at run time (``Run = tuple[list[Any], ...]``).

From Python 3.14 annotations are evaluated lazily and a class statement's
namespace need not hold them: there these names are ``typing``'s own.
tests/test_startup.py checks that ``from workcrew import Pool`` loads no ``typing``.
"""

from __future__ import annotations

import collections
import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any as _Any

__all__ = ("Any", "Generic", "NamedTuple", "Protocol", "TypeVar")

#: Names a class statement puts in its namespace that are not the record's own.
_NOT_COPIED = frozenset({"__annotations__", "__module__", "__qualname__", "__orig_bases__"})
#: What a record may not define, as typing.NamedTuple refuses.
_PROHIBITED = frozenset(
    {"__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults", "_make",
     "_replace", "_asdict", "_source"}
)  # fmt: skip


class _RecordMeta(type):
    """Turns ``class R(NamedTuple): ...`` into a namedtuple class (see the module doc)."""

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, _Any]) -> _Any:
        if not bases:  # the NamedTuple base itself
            return super().__new__(mcls, name, bases, namespace)
        for key in namespace.keys() & _PROHIBITED:
            raise AttributeError(f"{name}: cannot overwrite NamedTuple attribute {key}")
        fields = list(namespace.get("__annotations__", {}))
        defaults = [namespace[field] for field in fields if field in namespace]
        if fields[len(fields) - len(defaults) :] != [f for f in fields if f in namespace]:
            raise TypeError(f"{name}: a field without a default follows a field with one")
        make = collections.namedtuple  # called by name: checkers want literal arguments
        record: _Any = make(name, fields, defaults=defaults, module=namespace.get("__module__"))
        for key, value in namespace.items():
            if key not in _NOT_COPIED and key not in fields:
                setattr(record, key, value)
        record.__qualname__ = namespace.get("__qualname__", name)
        record.__annotations__ = dict(namespace.get("__annotations__", {}))
        return record


class _Generic:
    """Base of generic classes: ``C[X]`` gives ``types.GenericAlias(C, X)``."""

    __slots__ = ()

    def __class_getitem__(cls, item: object) -> types.GenericAlias:
        return types.GenericAlias(cls, item)


def _type_var(name: str, *constraints: object, **options: object) -> str:
    """A type variable at run time: only its name (nothing reads it there)."""
    return name


class _Protocol:
    """Base of interfaces used only in annotations."""

    __slots__ = ()


if sys.version_info >= (3, 14):  # pragma: no cover - lazy annotations: typing's own
    from typing import Any, Generic, NamedTuple, Protocol, TypeVar
else:

    class NamedTuple(metaclass=_RecordMeta):
        """Base of typed records (see the module doc)."""

    Any = object
    Generic = _Generic
    TypeVar = _type_var
    Protocol = _Protocol
