"""The pickling rules: the standard pickle, then cloudpickle; and what a new process gets.

:func:`dumps` is what every transport uses for tasks and results.
:func:`dumps_for_child` and :class:`ForChild` carry a process worker's start-up
arguments (the initializer and ``initargs``) the way ``multiprocessing``
carries a ``Process``'s arguments, so objects it passes only "through
inheritance" (its queues, locks, values, manager proxies) reach the workers.
"""

from __future__ import annotations

import functools
import io
import pickle
import sys

TYPE_CHECKING = False  # a worker imports this module: no typing at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = (
    "ForChild",
    "PickledForChild",
    "check_for_child",
    "dumps",
    "dumps_for_child",
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
