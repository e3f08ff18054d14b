"""Validated pool options, shared by every front end (Pool, Executor).

Each option is declared once, in ``OPTIONS``: its default, its meaning, the
``PoolOptions`` field that keeps it and its keyword in each front end.  The
defaults of ``PoolOptions``, ``TaskPolicy`` and ``PoolOptions.build`` come from
there; tests/test_options_declared.py checks the front ends' signatures and
docstrings against it.

Invalid values raise here, at construction, with a message that says what was
given and what is accepted: nothing is discovered later inside a worker.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable

from ._checks import (
    check_chunksize,
    check_event_loop,
    check_max_tasks,
    check_positive_int,
    check_workers,
)
from ._exceptions import serialization_error
from ._pickling import check_for_child
from ._public import public
from ._state import WorkerHooks
from ._system import available_cpu_count

TYPE_CHECKING = False  # typing's names for checkers; stand-ins at run time (see _typing)
if TYPE_CHECKING:
    from typing import Any, NamedTuple, TypeVar
else:
    from ._typing import NamedTuple, TypeVar

__all__ = (
    "OPTIONS",
    "Option",
    "PoolOptions",
    "RESOLVED_FIELDS",
    "TaskPolicy",
    "available_cpu_count",
    "default_start_method",
)

_log = logging.getLogger("workcrew")

#: Worker kinds that exist today; later kinds register in workcrew._backends.
#: "dask" is chosen with ``backend="dask"`` rather than ``kind=``.
KINDS = ("process", "thread", "async")
BACKENDS = ("local", "dask")
#: What ``kind=`` accepts: a worker kind, or "auto" (routed per function, see _auto.py).
CHOICES = (*KINDS, "auto")
#: What ``worker_output=`` accepts: process workers' lines prefixed ``[worker 3] ``, or as written.
WORKER_OUTPUT = ("tagged", "plain")


class _OptionRecord(NamedTuple):
    name: str
    default: object
    doc: str
    field: str | None
    pool: str | None
    executor: str | None
    in_build: bool


class Option(_OptionRecord):
    """One pool option: its default, meaning, storage and keyword in each front end.

    ``name`` is the keyword of ``PoolOptions.build`` (the option's own name when
    not ``in_build``: the front ends resolve it before ``build``); ``default`` is
    its default there and in every front end.  ``field`` is the ``PoolOptions``
    field that keeps the value (``policy.<attribute>`` for the ``TaskPolicy``),
    or None when the value only shapes other fields.  ``pool`` and ``executor``
    are the keywords of ``Pool`` and ``Executor``, None where one does not take
    the option.  ``field``, ``pool`` and ``executor`` left at ``""`` mean ``name``.

    A ``NamedTuple`` (as every record of this module): ``dataclasses`` would
    load ``inspect`` with ``from workcrew import Pool``.
    """

    __slots__ = ()

    def __new__(
        cls,
        name: str,
        default: object,
        doc: str,
        field: str | None = "",
        pool: str | None = "",
        executor: str | None = "",
        in_build: bool = True,
    ) -> Option:
        def named(value: str | None) -> str | None:
            return name if value == "" else value

        return super().__new__(
            cls, name, default, doc, named(field), named(pool), named(executor), in_build
        )


#: Every pool option.  Their order is free: the front ends' positional order is the stdlib's.
OPTIONS: tuple[Option, ...] = (
    Option(
        "workers",
        None,
        "the number of workers asked for; None: the kind's default",
        field="requested_workers",
        pool="processes",
        executor="max_workers",
    ),
    Option(
        "context",
        None,
        "a multiprocessing context, whose start method applies when start_method is None",
        field=None,
        executor="mp_context",
        in_build=False,
    ),
    Option("initializer", None, "called by each worker at start; returns the worker's state"),
    Option("initargs", (), "the initializer's arguments"),
    Option(
        "max_tasks_per_worker",
        None,
        "tasks after which a process worker is replaced; None: never",
        pool="maxtasksperchild",
        executor="max_tasks_per_child",
    ),
    Option("worker_exit", None, "called with a worker's state as it ends gracefully", field=None),
    Option("kind", "process", "the worker kind: 'process', 'thread', 'async' or 'auto'"),
    Option("start_method", None, "'fork', 'spawn' or 'forkserver'; None: the platform's"),
    Option("chunksize", None, "the chunk size of every map call; None: learnt from durations"),
    Option("task_timeout", None, "seconds a task may run; None: no limit", field="policy.timeout"),
    Option("retries", 0, "further attempts after a failure in retry_on", field="policy.retries"),
    Option("retry_on", (Exception,), "exception types retried", field="policy.retry_on"),
    Option(
        "retry_backoff", 0.0, "seconds before a retry, doubled each time", field="policy.backoff"
    ),
    Option("max_memory_per_worker", None, "resident bytes that get a process worker replaced"),
    Option("concurrency_per_worker", 1, "tasks each process worker runs at once"),
    Option("event_loop", "auto", "async and hybrid workers' loop: 'auto', 'asyncio' or 'uvloop'"),
    Option("worker_output", "plain", "process workers' printed lines: 'plain' or 'tagged'"),
    Option("timeline", False, "record every task's span (worker, start, end) for timeline()"),
    Option("dashboard", False, "serve a live page of the pool on 127.0.0.1 (docs/dashboard.md)"),
    Option("thread_name_prefix", "", "thread workers are named '<prefix>_<n>'", pool=None),
    Option("backend", "local", "'local' workers, or 'dask': a Dask cluster's", field=None),
    Option("address", None, "backend='dask': the scheduler's address", field="dask_address"),
    Option("client", None, "backend='dask': a distributed.Client", field="dask_client"),
    Option("security", None, "backend='dask': distributed.Security", field="dask_security"),
)

#: PoolOptions fields that build computes rather than keeps as given; their defaults are their own.
RESOLVED_FIELDS = {
    "workers": "the number of workers: the one asked for, or the kind's default",
    "start_method": "the one asked for or the platform's; fork if initargs must be inherited",
}


def _defaults_by(attribute: str) -> dict[str, Any]:
    """Declared defaults by option ``name`` or ``field``; one declared twice fails the import."""
    defaults: dict[str, Any] = {}
    for option in OPTIONS:
        key = getattr(option, attribute)
        if key in defaults:
            raise ValueError(f"two pool options declare {attribute} {key!r}")
        if key is not None:
            defaults[key] = option.default
    return defaults


#: ``Any``: each use (a build keyword, a field) states its own type.
_DEFAULT = _defaults_by("name")
#: By PoolOptions field, and ``policy.<attribute>`` for TaskPolicy's.
_FIELD_DEFAULT = _defaults_by("field")


_Class = TypeVar("_Class", bound=type)


def _with_field_docs(cls: _Class) -> _Class:
    """``cls`` with a line per field appended to its docstring, from OPTIONS."""
    lines = [cls.__doc__ or "", "", "Fields (their options are declared in OPTIONS):", ""]
    names: tuple[str, ...] = cls._fields  # type: ignore[attr-defined]  # a NamedTuple class
    for name in names:
        if name in RESOLVED_FIELDS:
            lines.append(f"* ``{name}``: {RESOLVED_FIELDS[name]}")
            continue
        for option in OPTIONS:
            kept = option.field or ""
            if kept == name or kept.startswith(f"{name}."):
                origin = "" if kept == option.name else f" (option ``{option.name}``)"
                lines.append(f"* ``{kept}``{origin}: {option.doc}")
    cls.__doc__ = "\n".join(lines)
    return cls


def default_start_method() -> str:
    """The start method used when none is given.

    ``forkserver`` where the platform has it (Linux), else ``spawn``.  Not
    ``fork``: the pool's master thread, and any thread of your program, may hold
    a lock at the moment of ``fork()``, and the child then deadlocks on it (the
    reason CPython 3.12 warns and 3.14 switched its own default).  forkserver
    forks from a clean single-threaded server, so workers start fast and safe.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        return "forkserver"
    return "spawn"


class TaskPolicy(NamedTuple):
    """What happens to a task that fails or runs too long (pool default, per-call overrides).

    ``timeout``: seconds a task may run; then it fails with ``TaskTimeout``
    (process workers are killed and replaced).  ``retries``: further attempts
    after a failure whose type is in ``retry_on``, waiting ``backoff`` seconds,
    doubled at each attempt.
    """

    timeout: float | None = _FIELD_DEFAULT["policy.timeout"]
    retries: int = _FIELD_DEFAULT["policy.retries"]
    retry_on: tuple[type[BaseException], ...] = _FIELD_DEFAULT["policy.retry_on"]
    backoff: float = _FIELD_DEFAULT["policy.backoff"]

    def override(self, *, timeout: float | None = None, retries: int | None = None) -> TaskPolicy:
        """This policy with a call's own ``timeout`` or ``retries``, checked."""
        if timeout is None and retries is None:
            return self
        check_policy(timeout, retries, self.retry_on, self.backoff)
        return self._replace(
            timeout=self.timeout if timeout is None else timeout,
            retries=self.retries if retries is None else retries,
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return float(self.backoff * 2 ** (attempt - 1))


#: The longest task timeout (seconds): selectors wait at most 2**31 - 1 milliseconds.
MAX_TIMEOUT = (2**31 - 1) / 1000


def check_policy(
    timeout: float | None, retries: int | None, retry_on: object, backoff: object
) -> None:
    """Raise ``ValueError``/``TypeError`` for an invalid timeout, retry count or retry_on."""
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"task_timeout must be a number of seconds, got {timeout!r}")
        if not timeout > 0:
            raise ValueError(f"task_timeout={timeout} is invalid: it must be > 0 seconds")
        if timeout > MAX_TIMEOUT:  # the master's selector counts milliseconds in 32 bits
            raise ValueError(
                f"task_timeout={timeout} is too large: at most {MAX_TIMEOUT:,.0f} seconds "
                "(24 days); use None for no timeout"
            )
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError(f"retries must be an int, got {retries!r}")
        if retries < 0:
            raise ValueError(f"retries={retries} is invalid: it must be 0 or more")
    if not (
        isinstance(retry_on, tuple)
        and retry_on
        and all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on)
    ):
        raise TypeError(f"retry_on must be a non-empty tuple of exception types, got {retry_on!r}")
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
        raise ValueError(f"retry_backoff={backoff!r} is invalid: it must be seconds >= 0")


@_with_field_docs
class PoolOptions(NamedTuple):
    """Everything that shapes one pool; built by the front ends, read by the engine."""

    workers: int
    requested_workers: int | None = _FIELD_DEFAULT["requested_workers"]
    kind: str = _FIELD_DEFAULT["kind"]
    start_method: str = "forkserver"
    # With a worker_exit, initializer is a WorkerHooks carrying both (see _state.py).
    initializer: Callable[..., object] | None = _FIELD_DEFAULT["initializer"]
    initargs: tuple[Any, ...] = _FIELD_DEFAULT["initargs"]
    max_tasks_per_worker: int | None = _FIELD_DEFAULT["max_tasks_per_worker"]
    chunksize: int | None = _FIELD_DEFAULT["chunksize"]
    policy: TaskPolicy = TaskPolicy()
    max_memory_per_worker: int | None = _FIELD_DEFAULT["max_memory_per_worker"]
    concurrency_per_worker: int = _FIELD_DEFAULT["concurrency_per_worker"]
    event_loop: str = _FIELD_DEFAULT["event_loop"]
    timeline: bool = _FIELD_DEFAULT["timeline"]
    dashboard: bool = _FIELD_DEFAULT["dashboard"]
    thread_name_prefix: str = _FIELD_DEFAULT["thread_name_prefix"]
    worker_output: str = _FIELD_DEFAULT["worker_output"]
    dask_address: str | None = _FIELD_DEFAULT["dask_address"]
    dask_client: Any = _FIELD_DEFAULT["dask_client"]
    dask_security: Any = _FIELD_DEFAULT["dask_security"]

    @property
    def worker_exit(self) -> Callable[[Any], object] | None:
        """What each worker calls with its state when it ends gracefully."""
        hooks = self.initializer
        return hooks.worker_exit if isinstance(hooks, WorkerHooks) else None

    @classmethod
    def build(
        cls,
        workers: int | None,
        *,
        kind: str = _DEFAULT["kind"],
        start_method: str | None = _DEFAULT["start_method"],
        initializer: Callable[..., object] | None = _DEFAULT["initializer"],
        initargs: tuple[Any, ...] | list[Any] = _DEFAULT["initargs"],
        worker_exit: Callable[[Any], object] | None = _DEFAULT["worker_exit"],
        max_tasks_per_worker: int | None = _DEFAULT["max_tasks_per_worker"],
        chunksize: int | None = _DEFAULT["chunksize"],
        task_timeout: float | None = _DEFAULT["task_timeout"],
        retries: int = _DEFAULT["retries"],
        retry_on: tuple[type[BaseException], ...] | type[BaseException] = _DEFAULT["retry_on"],
        retry_backoff: float = _DEFAULT["retry_backoff"],
        max_memory_per_worker: int | None = _DEFAULT["max_memory_per_worker"],
        concurrency_per_worker: int = _DEFAULT["concurrency_per_worker"],
        event_loop: str = _DEFAULT["event_loop"],
        timeline: bool = _DEFAULT["timeline"],
        dashboard: bool = _DEFAULT["dashboard"],
        thread_name_prefix: str = _DEFAULT["thread_name_prefix"],
        worker_output: str = _DEFAULT["worker_output"],
        backend: str = _DEFAULT["backend"],
        address: str | None = _DEFAULT["address"],
        client: Any = _DEFAULT["client"],
        security: Any = _DEFAULT["security"],
    ) -> PoolOptions:
        """Check every value and fill in defaults; raise ``ValueError``/``TypeError``."""
        hooks, cluster = (initializer, worker_exit), (address, client, security)
        kind = _checked_kind(kind, backend, hooks, concurrency_per_worker, *cluster)
        count = _worker_count(workers, kind)
        start_method, initializer = _start_method_and_hooks(
            start_method, initializer, initargs, worker_exit, kind
        )
        _check_sizes(max_tasks_per_worker, chunksize)
        policy = _policy(task_timeout, retries, retry_on, retry_backoff)
        _check_capacity(max_memory_per_worker, concurrency_per_worker, kind)
        _check_loop_and_output(event_loop, thread_name_prefix, (timeline, dashboard), worker_output)
        return cls(
            workers=count,
            event_loop=event_loop,
            requested_workers=workers,
            kind=kind,
            start_method=start_method,
            initializer=initializer,
            initargs=tuple(initargs),
            max_tasks_per_worker=max_tasks_per_worker,
            policy=policy,
            max_memory_per_worker=max_memory_per_worker,
            chunksize=chunksize,
            concurrency_per_worker=concurrency_per_worker,
            timeline=timeline,
            dashboard=dashboard,
            thread_name_prefix=thread_name_prefix,
            worker_output=worker_output,
            dask_address=address,
            dask_client=client,
            dask_security=security,
        )


def _checked_kind(
    kind: str,
    backend: str,
    hooks: tuple[object, object],
    concurrency_per_worker: int,
    address: object,
    client: object,
    security: object,
) -> str:
    """The worker kind: ``kind`` checked, or "dask" for ``backend="dask"``.

    ``hooks`` are the initializer and worker_exit, which the dask backend refuses.
    """
    if kind not in CHOICES:
        raise ValueError(f"kind={kind!r} is not a worker kind; choose one of {CHOICES}")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is invalid; choose one of {BACKENDS}")
    if backend == "dask":
        check_dask(kind, *hooks, concurrency_per_worker, address, client)
        return "dask"
    if address is not None or client is not None or security is not None:
        raise ValueError("address=, client= and security= need backend='dask'")
    return kind


def _worker_count(workers: int | None, kind: str) -> int:
    """``workers``, or the kind's default when None; checked."""
    if workers is None:
        workers = default_workers(kind)
    check_workers(workers)
    return workers


def _start_method_and_hooks(
    start_method: str | None,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...] | list[Any],
    worker_exit: Callable[[Any], object] | None,
    kind: str,
) -> tuple[str, Callable[..., object] | None]:
    """The start method, and what workers call at start (a WorkerHooks with a worker_exit)."""
    chosen = start_method is not None
    if start_method is None:
        start_method = default_start_method()
    if start_method not in multiprocessing.get_all_start_methods():
        raise ValueError(
            f"start_method={start_method!r} is not available here; "
            f"choose one of {tuple(multiprocessing.get_all_start_methods())}"
        )
    hooks = _hooks(initializer, initargs, worker_exit)
    if hooks is not None and kind in ("process", "auto"):
        start_method = start_method_for(hooks, tuple(initargs), start_method, chosen)
    return start_method, hooks


def _hooks(
    initializer: Callable[..., object] | None,
    initargs: object,
    worker_exit: Callable[[Any], object] | None,
) -> Callable[..., object] | None:
    """``initializer``, joined with ``worker_exit`` into a WorkerHooks when there is one."""
    if initializer is not None and not callable(initializer):
        raise TypeError(f"initializer must be callable, got {initializer!r}")
    if not isinstance(initargs, (tuple, list)):
        raise TypeError(f"initargs must be a tuple, got {type(initargs).__name__}")
    if worker_exit is None:
        return initializer
    if not callable(worker_exit):
        raise TypeError(
            f"worker_exit must be callable (it is called with the worker's state), "
            f"got {worker_exit!r}"
        )
    return WorkerHooks(initializer, worker_exit)


def _check_sizes(max_tasks_per_worker: int | None, chunksize: int | None) -> None:
    """``maxtasksperchild`` and ``chunksize``: None, or a positive int."""
    if max_tasks_per_worker is not None:
        check_max_tasks(max_tasks_per_worker)
    check_chunksize(chunksize)


def _policy(
    task_timeout: float | None,
    retries: int,
    retry_on: tuple[type[BaseException], ...] | type[BaseException],
    retry_backoff: float,
) -> TaskPolicy:
    """The pool's TaskPolicy, checked; one exception type stands for a tuple of it."""
    if isinstance(retry_on, type):
        retry_on = (retry_on,)
    check_policy(task_timeout, retries, retry_on, retry_backoff)
    return TaskPolicy(task_timeout, retries, retry_on, float(retry_backoff))


def _check_capacity(
    max_memory_per_worker: int | None, concurrency_per_worker: int, kind: str
) -> None:
    """A worker's memory limit and tasks at once (more than one only in process workers)."""
    if max_memory_per_worker is not None:
        check_positive_int("max_memory_per_worker", max_memory_per_worker, "bytes")
    check_positive_int("concurrency_per_worker", concurrency_per_worker, "tasks at once")
    if concurrency_per_worker > 1 and kind != "process":
        raise ValueError(
            f"concurrency_per_worker={concurrency_per_worker} needs kind='process' "
            f"(got kind={kind!r}): for many tasks at once in one process, raise "
            "`processes` of a thread or async pool instead"
        )


def _check_loop_and_output(
    event_loop: str, thread_name_prefix: str, switches: tuple[bool, bool], worker_output: str
) -> None:
    """The event loop, thread names, timeline and dashboard switches and worker output mode."""
    check_event_loop(event_loop)
    if not isinstance(thread_name_prefix, str):
        raise TypeError(f"thread_name_prefix must be a str, got {thread_name_prefix!r}")
    for name, switch in zip(("timeline", "dashboard"), switches, strict=True):
        if not isinstance(switch, bool):
            raise TypeError(f"{name} must be True or False, got {switch!r}")
    if worker_output not in WORKER_OUTPUT:
        raise ValueError(
            f"worker_output={worker_output!r} is invalid; choose one of {WORKER_OUTPUT}"
        )


def check_dask(
    kind: str,
    initializer: object,
    worker_exit: object,
    concurrency_per_worker: int,
    address: object,
    client: object,
) -> None:
    """What backend='dask' cannot honour, refused with the reason (docs/dask.md)."""
    if kind != "process":
        raise ValueError(
            f"backend='dask' runs tasks on the cluster's workers; kind={kind!r} does not apply "
            "(leave kind at its default)"
        )
    if initializer is not None or worker_exit is not None:
        raise ValueError(
            "backend='dask' has no per-worker initializer or worker_exit: Dask workers are "
            "shared by every client. Use a Dask worker plugin (client.register_plugin)."
        )
    if concurrency_per_worker != 1:
        raise ValueError("concurrency_per_worker does not apply to backend='dask'")
    if address is not None and client is not None:
        raise ValueError("give backend='dask' an address= or a client=, not both")
    if address is not None and not isinstance(address, str):
        raise TypeError(
            f"address must be a scheduler address such as 'tcp://host:8786', got {address!r}"
        )


def default_workers(kind: str) -> int:
    """One process per usable CPU; threads wait on IO, so more of them (as ThreadPoolExecutor);
    coroutines are cheap: 100 at once (a common connection-pool size)."""
    cpus = available_cpu_count()
    if kind == "auto":
        kind = "thread"  # the number reported for an auto pool: its IO concurrency
    if kind == "async":
        return 100
    if kind == "dask":  # chunks kept on the cluster: four per thread hide Dask's round trips
        return 4 * cpus
    return min(32, cpus + 4) if kind == "thread" else cpus


def start_method_for(
    hooks: Callable[..., object], initargs: tuple[Any, ...], start_method: str, chosen: bool
) -> str:
    """The start method whose workers can receive the initializer and ``initargs``.

    They are pickled for each spawn or forkserver worker the way
    ``multiprocessing`` pickles a ``Process``'s arguments, so its queues,
    locks and values pass (see _pickling.py).  What cannot pass (a
    ``multiprocessing.Queue`` made in the default fork context on Python <= 3.13,
    a lock of ``threading``) reaches forked workers by inheritance: a pool whose
    start method was not chosen then uses ``fork``, as ``multiprocessing.Pool``
    does; one whose method was chosen gets a SerializationError saying why.
    """
    if start_method == "fork":
        return start_method
    try:
        check_for_child((hooks, initargs))
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if not chosen and "fork" in multiprocessing.get_all_start_methods():
            _log.info(
                "initargs cannot be pickled for %s workers (%s); this pool starts its "
                "workers with fork, which passes them by inheritance as multiprocessing.Pool "
                "does. Pass start_method= to choose.",
                start_method,
                reason,
            )
            return "fork"
        raise serialization_error(
            f"cannot send initializer {getattr(hooks, '__qualname__', hooks)!r} with initargs "
            f"to {start_method} worker processes: {reason}. Create multiprocessing objects "
            f"from the pool's start method (multiprocessing.get_context({start_method!r})"
            ".Queue()), use start_method='fork', or pass picklable initargs.",
            cause=exc,
        ) from exc
    return start_method


public(default_start_method)
