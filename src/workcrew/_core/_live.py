"""What a live dashboard shows beyond the statistics: the tasks running now, the
recent spans, the failures and the slowest tasks.

Only pools opened with ``dashboard=True`` have a :class:`LiveLog`; without one
the master does nothing of this (a ``None`` check per chunk).  The master thread
writes it per *chunk* (never per task: a map of trivial tasks sends thousands
per chunk, and the dashboard must cost little), a dashboard's thread reads it.

Cost is kept on the reader's side: the master stores references (the function,
the chunk's items, the exception) and the reader builds every text from them
(``describe_call``, the traceback), each once.  Formatting runs user code
(``__repr__``, ``__str__``): :func:`_text` and ``short_repr`` never let it
raise into the reader.

Spans: with the pool's ``timeline`` option the workers time each task, and the
spans here are per task; otherwise a chunk is one span, placed from the
worker's measured duration and the moment its answer arrived, and the slowest
list ranks chunks (a chunk of one task is that task: adaptive chunking sends
slow tasks one by one).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import traceback
from collections import deque

from ._execute import describe_call, function_name

TYPE_CHECKING = False  # no typing at run time (see _typing)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("LiveLog",)

#: Recent spans kept for the live timeline, and the window it shows (seconds).
RECENT_SPANS = 4000
WINDOW = 60.0
#: Failures kept (newest), and slowest tasks ranked.
FAILURES = 50
SLOWEST = 10


class _Running:
    """A chunk sent to a worker and not answered yet."""

    __slots__ = ("fn", "items", "mode", "sent", "seq")

    def __init__(self, seq: int, fn: Callable[..., Any], mode: int, items: list[Any]) -> None:
        self.seq, self.fn, self.mode, self.items = seq, fn, mode, items
        self.sent = time.perf_counter()


class _Failure:
    """A failed task; its texts are made by the first reader (see the module doc)."""

    __slots__ = ("crash", "exc", "fn", "item", "mode", "text", "when", "worker")

    def __init__(
        self, worker: int, fn: Callable[..., Any], mode: int, item: Any, exc: BaseException
    ) -> None:
        self.worker, self.fn, self.mode, self.item = worker, fn, mode, item
        self.exc: BaseException | None = exc
        self.crash = type(exc).__name__ == "WorkerCrashed"
        self.when = time.perf_counter()
        self.text: dict[str, Any] | None = None


class LiveLog:
    """Written by the master thread (``sent``, ``answered``, ...), read by any (``view``).

    Invariant: ``_running[w]`` holds worker ``w``'s unanswered chunks in the
    order sent (the order it answers), so its head is the chunk it runs.
    """

    def __init__(self, origin: float) -> None:
        self._origin = origin  # the Recorder's perf_counter origin: times are relative to it
        self._lock = threading.Lock()
        self._running: dict[int, deque[_Running]] = {}
        self._free_since: dict[int, float] = {}  # when each worker last answered
        self._ready: set[int] = set()
        self._spans: deque[tuple[int, str, float, float, bool]] = deque(maxlen=RECENT_SPANS)
        self._failures: deque[_Failure] = deque(maxlen=FAILURES)
        # min-heap of (seconds, tiebreak, worker, fn, mode, items): the SLOWEST longest
        self._slowest: list[tuple[float, int, int, Any, int, list[Any]]] = []
        self._tiebreak = itertools.count()

    # -- the master thread -----------------------------------------------------------------

    def ready(self, worker: int) -> None:
        with self._lock:
            self._ready.add(worker)

    def sent(
        self, worker: int, seq: int, fn: Callable[..., Any], mode: int, items: list[Any]
    ) -> None:
        with self._lock:
            self._running.setdefault(worker, deque()).append(_Running(seq, fn, mode, items))

    def answered(
        self,
        worker: int,
        seq: int,
        seconds: float,
        spans: list[tuple[float, float]] | None,
        errors: dict[int, BaseException] | None,
    ) -> None:
        """A chunk's outcome: ``seconds`` measured by the worker, ``spans`` per task if timed."""
        now = time.perf_counter()
        with self._lock:
            chunk = self._pop(worker, seq)
            self._free_since[worker] = now
            if chunk is None:
                return
            self._place(worker, chunk, now, seconds, spans, errors or {})
            for index, exc in (errors or {}).items():
                if index < len(chunk.items):
                    self._failures.append(
                        _Failure(worker, chunk.fn, chunk.mode, chunk.items[index], exc)
                    )

    def failed(self, worker: int, seq: int, errors: dict[int, BaseException]) -> None:
        """A chunk that failed as a whole (its worker crashed or was killed running it)."""
        with self._lock:
            chunk = self._pop(worker, seq)
            if chunk is None:
                return
            for index, exc in errors.items():
                if index < len(chunk.items):
                    self._failures.append(
                        _Failure(worker, chunk.fn, chunk.mode, chunk.items[index], exc)
                    )

    def gone(self, worker: int) -> None:
        """The worker exited: what it held is settled elsewhere (re-queued or failed)."""
        with self._lock:
            self._running.pop(worker, None)
            self._ready.discard(worker)

    def _pop(self, worker: int, seq: int) -> _Running | None:
        queue = self._running.get(worker)
        while queue:
            chunk = queue.popleft()
            if chunk.seq == seq:
                return chunk
        return None

    def _place(
        self,
        worker: int,
        chunk: _Running,
        now: float,
        seconds: float,
        spans: list[tuple[float, float]] | None,
        errors: dict[int, BaseException],
    ) -> None:
        origin, name = self._origin, function_name(chunk.fn)
        if spans:
            for index, (start, end) in enumerate(spans):
                self._spans.append(
                    (worker, name, start - origin, end - origin, index not in errors)
                )
                self._rank(end - start, worker, chunk, [chunk.items[index]])
            return
        label = name if len(chunk.items) == 1 else f"{name} x{len(chunk.items)}"
        self._spans.append((worker, label, now - seconds - origin, now - origin, not errors))
        self._rank(seconds, worker, chunk, chunk.items)

    def _rank(self, seconds: float, worker: int, chunk: _Running, items: list[Any]) -> None:
        entry = (seconds, next(self._tiebreak), worker, chunk.fn, chunk.mode, items)
        if len(self._slowest) < SLOWEST:
            heapq.heappush(self._slowest, entry)
        elif seconds > self._slowest[0][0]:
            heapq.heapreplace(self._slowest, entry)

    # -- any thread ------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """The live part of a dashboard's state (JSON-ready; see _display/_dashboard.py)."""
        now = time.perf_counter()
        with self._lock:
            running = {
                w: (q[0], self._free_since.get(w, 0.0)) for w, q in self._running.items() if q
            }
            ready = set(self._ready)
            spans = list(self._spans)
            failures = list(self._failures)
            slowest = sorted(self._slowest, reverse=True)
        end = now - self._origin
        start = max(0.0, end - WINDOW)
        return {
            "running": {
                w: {"task": _chunk_text(c.fn, c.mode, c.items), "for": now - max(c.sent, free)}
                for w, (c, free) in running.items()
            },
            "ready": ready,
            "timeline": {
                "start": start,
                "end": end,
                "spans": [
                    {"worker": w, "function": f, "start": s, "end": e, "ok": ok}
                    for w, f, s, e, ok in spans
                    if e >= start
                ],
            },
            "failures": [self._failure_text(f) for f in failures],
            "slowest": [
                {"task": _chunk_text(fn, mode, items), "seconds": seconds, "worker": w}
                for seconds, _, w, fn, mode, items in slowest
            ],
        }

    def _failure_text(self, failure: _Failure) -> dict[str, Any]:
        # Made once per failure; a race between two readers only makes it twice.
        exc = failure.exc
        if failure.text is None and exc is not None:
            failure.text = {
                "t": failure.when - self._origin,
                "worker": failure.worker,
                "task": describe_call(failure.fn, failure.mode, failure.item),
                "error": _text(lambda: "".join(traceback.format_exception_only(exc))),
                "traceback": _text(lambda: "".join(traceback.format_exception(exc))),
                "crash": failure.crash,
            }
            failure.item = failure.exc = None  # the texts are kept, not the objects
        return failure.text or {}


def _chunk_text(fn: Callable[..., Any], mode: int, items: list[Any]) -> str:
    first = describe_call(fn, mode, items[0]) if items else function_name(fn) + "()"
    return first if len(items) <= 1 else f"{first} and {len(items) - 1} more (one chunk)"


def _text(make: Callable[[], str]) -> str:
    """``make()``, or a placeholder if the user's ``__str__``/``__repr__`` fails."""
    try:
        return make().rstrip()
    except BaseException as exc:  # noqa: BLE001 - user code must not break the dashboard
        return f"<could not format the error: {type(exc).__name__}>"
