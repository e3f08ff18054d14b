"""Jobs: what callers submit, as the master sees it.

A job is a source of items for one function plus a sink for their outcomes.
Three shapes cover every front-end call:

* :class:`CallJob`   one call, one ``concurrent.futures.Future`` (submit, apply_async)
* :class:`ListJob`   a whole list, one future for the list of results (map, starmap)
* :class:`StreamJob` a lazily fed iterator of results (imap, imap_unordered, Executor.map)

Threading rule: ``take``, ``deliver`` and ``abort`` run on the master thread
only; callers touch a job only through its future or its iterator.  A job that
is fed or consumed by callers (StreamJob) guards its buffers with its own
condition variable; the master never holds two job locks at once.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED_AND_NOTIFIED as _CANCELLED_AND_NOTIFIED
from concurrent.futures._base import RUNNING as _RUNNING

from ._exceptions import PoolClosedError, TimeoutError
from ._execute import CALL
from ._options import TaskPolicy

TYPE_CHECKING = False  # typing's names for checkers; stand-ins at run time (see _typing)
if TYPE_CHECKING:
    from typing import Any, Protocol
else:
    from ._typing import Any, Protocol

__all__ = (
    "CallJob",
    "Job",
    "ListJob",
    "ResultIterator",
    "RunSource",
    "StreamJob",
    "iterate_results",
    "resolve",
)

_log = logging.getLogger("concurrent.futures")

#: Outcomes of a run of consecutive items: values, and failures by index.
Run = tuple[list[Any], dict[int, BaseException] | None]


class RunSource(Protocol):
    """What result iterators read: a :class:`StreamJob`, or kind="auto"'s stream."""

    def feed(self) -> None:
        """Pull input up to the window (consumer's thread)."""

    def next_run(self, deadline: float | None) -> Run:
        """The next run of outcomes; StopIteration at the end."""

    def cancel(self) -> None:
        """The consumer abandoned the results: drop unstarted items."""

    def done(self) -> bool:
        """Every outcome was read (or the stream was cancelled or aborted)."""


class Tally:
    """Tasks of one map finished so far, and how many of those failed (for progress).

    Written by whichever thread delivers outcomes (a pool's master; for
    kind="auto", also the probing engine's), read by a progress display.
    """

    __slots__ = ("_lock", "done", "failed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = 0
        self.failed = 0

    def add(self, done: int, failed: int) -> None:
        with self._lock:
            self.done += done
            self.failed += failed


class Job:
    """Base: the master's side of one submitted unit of work."""

    fn: Callable[..., Any]
    mode: int
    #: key under which task durations are learned (same function => same key)
    key: Hashable
    #: fixed chunk size, or None for adaptive
    chunksize: int | None = None
    #: items the caller will still want; None while unknown (lazy input)
    remaining: int | None = None
    #: last chunk size the scheduler chose (a StreamJob sizes its window from it)
    chunk_hint: int = 1
    #: items a second the pool runs of this job, as the scheduler last estimated
    #: (0.0 until it has measured the function; a StreamJob sizes its window from it)
    rate_hint: float = 0.0
    #: timeout and retries of this job's tasks
    policy: TaskPolicy = TaskPolicy()
    #: counts outcomes as they are delivered, when someone shows progress
    tally: Tally | None = None

    def take(self, n: int) -> tuple[int, list[Any]] | None:
        """Up to ``n`` next items and the index of the first, or None if none now."""
        raise NotImplementedError

    def exhausted(self) -> bool:
        """True once no item will ever be taken again (the job leaves the queue)."""
        raise NotImplementedError

    def deliver(
        self, start: int, values: list[Any], errors: dict[int, BaseException] | None
    ) -> None:
        """Outcomes of items ``start .. start+len(values)``."""
        raise NotImplementedError

    def abort(self, exc: BaseException) -> None:
        """Fail everything not yet delivered (terminate, broken pool)."""
        raise NotImplementedError

    def cancel_pending(self, exc: BaseException) -> None:
        """Drop items not yet taken (shutdown(cancel_futures=True))."""
        self.abort(exc)

    def seal(self) -> None:
        """The pool is closing: take no input that is not already queued."""

    def done(self) -> bool:
        """True when every outcome has been delivered or the job was aborted."""
        raise NotImplementedError


def resolve(future: Future[Any], value: Any, exc: BaseException | None) -> None:
    """Settle ``future`` unless the caller already cancelled it (or it was aborted)."""
    # The caller may cancel or interrupt a future from its own thread at any
    # moment, so "done" is checked by the setter itself, not beforehand.
    try:
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)
    except InvalidStateError:
        pass  # cancelled by the caller, or aborted: nothing to deliver
    except BaseException:  # noqa: BLE001 - see below
        # A done-callback raised something concurrent.futures does not catch
        # (SystemExit, KeyboardInterrupt: it logs only Exception).  The future
        # is settled already; this runs on the master thread, which user code
        # must never end, so it is logged as concurrent.futures logs the rest.
        _log.exception("exception calling callback for %r", future)


class TaskFuture(Future[Any]):
    """A ``concurrent.futures.Future`` whose ``cancel()`` also stops a running task.

    The standard ``cancel()`` refuses once a task runs.  Where the worker kind
    can kill (processes), this one cancels the running task too: the future
    becomes cancelled at once and the worker running it is killed and replaced.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cancel_running: Callable[[], None] | None = None

    def cancel(self) -> bool:
        """Cancel the task, also while it runs (if its worker can be killed)."""
        if super().cancel():
            return True
        stop = self.cancel_running
        # Same steps as Future.cancel(), also allowed from RUNNING; the private
        # fields are those every supported CPython (3.10-3.13) has.
        with self._condition:
            if self._state != _RUNNING or stop is None:
                return False
            self._state = _CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]  # private in typeshed only
        stop()
        return True


class CallJob(Job):
    """``fn(*args, **kwargs)`` once, resolving a ``concurrent.futures.Future``."""

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], key: Hashable
    ) -> None:
        self.fn, self.mode, self.key = fn, CALL, key
        self.future: TaskFuture = TaskFuture()
        self._item: tuple[tuple[Any, ...], dict[str, Any]] | None = (args, kwargs)
        self.remaining = 1

    def take(self, n: int) -> tuple[int, list[Any]] | None:
        item, self._item = self._item, None
        self.remaining = 0
        # concurrent.futures contract: a future cancelled while pending never runs.
        if item is None or not self.future.set_running_or_notify_cancel():
            return None
        return 0, [item]

    def exhausted(self) -> bool:
        return self._item is None

    def deliver(
        self, start: int, values: list[Any], errors: dict[int, BaseException] | None
    ) -> None:
        resolve(self.future, values[0], errors[0] if errors else None)

    def abort(self, exc: BaseException) -> None:
        self._item = None
        resolve(self.future, None, exc)

    def cancel_pending(self, exc: BaseException) -> None:
        if self._item is not None:
            self._item = None
            self.future.cancel()  # as concurrent.futures: a cancelled, never-run future

    def done(self) -> bool:
        return self.future.done()


class ListJob(Job):
    """All items of a list; the future resolves to the list of results, in order.

    The first failure resolves the future with that exception and drops the
    items not yet started: their results could never be returned anyway.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        mode: int,
        items: list[Any],
        key: Hashable,
        chunksize: int | None,
    ) -> None:
        self.fn, self.mode, self.key, self.chunksize = fn, mode, key, chunksize
        self.future: Future[list[Any]] = Future()
        self.future.set_running_or_notify_cancel()
        # Settled or not, read per chunk without the future's lock: set by its
        # first done-callback, in whichever thread settles it (the master; the
        # caller's on KeyboardInterrupt); holding the cell, not the job: no cycle.
        self._settled = settled = [False]
        self.future.add_done_callback(lambda _: settled.__setitem__(0, True))
        self._items = items
        self._results: list[Any] = [None] * len(items)
        self._next = 0
        self._outstanding = len(items)
        self.remaining = len(items)
        if not items:
            self.future.set_result([])

    def take(self, n: int) -> tuple[int, list[Any]] | None:
        start = self._next
        if self._settled[0] or start >= len(self._items):
            return None
        chunk = self._items[start : start + n]
        self._next = start + len(chunk)
        self.remaining = len(self._items) - self._next
        return start, chunk

    def exhausted(self) -> bool:
        return self._settled[0] or self._next >= len(self._items)

    def deliver(
        self, start: int, values: list[Any], errors: dict[int, BaseException] | None
    ) -> None:
        if self.tally is not None:
            self.tally.add(len(values), len(errors) if errors else 0)
        if self._settled[0]:
            return
        if errors:
            first = min(errors)
            resolve(self.future, None, errors[first])
            self._items = []  # release the input; nothing more will run
            return
        self._results[start : start + len(values)] = values
        self._outstanding -= len(values)
        if self._outstanding == 0:
            results, self._results, self._items = self._results, [], []
            resolve(self.future, results, None)

    def abort(self, exc: BaseException) -> None:
        self._items = []
        resolve(self.future, None, exc)

    def done(self) -> bool:
        return self._settled[0]


class StreamJob(Job):
    """Items pulled lazily from the caller's iterable; results read back as an iterator.

    Backpressure: the caller's thread pulls input only while fewer than
    ``window`` items are between "pulled" and "handed back to the caller", so an
    endless generator runs in constant memory.  The input iterator is advanced
    only by the consuming thread (inside ``__next__``), never by the master, so
    a slow or raising generator cannot stall or break the engine.

    Invariant: delivered outcomes are stored by the first index of their run;
    the runs tile ``0 .. fed`` exactly, so the ordered reader can always find
    the run that starts at its position.
    """

    MIN_WINDOW = 64
    #: Seconds of the pool's work the window covers once the function is
    #: measured and its items' pickled size known (process workers): a task at
    #: the head that runs long (a heavy tail) stalls the other workers only
    #: after they have run this much work past it.
    WINDOW_SECONDS = 1.0
    #: Most items the WINDOW_SECONDS term asks for (tiny tasks: chunks then
    #: size the window).  Its bytes are bounded too (see Scheduler.chunk_size).
    MAX_RATE_WINDOW = 1024

    def __init__(
        self,
        fn: Callable[..., Any],
        mode: int,
        iterable: Any,
        key: Hashable,
        chunksize: int | None,
        ordered: bool,
        workers: int,
        on_input: Callable[[StreamJob], None],
    ) -> None:
        self.fn, self.mode, self.key, self.chunksize = fn, mode, key, chunksize
        self.ordered = ordered
        self._source: Iterator[Any] | None = iter(iterable)
        self._on_input = on_input
        self._cond = threading.Condition(threading.Lock())
        self._buffer: deque[tuple[int, list[Any]]] = deque()  # fed, not yet taken
        self._runs: dict[int, tuple[list[Any], dict[int, BaseException] | None]] = {}
        self._arrivals: deque[tuple[list[Any], dict[int, BaseException] | None]] = deque()
        self._fed = 0  # items pulled from the source
        self._consumed = 0  # items handed back to the caller
        self._aborted: BaseException | None = None
        self._abort_raised = False  # the reader has seen _aborted (it is raised once)
        self._sealed = False  # the pool closed: input not yet pulled is never run
        self._starved = False  # master found the buffer empty: wake it on the next feed
        self._workers = workers

    # -- caller side -------------------------------------------------------------

    @property
    def window(self) -> int:
        """Items read ahead of the reader: every worker fed four chunks deep, or a second's work.

        Four chunks per worker keep the workers busy while the reader keeps up.
        A second of the pool's work (capped, see MAX_RATE_WINDOW) lets them go on
        while an ordered reader waits for one long task: on 200 heavy-tailed
        tasks of 10 ms on average, one of them 0.67 s, on 2 process workers,
        Executor.map took 1.16 of the ideal time with MIN_WINDOW's 64 items
        alone, 1.03 with this term.
        """
        # A fixed chunksize is known before the scheduler first sizes a chunk.
        chunk = self.chunksize or self.chunk_hint
        timely = int(min(self.MAX_RATE_WINDOW, self.rate_hint * self.WINDOW_SECONDS))
        return max(self.MIN_WINDOW, 4 * self._workers * chunk, timely)

    def feed(self) -> None:
        """Pull input up to the window (caller's thread)."""
        with self._cond:
            source = None if self._sealed else self._source
        if source is None:
            return
        want = self.window - (self._fed - self._consumed)
        if want <= 0:
            return
        # Whole chunks of an explicit chunksize, so that every batch starts on
        # a chunk boundary (see below).
        step = self.chunksize or 1
        want = -(-want // step) * step
        error: BaseException | None = None
        batch: list[Any] = []
        try:
            batch.extend(itertools.islice(source, want))
        except Exception as exc:  # noqa: BLE001 - the caller's generator raised: a result
            error = exc
            # As multiprocessing: the error takes the place of the chunk the
            # input was filling, whose items read so far never run (with
            # chunksize 1 or adaptive chunks: the failing item's own place).
            del batch[len(batch) // step * step :]
        with self._cond:
            start = self._fed
            if batch:
                self._buffer.append((start, batch))
                self._fed += len(batch)
            if error is not None or len(batch) < want:
                self._source = None
                if error is not None:
                    self._store(self._fed, [None], {0: error})
                    self._fed += 1
            wake, self._starved = self._starved, False
        if wake:
            self._on_input(self)

    def next_run(self, deadline: float | None) -> Run:
        """The next run of outcomes (ordered, or by completion), fed as needed.

        Raises StopIteration at the end, the abort error if the pool stopped,
        TimeoutError past ``deadline``.  Only :class:`ResultIterator` calls it.
        """
        while True:
            self.feed()
            with self._cond:
                while True:
                    run = self._pop_run()
                    if run is not None:
                        self._consumed += len(run[0])
                        return run
                    if self._aborted is not None:
                        # Raised once; then the results end, as an iterator's
                        # must: a loop that catches and goes on terminates.
                        if self._abort_raised:
                            raise StopIteration
                        self._abort_raised = True
                        raise self._aborted
                    if self._source is None and self._consumed >= self._fed:
                        raise StopIteration
                    if self._sealed and self._consumed >= self._fed:
                        raise PoolClosedError(
                            "the pool was closed before this map's input was read to the end: "
                            "items not yet read from the input are not run. Read the results "
                            "before closing the pool (or leaving its `with` block)."
                        )
                    room = self._fed - self._consumed < self.window
                    if self._source is not None and not self._sealed and room:
                        break  # room for more input: feed outside the lock
                    timeout = None if deadline is None else deadline - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        raise TimeoutError("no result arrived within the timeout")
                    self._cond.wait(timeout)

    def _pop_run(self) -> Run | None:
        if self.ordered:
            return self._runs.pop(self._consumed, None)
        return self._arrivals.popleft() if self._arrivals else None

    def cancel(self) -> None:
        """The caller abandoned the iterator: drop unstarted items (any thread)."""
        with self._cond:
            self._source = None
            self._buffer.clear()
            self._fed = self._consumed  # nothing more will be waited for

    # -- master side ---------------------------------------------------------------

    def take(self, n: int) -> tuple[int, list[Any]] | None:
        with self._cond:
            if not self._buffer:
                self._starved = self._source is not None
                return None
            start, items = self._buffer[0]
            if len(items) <= n:
                self._buffer.popleft()
                return start, items
            self._buffer[0] = (start + n, items[n:])
            return start, items[:n]

    def exhausted(self) -> bool:
        with self._cond:
            return (self._source is None or self._sealed) and not self._buffer

    def seal(self) -> None:
        with self._cond:
            self._sealed = True
            self._cond.notify_all()

    def deliver(
        self, start: int, values: list[Any], errors: dict[int, BaseException] | None
    ) -> None:
        if self.tally is not None:
            self.tally.add(len(values), len(errors) if errors else 0)
        with self._cond:
            self._store(start, values, errors)
            self._cond.notify_all()

    def _store(
        self, start: int, values: list[Any], errors: dict[int, BaseException] | None
    ) -> None:
        if self.ordered:
            self._runs[start] = (values, errors)
        else:
            self._arrivals.append((values, errors))

    def abort(self, exc: BaseException) -> None:
        with self._cond:
            self._source = None
            self._buffer.clear()
            self._aborted = exc
            self._cond.notify_all()

    def done(self) -> bool:
        with self._cond:
            return self._aborted is not None or (
                self._source is None and self._consumed >= self._fed
            )


class _Raised:
    """An outcome to raise rather than return (never a task's own value)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ResultIterator:
    """Reads a StreamJob's results one at a time; safe to share between threads.

    A failed item raises when reached, and reading may go on after it (as
    ``multiprocessing``'s imap).  Values flow through an inner generator that
    yields a whole run at C speed; errors travel through it as :class:`_Raised`
    so that the generator itself never ends by an exception.
    """

    def __init__(self, job: RunSource) -> None:
        self._job = job
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._outcomes = self._generate()

    def _generate(self) -> Iterator[Any]:
        job = self._job
        while True:
            try:
                values, errors = job.next_run(self._deadline)
            except StopIteration:
                return
            except BaseException as exc:  # noqa: BLE001 - timeout, abort, Ctrl-C: raised by the reader
                yield _Raised(exc)
                continue
            if errors:
                for i, value in enumerate(values):
                    values[i] = None  # handed over: this iterator keeps no reference
                    yield _Raised(errors[i]) if i in errors else value
            else:
                yield from _handed_over(values)
            del values

    def __iter__(self) -> ResultIterator:
        return self

    def next_before(self, deadline: float | None = None) -> Any:
        """The next result; raises its exception if it failed; StopIteration at the end."""
        with self._lock:
            self._deadline = deadline
            value = next(self._outcomes)
        if type(value) is _Raised:
            raise value.exc
        return value

    __next__ = next_before  # the hot path of imap: one call per result


_END: Any = object()


def _handed_over(values: list[Any]) -> Iterator[Any]:
    """``values`` one by one, each forgotten once yielded, at C speed.

    A result the caller has taken and dropped must be freed (CPython's
    test_free_reference): ``yield from values`` would keep every one alive
    until the whole run is read.  The list is emptied in place; nobody else
    holds it once its run was handed to the reader.
    """
    values.append(_END)
    values.reverse()
    return iter(values.pop, _END)


def iterate_results(job: RunSource, deadline: float | None) -> Iterator[Any]:
    """Results of ``job`` as a generator that ends at the first failure (concurrent.futures)."""
    try:
        while True:
            try:
                values, errors = job.next_run(deadline)
            except StopIteration:
                return
            if not errors:
                yield from _handed_over(values)
                continue
            for i, value in enumerate(values):
                if i in errors:
                    raise errors[i]
                values[i] = None  # handed over: the iterator keeps no reference
                yield value
    finally:
        job.cancel()  # closed or dropped early: unstarted items are not run
