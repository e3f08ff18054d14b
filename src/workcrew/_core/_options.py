"""Validated pool options, shared by every front end (Pool, Executor).

Invalid values raise here, at construction, with a message that says what was
given and what is accepted: nothing is discovered later inside a worker.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ._exceptions import serialization_error
from ._execute import EVENT_LOOPS
from ._pickling import check_for_child
from ._state import WorkerHooks
from ._system import available_cpu_count

__all__ = ("PoolOptions", "TaskPolicy", "available_cpu_count", "default_start_method")

_log = logging.getLogger("workcrew")

#: Worker kinds that exist today; later kinds register in workcrew._backends.
#: "dask" is chosen with ``backend="dask"`` rather than ``kind=``.
KINDS = ("process", "thread", "async")
BACKENDS = ("local", "dask")
#: What ``kind=`` accepts: a worker kind, or "auto" (routed per function, see _auto.py).
CHOICES = (*KINDS, "auto")
#: What ``worker_output=`` accepts: process workers' lines prefixed ``[worker 3] ``, or as written.
WORKER_OUTPUT = ("tagged", "plain")


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


@dataclass(frozen=True)
class TaskPolicy:
    """What happens to a task that fails or runs too long (pool default, per-call overrides).

    ``timeout``: seconds a task may run; then it fails with ``TaskTimeout``
    (process workers are killed and replaced).  ``retries``: further attempts
    after a failure whose type is in ``retry_on``, waiting ``backoff`` seconds,
    doubled at each attempt.
    """

    timeout: float | None = None
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    backoff: float = 0.0

    def override(self, *, timeout: float | None = None, retries: int | None = None) -> TaskPolicy:
        """This policy with a call's own ``timeout`` or ``retries``, checked."""
        if timeout is None and retries is None:
            return self
        check_policy(timeout, retries, self.retry_on, self.backoff)
        return replace(
            self,
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


@dataclass(frozen=True)
class PoolOptions:
    """Everything that shapes one pool; built by the front ends, read by the engine."""

    workers: int
    #: what the caller asked for (None: the kind's default); kind="auto" sizes each kind from it
    requested_workers: int | None = None
    kind: str = "process"
    start_method: str = "forkserver"
    #: what each worker calls at start; its result is the worker's state.  With a
    #: ``worker_exit`` it is a WorkerHooks carrying both (see _state.py).
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    max_tasks_per_worker: int | None = None
    chunksize: int | None = None
    policy: TaskPolicy = TaskPolicy()
    max_memory_per_worker: int | None = None
    concurrency_per_worker: int = 1
    #: event loop of the async kind and hybrid workers: "auto" (uvloop if installed), ...
    event_loop: str = "auto"
    #: record every task's span (worker, start, end) for ``pool.timeline()``
    timeline: bool = False
    #: names of thread workers: "<prefix>_<n>" as ThreadPoolExecutor, or workcrew-worker-<id>
    thread_name_prefix: str = ""
    #: process workers' printed lines: "plain" (as printed) or "tagged" (``[worker 3] ...``)
    worker_output: str = "plain"
    #: backend="dask": the scheduler's address (None: a local cluster), or a Client, and
    #: distributed.Security for TLS
    dask_address: str | None = None
    dask_client: Any = None
    dask_security: Any = None

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
        kind: str = "process",
        start_method: str | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] | list[Any] = (),
        worker_exit: Callable[[Any], object] | None = None,
        max_tasks_per_worker: int | None = None,
        chunksize: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] | type[BaseException] = (Exception,),
        retry_backoff: float = 0.0,
        max_memory_per_worker: int | None = None,
        concurrency_per_worker: int = 1,
        event_loop: str = "auto",
        timeline: bool = False,
        thread_name_prefix: str = "",
        worker_output: str = "plain",
        backend: str = "local",
        address: str | None = None,
        client: Any = None,
        security: Any = None,
    ) -> PoolOptions:
        """Check every value and fill in defaults; raise ``ValueError``/``TypeError``."""
        if kind not in CHOICES:
            raise ValueError(f"kind={kind!r} is not a worker kind; choose one of {CHOICES}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is invalid; choose one of {BACKENDS}")
        if backend == "dask":
            check_dask(kind, initializer, worker_exit, concurrency_per_worker, address, client)
            kind = "dask"
        elif address is not None or client is not None or security is not None:
            raise ValueError("address=, client= and security= need backend='dask'")
        requested_workers = workers
        if workers is None:
            workers = default_workers(kind)
        check_workers(workers)
        chosen = start_method is not None
        if start_method is None:
            start_method = default_start_method()
        if start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"start_method={start_method!r} is not available here; "
                f"choose one of {tuple(multiprocessing.get_all_start_methods())}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, got {initializer!r}")
        if not isinstance(initargs, (tuple, list)):
            raise TypeError(f"initargs must be a tuple, got {type(initargs).__name__}")
        if worker_exit is not None:
            if not callable(worker_exit):
                raise TypeError(
                    f"worker_exit must be callable (it is called with the worker's state), "
                    f"got {worker_exit!r}"
                )
            initializer = WorkerHooks(initializer, worker_exit)
        if initializer is not None and kind in ("process", "auto"):
            start_method = start_method_for(initializer, tuple(initargs), start_method, chosen)
        if max_tasks_per_worker is not None:
            check_max_tasks(max_tasks_per_worker)
        if chunksize is not None:
            check_chunksize(chunksize)
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        check_policy(task_timeout, retries, retry_on, retry_backoff)
        if max_memory_per_worker is not None:
            _check_positive_int("max_memory_per_worker", max_memory_per_worker, "bytes")
        _check_positive_int("concurrency_per_worker", concurrency_per_worker, "tasks at once")
        if concurrency_per_worker > 1 and kind != "process":
            raise ValueError(
                f"concurrency_per_worker={concurrency_per_worker} needs kind='process' "
                f"(got kind={kind!r}): for many tasks at once in one process, raise "
                "`processes` of a thread or async pool instead"
            )
        check_event_loop(event_loop)
        if not isinstance(thread_name_prefix, str):
            raise TypeError(f"thread_name_prefix must be a str, got {thread_name_prefix!r}")
        if not isinstance(timeline, bool):
            raise TypeError(f"timeline must be True or False, got {timeline!r}")
        if worker_output not in WORKER_OUTPUT:
            raise ValueError(
                f"worker_output={worker_output!r} is invalid; choose one of {WORKER_OUTPUT}"
            )
        return cls(
            workers=workers,
            event_loop=event_loop,
            requested_workers=requested_workers,
            kind=kind,
            start_method=start_method,
            initializer=initializer,
            initargs=tuple(initargs),
            max_tasks_per_worker=max_tasks_per_worker,
            policy=TaskPolicy(task_timeout, retries, retry_on, float(retry_backoff)),
            max_memory_per_worker=max_memory_per_worker,
            chunksize=chunksize,
            concurrency_per_worker=concurrency_per_worker,
            timeline=timeline,
            thread_name_prefix=thread_name_prefix,
            worker_output=worker_output,
            dask_address=address,
            dask_client=client,
            dask_security=security,
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


def check_event_loop(event_loop: str) -> None:
    """ValueError for an unknown loop; ImportError naming the extra if uvloop is missing."""
    if event_loop not in EVENT_LOOPS:
        raise ValueError(f"event_loop={event_loop!r} is invalid; choose one of {EVENT_LOOPS}")
    if event_loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "event_loop='uvloop' needs the uvloop package: pip install 'workcrew[uvloop]' "
                "(or use event_loop='auto', which falls back to asyncio's loop)"
            ) from exc


def check_workers(workers: object) -> None:
    """The worker count, in the standard library's words (``max_workers must be ...``)."""
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(
            f"max_workers must be an int (the number of workers: Pool's processes, "
            f"Executor's max_workers), got {workers!r}"
        )
    if workers < 1:
        raise ValueError(
            f"max_workers must be greater than 0, got {workers} (the number of workers: "
            "Pool's processes, Executor's max_workers; None for the kind's default)"
        )


def check_max_tasks(max_tasks: object) -> None:
    """``maxtasksperchild``: ValueError for anything but a positive int, as multiprocessing."""
    if isinstance(max_tasks, bool) or not isinstance(max_tasks, int) or max_tasks < 1:
        raise ValueError(
            f"maxtasksperchild (max_tasks_per_child) must be a positive int or None, "
            f"got {max_tasks!r}"
        )


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


def check_chunksize(chunksize: int | None) -> None:
    """``None`` means adaptive; anything else must be a positive int."""
    if chunksize is not None:
        _check_positive_int("chunksize", chunksize, "items per chunk, or None for adaptive")


def _check_positive_int(name: str, value: object, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int ({meaning}), got {value!r}")
    if value < 1:
        raise ValueError(f"{name}={value} is invalid: {meaning} must be at least 1")
