"""The small interface between the master and a worker kind.

The master owns scheduling and bookkeeping; a worker kind owns only transport
and lifetime of its workers.  A kind is a module in ``workcrew._backends``
that ends with ``backend_class = ...``, a subclass of :class:`WorkerBackend`.

Contract, in the order things happen::

    backend = backend_class(options, loop)       # in the caller's thread
    handle  = backend.start_worker(worker_id, events)
    handle.send_chunk(seq, chunk)                 # master thread, never blocks
        ... events.on_ready / on_result / on_exit  # always on the master thread
    handle.request_stop()                         # finish queued chunks, then exit
    handle.kill()                                 # stop now (process kinds: signal)
    backend.close()                               # after every worker has exited

All ``events`` callbacks run on the master thread: a backend whose workers
live in other threads hands results over with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from ._exceptions import WorkcrewError
from ._execute import Outcome
from ._options import PoolOptions

TYPE_CHECKING = False  # no typing at run time: the engine loads with a program's first pool
if TYPE_CHECKING:
    from typing import Any

__all__ = ("Chunk", "Loop", "Report", "Sent", "WorkerBackend", "WorkerEvents", "WorkerHandle")


class Chunk:
    """What the master sends a worker in one message: one function on a run of items of one job.

    (The records of the engine are plain classes, not dataclasses: ``dataclasses``
    and what it imports would cost a program ~7 ms at its first pool.)
    """

    __slots__ = ("fn", "items", "mode", "skip")

    def __init__(
        self,
        fn: Callable[..., Any],
        mode: int,
        items: list[Any],
        skip: frozenset[int] | None = None,
    ) -> None:
        self.fn = fn
        self.mode = mode
        self.items = items
        #: indices whose arguments could not be sent (already failed by the master)
        self.skip = skip


class Sent:
    """What ``send_chunk`` did: the items it could not send (by index), and the bytes it sent."""

    __slots__ = ("failed", "nbytes")

    def __init__(self, failed: dict[int, BaseException], nbytes: int = 0) -> None:
        self.failed = failed
        self.nbytes = nbytes


class Loop(ABC):
    """What the master's event loop offers a backend."""

    @abstractmethod
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the master thread whenever ``fd`` is readable."""

    @abstractmethod
    def remove_reader(self, fd: int) -> None:
        """Stop watching ``fd`` for reading (no-op if not watched)."""

    @abstractmethod
    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the master thread whenever ``fd`` is writable."""

    @abstractmethod
    def remove_writer(self, fd: int) -> None:
        """Stop watching ``fd`` for writing (no-op if not watched)."""

    @abstractmethod
    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the master thread soon; callable from any thread."""

    @abstractmethod
    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the master thread after ``delay`` seconds (master thread only)."""


class WorkerEvents(ABC):
    """Callbacks through which a backend reports to the master (master thread only)."""

    @abstractmethod
    def on_ready(self, handle: WorkerHandle) -> None:
        """The worker finished its initializer and takes work."""

    @abstractmethod
    def on_result(self, handle: WorkerHandle, seq: int, duration: float, outcome: Outcome) -> None:
        """Chunk ``seq`` finished; ``duration`` is the worker-measured compute time."""

    @abstractmethod
    def on_chunk_error(
        self, handle: WorkerHandle, seq: int, error: WorkcrewError, *, ran: bool
    ) -> None:
        """The oldest unanswered chunk failed as a whole with ``error``.

        ``seq`` is that chunk's, or -1 when the worker cannot tell which it was
        (a result that could not be unpickled); a ``seq`` that is not the
        oldest unanswered chunk's is ignored.

        ``ran`` tells whether its tasks ran (their results were lost on the way
        back) or never started (the worker could not unpickle the chunk).
        """

    @abstractmethod
    def on_init_failed(self, handle: WorkerHandle, error: BaseException) -> None:
        """The initializer raised; ``error`` carries its traceback as ``__cause__``."""

    @abstractmethod
    def on_exit(self, handle: WorkerHandle, exitcode: int | None) -> None:
        """The worker is gone; every result it sent was reported before this."""


class WorkerHandle(ABC):
    """The master's view of one worker."""

    worker_id: int
    pid: int | None = None
    #: True once the worker is known to be gone, which may be before
    #: ``on_exit`` (its last results are still being decoded): send it nothing.
    exited: bool = False

    @abstractmethod
    def send_chunk(self, seq: int, chunk: Chunk) -> Sent:
        """Queue a chunk for the worker without blocking.

        Items that could not be sent are reported in the result, keyed by
        item index, with the error for each; the rest is sent.  If no item
        could be sent, nothing is sent.
        """

    @abstractmethod
    def request_stop(self) -> None:
        """Let the worker finish what it was sent, then exit."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the worker now, abandoning its current task if the kind allows."""

    @abstractmethod
    def join(self, timeout: float | None) -> bool:
        """Wait for the worker to be gone; True if it is."""

    def attach(self) -> None:  # noqa: B027 - only kinds with prepare_worker need it
        """Start reporting to the master (master thread); see ``prepare_worker``."""

    def cancel_current(self) -> bool:
        """Cancel the task the worker runs now, if the kind can (coroutines); True if so.

        The cancelled task reports ``CancelledError`` as its outcome.
        """
        return False

    def answers_in_transit(self) -> int:
        """Chunks the worker has answered whose answers are not reported yet (being decoded)."""
        return 0

    def memory(self) -> int | None:
        """Resident memory of the worker in bytes, if the kind can measure it."""
        return None

    def last_stderr_lines(self) -> list[str]:
        """The last lines the worker wrote to its own stderr, if the kind keeps them."""
        return []


class WorkerBackend(ABC):
    """A worker kind: starts workers and releases shared transport resources."""

    #: Whether ``kill`` really stops a running task (processes: yes; threads: no).
    can_kill: bool = False
    #: Start workers from the caller's thread (``prepare_worker``) when work is
    #: submitted, instead of from the master thread: the ``fork`` start method
    #: copies the forking thread, and the caller's is the one to copy.
    start_eagerly: bool = False

    def __init__(self, options: PoolOptions, loop: Loop) -> None:
        self.options = options
        self.loop = loop

    def check_function(self, fn: Callable[..., Any]) -> None:  # noqa: B027 - optional hook
        """Raise ``TypeError`` if this kind cannot run ``fn`` (checked at submission)."""

    @abstractmethod
    def start_worker(self, worker_id: int, events: WorkerEvents) -> WorkerHandle:
        """Start one worker; it reports ``on_ready`` (or ``on_init_failed``) when up."""

    def prepare_worker(self, worker_id: int, events: WorkerEvents) -> WorkerHandle:
        """Start a worker from the caller's thread (``start_eagerly`` kinds only).

        The handle is not yet watched by the master: pass it to
        ``Master.adopt`` (on the master thread), which calls ``attach``.
        """
        raise NotImplementedError(f"{type(self).__name__} starts workers on the master thread")

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release resources shared by this backend's workers."""

    def worker_target(self, configured: int) -> int:
        """How many workers the pool keeps now: ``configured``, unless a cluster says otherwise."""
        return configured

    def parallelism(self, workers: int) -> int:
        """How many chunks really run at once with ``workers`` workers (a cluster: its threads)."""
        return workers

    def chunk_overhead(self) -> float:
        """Seconds each chunk costs this kind beyond its items' own run time (0: negligible).

        The scheduler makes chunks long enough to dwarf it: a Dask cluster's
        few milliseconds per task, not a local pipe's microseconds.
        """
        return 0.0

    def lost_workers(self) -> tuple[str, ...]:
        """Workers of a cluster that left it while the pool ran (cluster kinds only)."""
        return ()


class Report:
    """A finished chunk on its way to the master thread (kinds whose workers are threads).

    Posted with ``loop.call_soon_threadsafe``; calling it reports ``on_result``.
    """

    __slots__ = ("duration", "events", "handle", "outcome", "seq")

    def __init__(
        self,
        events: WorkerEvents,
        handle: WorkerHandle,
        seq: int,
        duration: float,
        outcome: Outcome,
    ) -> None:
        self.events, self.handle, self.seq = events, handle, seq
        self.duration, self.outcome = duration, outcome

    def __call__(self) -> None:
        self.events.on_result(self.handle, self.seq, self.duration, self.outcome)
