"""The exceptions workcrew raises.

Hierarchy (the standard-library classes on the right are bases too, so code
written for ``multiprocessing`` and ``concurrent.futures`` still catches them;
docs/errors.md has the table)::

    WorkcrewError                   base of every error the engine itself raises
    ├── PoolClosedError             you closed / shut down the pool, then used it
    │                               + ValueError (multiprocessing), RuntimeError
    │                               (concurrent.futures)
    ├── BrokenPoolError             something outside your calls broke the pool:
    │   │                           workers cannot start; see ``__cause__``
    │   │                           + BrokenProcessPool, BrokenThreadPool
    │   │                           (so BrokenExecutor and RuntimeError)
    │   └── InitializerError        the ``initializer`` raised in a worker
    ├── WorkerCrashed               the worker running a task died (segfault,
    │                               os._exit, SIGKILL, OOM kill); the pool lives on
    │                               + BrokenProcessPool
    ├── TimeoutError                a wait ran out of time
    │   │                           + multiprocessing.TimeoutError,
    │   │                           concurrent.futures.TimeoutError (builtin 3.11+)
    │   └── TaskTimeout             a task ran past its task_timeout; its process
    │                               worker was killed and replaced
    ├── TaskCancelled               the task was dropped before it ran
    │                               + concurrent.futures.CancelledError
    ├── SerializationError          a function, argument or result could not be
    │                               pickled or unpickled; names the object and phase
    │                               + pickle.PickleError; per phase, see below
    ├── TaskFailed                  a task raised an exception that could not be
    │                               sent back as itself; carries its type and text
    ├── DeadlockError               workcrew locks were taken in a cycle; this
    │                               waiter gave up so the others can go on
    └── QueueClosed                 put on a closed workcrew.Queue, or get on one
                                    that is closed and empty

A :class:`SerializationError` is raised as an instance of a subclass made for
its phase (:func:`serialization_error`): a *pickling* failure (your arguments in
the caller, your result in the worker) is also a ``pickle.PicklingError`` and
an instance of the exception pickling raised (``TypeError``, ``RuntimeError``,
...), as the standard library would have raised it; an *unpickling* failure
(the task in the worker, the result in the caller) is also a
``pickle.UnpicklingError`` and a ``BrokenProcessPool``, what
``ProcessPoolExecutor`` raises there, although here only that task fails.

A task's own exception is never wrapped: it re-raises in the caller with its
own type, and for process workers the worker-side traceback is chained as
``__cause__`` (a :class:`RemoteTraceback`).

Every class here pickles (``__reduce__`` keeps the message), so errors can cross
process boundaries themselves.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import multiprocessing
import pickle
import sys

from ._public import public

TYPE_CHECKING = False  # no typing at run time (see _typing)
if TYPE_CHECKING:
    from typing import Any

    from ._broken import BrokenPoolError, InitializerError, WorkerCrashed

#: The classes whose bases are ``concurrent.futures``' ``BrokenProcessPool`` and
#: ``BrokenThreadPool``, defined in ``_broken``: importing those bases loads
#: ``concurrent.futures.process`` and with it ``multiprocessing``'s connection
#: machinery (~8 ms), which ``from workcrew import Pool`` (and a fork server
#: running the program's imports) should not pay for.  They load on first use.
_BROKEN = frozenset({"BrokenPoolError", "InitializerError", "WorkerCrashed"})


def __getattr__(name: str) -> Any:
    """``BrokenPoolError``, ``InitializerError``, ``WorkerCrashed``: from ``_broken`` (PEP 562)."""
    if name in _BROKEN:
        from . import _broken

        return getattr(_broken, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_BROKEN])


def broken_pool(message: str) -> BrokenPoolError:
    """A :class:`BrokenPoolError` (its class loads now, see ``_BROKEN``)."""
    from ._broken import BrokenPoolError

    return BrokenPoolError(message)


__all__ = (
    "BrokenPoolError",
    "DeadlockError",
    "InitializerError",
    "NestedPoolWarning",
    "PoolClosedError",
    "QueueClosed",
    "RemoteTraceback",
    "SerializationError",
    "TaskCancelled",
    "TaskFailed",
    "TaskTimeout",
    "TimeoutError",
    "WorkcrewError",
    "WorkerCrashed",
    "broken_pool",
    "serialization_error",
)


class WorkcrewError(Exception):
    """Base class of the errors raised by workcrew itself (not by your tasks)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class PoolClosedError(WorkcrewError, ValueError, RuntimeError):
    """Work was submitted after ``close()``, ``terminate()`` or ``shutdown()``.

    Also raised when a pool is used in a child process forked from the one
    that created it: a pool belongs to its process.

    You get it only from your own calls on a pool you closed; a pool broken by
    failing workers raises :class:`BrokenPoolError` instead.  It is a
    ``ValueError`` (what ``multiprocessing.Pool`` raises) and a ``RuntimeError``
    (what ``concurrent.futures`` raises), so code written for either still
    catches it.
    """


class TaskCancelled(WorkcrewError, concurrent.futures.CancelledError):
    """The task was dropped before it produced a result.

    You get it when the pool is terminated with the task still pending, or when
    the map it belongs to was abandoned (its iterator closed or collected).
    """


class SerializationError(WorkcrewError, pickle.PickleError):
    """A function, its arguments or its result could not cross to or from a process.

    The message names the object, the phase (pickling the task in the caller,
    unpickling it in the worker, pickling the result in the worker, unpickling
    the result in the caller) and what to do.  Only the affected task fails;
    the pool keeps working.

    What is raised is an instance of a subclass for its phase (see the module
    docstring and :func:`serialization_error`): a pickling failure is also a
    ``pickle.PicklingError`` and of the original error's type, an unpickling
    failure a ``pickle.UnpicklingError`` and a ``BrokenProcessPool``.
    """

    def __str__(self) -> str:
        # Some bases a phase adds (UnicodeError, OSError) format their own
        # fields; the message is always the first argument.
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        extra = _PHASE_CLASSES.get(type(self), ())
        return (_rebuild_serialization_error, (extra, self.args, self.__dict__))


#: Phase subclasses of SerializationError made so far, and their extra bases.  Two
#: threads may race to make the same one; both classes then work (isinstance).
_PHASE_CLASSES: dict[type[SerializationError], tuple[type[BaseException], ...]] = {}
_BY_BASES: dict[tuple[type[BaseException], ...], type[SerializationError]] = {}


def serialization_error(
    message: str, *, loading: bool = False, cause: BaseException | None = None
) -> SerializationError:
    """The :class:`SerializationError` to raise for a failed pickle or unpickle.

    Pickling (``loading=False``): also a ``pickle.PicklingError`` and an
    instance of ``type(cause)``, as ``pickle`` raised it.  Unpickling
    (``loading=True``): also a ``pickle.UnpicklingError`` and a
    ``BrokenProcessPool``.  Where Python cannot combine the types (an
    incompatible layout, a final class), the extra type is left out.
    """
    extra: tuple[type[BaseException], ...]
    if loading:
        from concurrent.futures.process import BrokenProcessPool

        extra = (pickle.UnpicklingError, BrokenProcessPool)
    else:
        extra = (pickle.PicklingError,)
        if cause is not None and not isinstance(cause, WorkcrewError):
            extra += (type(cause),)
    cls = _phase_class(extra)
    try:
        error = cls.__new__(cls, message)
    except Exception:  # noqa: BLE001 - a base with an unusual __new__: the plain class
        error = SerializationError.__new__(SerializationError, message)
    Exception.__init__(error, message)
    return error


def _phase_class(extra: tuple[type[BaseException], ...]) -> type[SerializationError]:
    # Keep only the most derived bases: a base listed before its own subclass
    # has no consistent method resolution order.
    extra = tuple(b for b in extra if not any(o is not b and issubclass(o, b) for o in extra))
    extra = tuple(b for b in dict.fromkeys(extra) if not issubclass(SerializationError, b))
    if not extra:
        return SerializationError
    cls = _BY_BASES.get(extra)
    if cls is not None:
        return cls
    try:
        cls = type("SerializationError", (SerializationError, *extra), {"__module__": "workcrew"})
    except TypeError:  # e.g. "multiple bases have instance lay-out conflict"
        return _phase_class(extra[:-1])
    cls.__qualname__ = "SerializationError"
    cls.__doc__ = SerializationError.__doc__
    _BY_BASES[extra] = cls
    _PHASE_CLASSES[cls] = extra
    return cls


def _rebuild_serialization_error(
    extra: tuple[type[BaseException], ...], args: tuple[Any, ...], state: dict[str, Any]
) -> SerializationError:
    cls = _phase_class(extra)
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class TaskFailed(WorkcrewError):
    """A task raised an exception that could not be sent back as itself.

    The original type name and message are kept in the message and in the
    ``type_name`` attribute; the worker-side traceback is the ``__cause__``.
    Define exception classes at module level and pass every constructor
    argument to ``super().__init__`` to get the original exception instead.
    """

    type_name: str

    def __init__(self, message: str, *, type_name: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name


class DeadlockError(WorkcrewError):
    """Acquiring a workcrew lock would wait forever: the waits form a cycle.

    Worker A holds lock L1 and waits for L2 while worker B holds L2 and waits
    for L1 (or a thread waits for a non-recursive lock it holds itself).  One
    participant of the cycle, and only one, gets this error; the message names
    every participant, the lock it holds and the lock it waits for.  Let it
    propagate out of the ``with`` blocks so its locks are released and the
    others go on; the lasting fix is to take locks in one global order.

    Attribute: ``cycle``, a tuple of ``(participant, waits_for_lock)`` strings.
    """

    cycle: tuple[tuple[str, str], ...]

    def __init__(self, message: str, *, cycle: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.cycle = cycle


class QueueClosed(WorkcrewError):
    """The :class:`workcrew.Queue` was closed.

    ``put`` raises it at once; ``get`` raises it once the queue is also empty
    (items put before ``close()`` are still delivered).  Iterating over a queue
    ends cleanly instead.
    """


_TIMEOUT_DOC = """A wait for a result ran out of time.

    It is the builtin ``TimeoutError``, ``multiprocessing.TimeoutError`` and
    ``concurrent.futures.TimeoutError`` (one class with the builtin from 3.11),
    so existing ``except`` clauses keep working.  The task itself goes on.
    Its subclass :class:`TaskTimeout` is a task that ran past its
    ``task_timeout``.
    """

if sys.version_info >= (3, 11):  # concurrent.futures.TimeoutError is the builtin one

    class TimeoutError(
        WorkcrewError, multiprocessing.TimeoutError, concurrent.futures.TimeoutError
    ):
        __doc__ = _TIMEOUT_DOC

else:  # Python 3.10: three distinct classes, all of them bases

    class TimeoutError(
        WorkcrewError,
        multiprocessing.TimeoutError,
        concurrent.futures.TimeoutError,
        builtins.TimeoutError,
    ):
        __doc__ = _TIMEOUT_DOC


class TaskTimeout(TimeoutError):
    """The task ran longer than its ``task_timeout``.

    A process worker running it is killed (SIGTERM, then SIGKILL after a grace
    period) and replaced.  A thread cannot be killed: the task is failed, the
    thread is retired and replaced, and it ends on its own when the call
    returns (its result is dropped).

    It is a :class:`TimeoutError` (so the builtin ``TimeoutError``,
    ``concurrent.futures.TimeoutError`` and ``multiprocessing.TimeoutError``),
    as a timed-out task is in asyncio and pebble; catch ``TaskTimeout`` first
    to tell it from a wait for a result that ran out of time.

    Attributes: ``timeout`` (seconds), ``worker_id``.
    """

    timeout: float
    worker_id: int

    def __init__(self, message: str, *, timeout: float = 0.0, worker_id: int = -1) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.worker_id = worker_id


class NestedPoolWarning(RuntimeWarning):
    """A pool was created inside a worker of another pool.

    Each outer worker then runs its own pool of inner workers: by default as
    many as there are CPUs, so processes x workers oversubscribe the machine
    and it spends its time switching between them.  Give the inner pool a
    small ``processes``/``max_workers``, or create one pool outside the tasks.
    """


class RemoteTraceback(Exception):
    """The traceback of a task as it was formatted in its worker process.

    Chained as ``__cause__`` of a task's exception, so it prints under
    "The above exception was the direct cause of the following exception".
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


public(
    WorkcrewError,
    PoolClosedError,
    NestedPoolWarning,
    TaskCancelled,
    SerializationError,
    TaskFailed,
    TaskTimeout,
    TimeoutError,
    DeadlockError,
    QueueClosed,
    RemoteTraceback,
)
