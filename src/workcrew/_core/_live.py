"""What a live dashboard shows beyond the statistics: the tasks running now, the
recent spans, the failures and the slowest tasks.

Only pools opened with ``dashboard=True`` have a :class:`LiveLog` (and only they
import this module, see ``_recorder.open_live``); without one the master does
nothing of this (a ``None`` check per chunk).  The master thread writes it per
chunk, a dashboard's threads read it (``view``).

The master thread never runs user code here: it stores references (the
function, the chunk's items, the exception), and the reader turns them into
text, each once, then drops them (:class:`_Text`).  Making a text calls user
code (``__repr__``, ``__str__``, ``__iter__`` of arguments): :func:`_guarded`
never lets it raise, ``BaseException`` included.  What is kept is bounded:
the chunks in flight, ``RECENT_SPANS`` spans (function objects, not names),
``FAILURES`` failures and ``SLOWEST`` entries.

Spans: with the pool's ``timeline`` option the workers time each task, and the
spans (and the slowest list) are per task; otherwise a chunk is one span, placed
from the worker's measured duration and the moment its answer arrived, and the
slowest list ranks chunks (a chunk of one task is that task: adaptive chunking
sends slow tasks one by one).
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


class _Text:
    """User objects waiting to become text; ``text()`` makes it once and drops them.

    Two readers racing make it twice at worst (both results are equal).
    """

    __slots__ = ("_make", "_text")

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make: Callable[[], Any] | None = make
        self._text: Any = None

    def text(self) -> Any:
        make = self._make
        if make is not None:
            self._text = make()
            self._make = None  # the user's objects go with the closure
        return self._text


class _Running:
    """A chunk sent to a worker and not answered yet."""

    __slots__ = ("call", "fn", "items", "mode", "sent", "seq")

    def __init__(self, seq: int, fn: Callable[..., Any], mode: int, items: list[Any]) -> None:
        self.seq, self.fn, self.mode, self.items = seq, fn, mode, items
        self.sent = time.perf_counter()
        self.call: _Text | None = None  # made by the first reader, not per chunk sent

    def text(self) -> _Text:
        """Its call's text holder (a reader, under the log's lock)."""
        if self.call is None:
            fn, mode, items = self.fn, self.mode, self.items
            self.call = _Text(lambda: _chunk_text(fn, mode, items))
        return self.call


class LiveLog:
    """Written by the master thread (``sent``, ``answered``, ...), read by any (``view``).

    Invariant: ``_running[w]`` holds worker ``w``'s unanswered chunks in the
    order sent (the order it answers), so its head is the chunk it runs.
    """

    def __init__(self, origin: float) -> None:
        self.origin = origin  # the Recorder's perf_counter origin: times are relative to it
        self._lock = threading.Lock()
        self._running: dict[int, deque[_Running]] = {}
        self._free_since: dict[int, float] = {}  # when each worker last answered
        self._ready: set[int] = set()
        # (worker, function, tasks, start, end, ok), start and end on perf_counter
        self._spans: deque[tuple[int, Any, int, float, float, bool]] = deque(maxlen=RECENT_SPANS)
        self._failures: deque[tuple[float, int, bool, _Text]] = deque(maxlen=FAILURES)
        self._slowest: list[tuple[float, int, int, _Text]] = []  # a min-heap: the SLOWEST longest
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
            if chunk is not None:
                self._place(worker, chunk, now, seconds, spans, errors or {})
                self._fail(worker, chunk, errors or {})

    def failed(
        self, worker: int, seq: int, errors: dict[int, BaseException], *, gone: bool = False
    ) -> None:
        """A chunk that failed as a whole (its worker died or was stopped running it).

        ``gone``: the worker is no longer the pool's (a thread left to finish alone).
        """
        with self._lock:
            chunk = self._pop(worker, seq)
            if chunk is not None:
                self._fail(worker, chunk, errors)
        if gone:
            self.gone(worker)

    def gone(self, worker: int) -> None:
        """The worker exited: what it held is settled elsewhere (re-queued or failed)."""
        with self._lock:
            self._running.pop(worker, None)
            self._free_since.pop(worker, None)
            self._ready.discard(worker)

    def _pop(self, worker: int, seq: int) -> _Running | None:
        queue = self._running.get(worker)
        while queue:
            chunk = queue.popleft()
            if chunk.seq == seq:
                return chunk
        return None

    def _fail(self, worker: int, chunk: _Running, errors: dict[int, BaseException]) -> None:
        from ._broken import WorkerCrashed  # loaded with the first crash (see _broken)

        now = time.perf_counter()
        for index, exc in errors.items():
            if index < len(chunk.items):
                text = _Text(_failure_maker(chunk.fn, chunk.mode, chunk.items[index], exc))
                self._failures.append((now, worker, isinstance(exc, WorkerCrashed), text))

    def _place(
        self,
        worker: int,
        chunk: _Running,
        now: float,
        seconds: float,
        spans: list[tuple[float, float]] | None,
        errors: dict[int, BaseException],
    ) -> None:
        fn, mode, items = chunk.fn, chunk.mode, chunk.items
        if spans:
            for index, (start, end) in enumerate(spans):
                self._spans.append((worker, fn, 1, start, end, index not in errors))
                self._rank(end - start, worker, fn, mode, items[index : index + 1])
            return
        self._spans.append((worker, fn, len(items), now - seconds, now, not errors))
        self._rank(seconds, worker, fn, mode, items)

    def _rank(
        self, seconds: float, worker: int, fn: Callable[..., Any], mode: int, items: list[Any]
    ) -> None:
        if len(self._slowest) >= SLOWEST and seconds <= self._slowest[0][0]:
            return  # the common case: a comparison, no allocation
        entry = (seconds, next(self._tiebreak), worker, _Text(lambda: _chunk_text(fn, mode, items)))
        if len(self._slowest) < SLOWEST:
            heapq.heappush(self._slowest, entry)
        else:
            heapq.heapreplace(self._slowest, entry)

    # -- any thread ------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """The live part of a dashboard's state: JSON-ready, times in seconds since ``origin``."""
        now = time.perf_counter()
        with self._lock:
            running = {
                w: (q[0].sent, q[0].text(), self._free_since.get(w, 0.0))
                for w, q in self._running.items()
                if q
            }
            ready = set(self._ready)
            spans = list(self._spans)
            failures = list(self._failures)
            slowest = sorted(self._slowest, reverse=True)
        origin, end = self.origin, now - self.origin
        start = max(0.0, end - WINDOW)
        names = _Names()
        return {
            "origin": origin,
            "running": {
                w: {"task": call.text(), "for": now - max(sent, free)}
                for w, (sent, call, free) in running.items()
            },
            "ready": ready,
            "timeline": {
                "start": start,
                "end": end,
                "spans": [
                    {
                        "worker": w,
                        "function": names.label(fn, n),
                        "start": s - origin,
                        "end": e - origin,
                        "ok": ok,
                    }
                    for w, fn, n, s, e, ok in spans
                    if e - origin >= start
                ],
            },
            "failures": [
                {"t": when - origin, "worker": w, "crash": crash, **text.text()}
                for when, w, crash, text in failures
            ],
            "slowest": [
                {"task": text.text(), "seconds": seconds, "worker": w}
                for seconds, _, w, text in slowest
            ],
        }


class _Names:
    """Function names for one view, each made once (guarded: a callable's repr is user code)."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}

    def label(self, fn: Callable[..., Any], tasks: int) -> str:
        name = self._names.get(id(fn))
        if name is None:
            name = self._names[id(fn)] = _guarded(lambda: function_name(fn))
        return name if tasks == 1 else f"{name} x{tasks}"


def _failure_maker(
    fn: Callable[..., Any], mode: int, item: Any, exc: BaseException
) -> Callable[[], dict[str, str]]:
    def make() -> dict[str, str]:
        return {
            "task": _guarded(lambda: describe_call(fn, mode, item)),
            "error": _guarded(lambda: "".join(traceback.format_exception_only(exc))),
            "traceback": _guarded(lambda: "".join(traceback.format_exception(exc))),
        }

    return make


def _chunk_text(fn: Callable[..., Any], mode: int, items: list[Any]) -> str:
    def make() -> str:
        first = describe_call(fn, mode, items[0]) if items else function_name(fn) + "()"
        return first if len(items) <= 1 else f"{first} and {len(items) - 1} more (one chunk)"

    return _guarded(make)


def _guarded(make: Callable[[], str]) -> str:
    """``make()``, or a placeholder if user code in it fails (``BaseException`` included)."""
    try:
        return make().rstrip()
    except BaseException as exc:  # noqa: BLE001 - user code must not break the dashboard
        return f"<could not format: {type(exc).__name__}>"
