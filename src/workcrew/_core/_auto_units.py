"""``kind="auto"``'s deferral adapters: work waiting for its function's route.

Work submitted while its function is undecided is a *unit*: one call
(:class:`_CallUnit`, whose caller holds a :class:`_DeferredFuture`), one map
(:class:`_ListUnit`) or one lazy stream (:class:`_AutoStream`).  A unit
probes the function itself when the route's probe slot is free, else waits
on the route; once the route is decided it hands itself (or what is left of
it) to the chosen kind's engine, exactly as a front end would submit it.

Invariants and races:

* A unit takes its first step on the submitting thread; later steps run in
  the callback that decides its route or frees its probe slot: on a master
  thread (a probe's done callback), or on the thread of ``set_kind``.  A
  step therefore never blocks: it submits, or registers itself to be woken.
* Probe results are real results: nothing runs twice.  A map's probe
  outcomes come first, then the rest's, joined in order; a stream hands its
  probe outcomes back before the rest's.
* A call or map unit tells the router it is done (``unit_done``) only after
  its last submission: the router closes its per-kind engines only once no
  such unit is left, so work accepted before ``close()`` always runs.  (A
  stream is driven by its consumer, who reads it to its end.)
* ``_DeferredFuture`` orders ``cancel()`` against dispatch with its own lock:
  a call cancelled first never starts; a call dispatched first is cancelled
  through its real future (a running process task is then stopped).
* A stream pulls its input only in the consuming thread, as every stream does.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Protocol

from ._auto_policy import Route
from ._engine import Engine
from ._exceptions import TaskCancelled, TimeoutError
from ._execute import MAP
from ._jobs import Run, RunSource, Tally, resolve
from ._options import TaskPolicy

__all__ = ("_AutoStream", "_CallUnit", "_ListUnit", "_Unit")  # what the AutoEngine builds on


class _Unit(Protocol):
    """What the router keeps of a waiting unit: how to fail or cancel it at shutdown."""

    def abort(self, exc: BaseException) -> None:
        """Fail the work not yet handed to an engine with ``exc`` (``terminate``)."""

    def cancel_pending(self) -> None:
        """Cancel the work not yet started (``shutdown(cancel_futures=True)``)."""


class _Router(Protocol):
    """What a unit needs of the auto engine (``AutoEngine`` provides it)."""

    def engine(self, kind: str) -> Engine:
        """The engine of ``kind``; PoolClosedError once the router shut its engines."""

    def probe(
        self,
        route: Route,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: TaskPolicy,
        context: contextvars.Context,
    ) -> Future[Any]:
        """Run one measured call, holding ``route``'s probe slot (released on any failure)."""

    def unit_done(self, unit: _Unit) -> None:
        """``unit`` has submitted everything it will: the router stops tracking it."""


def _args_of(mode: int, item: Any) -> tuple[Any, ...]:
    """The positional arguments of one map item (``MAP``: the item; ``STAR``: its elements)."""
    return (item,) if mode == MAP else tuple(item)


class _DeferredFuture(Future[Any]):
    """The future of a call waiting for its route; mirrors the real one once dispatched.

    ``cancel()`` before dispatch cancels it here (it will never run); after
    dispatch it is forwarded, so a running process task is stopped as usual.
    ``_dispatch_lock`` orders cancel against dispatch.
    """

    def __init__(self) -> None:
        super().__init__()
        self._dispatch_lock = threading.Lock()
        self._inner: Future[Any] | None = None

    def cancel(self) -> bool:
        """Cancel the call: here if not dispatched yet, else through the real future."""
        with self._dispatch_lock:
            inner = self._inner
            if inner is None:
                return super().cancel()
        return inner.cancel()

    def dispatch(self, start: Callable[[], Future[Any]]) -> bool:
        """Start the real task unless cancelled first (then False); copy its outcome here."""
        with self._dispatch_lock:
            if self.cancelled():
                return False
            try:
                inner = start()
            except BaseException as exc:  # noqa: BLE001 - closed or broken pool: this task's outcome
                resolve(self, None, exc)
                return True
            self._inner = inner
        inner.add_done_callback(self._copy)
        return True

    def fail_unstarted(self, exc: BaseException) -> None:
        """Fail the call with ``exc`` if it has not been dispatched."""
        with self._dispatch_lock:
            if self._inner is None:
                resolve(self, None, exc)

    def _copy(self, inner: Future[Any]) -> None:
        if inner.cancelled():
            Future.cancel(self)
        else:
            exc = inner.exception()
            resolve(self, None if exc is not None else inner.result(), exc)


class _CallUnit:
    """One ``submit``/``apply_async`` call of an undecided function."""

    def __init__(
        self,
        auto: _Router,
        route: Route,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: TaskPolicy,
        context: contextvars.Context,
    ) -> None:
        self._auto, self._route = auto, route
        self._call = (fn, args, kwargs, policy, context)
        self.future = _DeferredFuture()

    def step(self) -> None:
        """Dispatch to the decided kind, or run as the probe, or wait for the route."""
        route, auto, call = self._route, self._auto, self._call
        kind = route.kind
        if kind is not None:
            self.future.dispatch(lambda: auto.engine(kind).submit_call(*call))
        elif route.acquire_probe():
            if not self.future.dispatch(lambda: auto.probe(route, *call)):
                route.release()  # cancelled: hand the slot on
        else:
            route.wait(self.step)
            return
        auto.unit_done(self)

    def abort(self, exc: BaseException) -> None:
        """Fail the call unless dispatched (its engine's terminate fails it then)."""
        self.future.fail_unstarted(exc)

    def cancel_pending(self) -> None:
        """Cancel the call (forwarded to its real future once dispatched)."""
        self.future.cancel()


class _ListUnit:
    """A ``map``/``starmap`` of an undecided function: probes its first items, then the rest.

    The probe outcomes and the rest's results are joined in order into one future.
    """

    def __init__(
        self,
        auto: _Router,
        route: Route,
        fn: Callable[..., Any],
        mode: int,
        items: list[Any],
        chunksize: int | None,
        policy: TaskPolicy,
        context: contextvars.Context,
        tally: Tally | None,
    ) -> None:
        self._auto, self._route, self._fn, self._mode = auto, route, fn, mode
        self._items, self._chunksize, self._policy = items, chunksize, policy
        self._context, self._tally = context, tally
        self._values: list[Any] = []
        self.future: Future[list[Any]] = Future()
        self.future.set_running_or_notify_cancel()

    def step(self) -> None:
        """Submit the rest to the decided kind, or probe the next item, or wait for the route."""
        auto, route = self._auto, self._route
        if self.future.done():
            auto.unit_done(self)
            return
        kind = route.kind
        if kind is not None:
            self._submit_rest(kind)
            auto.unit_done(self)
        elif route.acquire_probe():
            item = self._items[len(self._values)]
            try:
                args = _args_of(self._mode, item)
                probe = auto.probe(route, self._fn, args, {}, self._policy, self._context)
            except BaseException as exc:  # noqa: BLE001 - closed or broken pool: the map's outcome
                resolve(self.future, None, exc)
                auto.unit_done(self)
                return
            probe.add_done_callback(self._probed)
        else:
            route.wait(self.step)

    def _probed(self, probe: Future[Any]) -> None:
        exc = TaskCancelled("cancelled") if probe.cancelled() else probe.exception()
        if self._tally is not None:
            self._tally.add(1, exc is not None)
        if exc is not None:
            resolve(self.future, None, exc)  # map semantics: the first failure fails the map
        else:
            self._values.append(probe.result())
            if len(self._values) == len(self._items):
                resolve(self.future, self._values, None)
        self.step()

    def _submit_rest(self, kind: str) -> None:
        rest_items = self._items[len(self._values) :]
        try:
            rest = self._auto.engine(kind).submit_list(
                self._fn,
                self._mode,
                rest_items,
                self._chunksize,
                self._policy,
                self._context,
                self._tally,
            )
        except BaseException as exc:  # noqa: BLE001 - closed or broken pool: the map's outcome
            resolve(self.future, None, exc)
            return
        head, whole = self._values, self.future

        def joined(f: Future[list[Any]]) -> None:
            exc = f.exception()
            resolve(whole, None if exc is not None else head + f.result(), exc)

        def abandoned(f: Future[list[Any]]) -> None:
            # The caller gave up (Ctrl-C in map()): stop handing out the rest.
            resolve(rest, None, TaskCancelled("the map was abandoned"))

        rest.add_done_callback(joined)
        whole.add_done_callback(abandoned)

    def abort(self, exc: BaseException) -> None:
        """Fail the whole map with ``exc``."""
        resolve(self.future, None, exc)

    def cancel_pending(self) -> None:
        """Maps are not cancelled by ``shutdown(cancel_futures=True)``."""


class _AutoStream:
    """``imap``/``Executor.map`` of an undecided function (a :class:`RunSource`).

    Input is pulled only in the consuming thread, as for every stream: probe
    items one at a time, then a real stream job over the rest of the input on
    the chosen kind.  Probe outcomes are handed back before the rest's.

    ``_cond`` guards what probe callbacks (on the thread engine's master) and
    route wake-ups share with the consumer: ``_outcomes``, ``_probing`` and
    ``_waiting``; ``_source`` is cleared under it.  ``_rest`` is set only by
    the consumer, and once set every call goes to it.
    """

    def __init__(
        self,
        auto: _Router,
        route: Route,
        fn: Callable[..., Any],
        mode: int,
        iterable: Iterable[Any],
        chunksize: int | None,
        ordered: bool,
        policy: TaskPolicy,
        context: contextvars.Context,
        tally: Tally | None,
    ) -> None:
        self._auto, self._route, self._fn, self._mode = auto, route, fn, mode
        self._chunksize, self._ordered, self._policy = chunksize, ordered, policy
        self._context, self._tally = context, tally
        self._source: Iterator[Any] | None = iter(iterable)
        self._cond = threading.Condition(threading.Lock())
        self._outcomes: deque[Run] = deque()
        self._probing = False  # a probe of ours runs
        self._waiting = False  # waiting for another probe of this function
        self._rest: RunSource | None = None

    def feed(self) -> None:
        """Pull input: into the rest's stream once decided, else start the next probe."""
        if self._rest is not None:
            self._rest.feed()
        else:
            self._advance()

    def _advance(self) -> None:
        """Start the next probe, or the rest (consumer's thread only)."""
        with self._cond:
            if self._probing or self._waiting or self._source is None:
                return
        kind = self._route.kind
        if kind is not None:
            rest = self._auto.engine(kind).stream(
                self._fn,
                self._mode,
                self._source,
                self._chunksize,
                ordered=self._ordered,
                policy=self._policy,
                context=self._context,
                tally=self._tally,
            )
            rest.feed()
            self._rest = rest
            return
        if not self._route.acquire_probe():
            with self._cond:
                self._waiting = True
            self._route.wait(self._woken)
            return
        try:
            item = next(self._source)
        except BaseException as exc:  # noqa: BLE001 - end of input, or the caller's generator raised
            self._route.release()
            with self._cond:
                self._source = None
                if not isinstance(exc, StopIteration):
                    self._outcomes.append(([None], {0: exc}))
            return
        with self._cond:
            self._probing = True
        try:
            probe = self._auto.probe(
                self._route, self._fn, _args_of(self._mode, item), {}, self._policy, self._context
            )
        except BaseException:
            with self._cond:
                self._probing = False
            raise
        probe.add_done_callback(self._probed)

    def _probed(self, probe: Future[Any]) -> None:
        exc = TaskCancelled("cancelled") if probe.cancelled() else probe.exception()
        run: Run = ([None], {0: exc}) if exc is not None else ([probe.result()], None)
        if self._tally is not None:
            self._tally.add(1, exc is not None)
        with self._cond:
            self._outcomes.append(run)
            self._probing = False
            self._cond.notify_all()

    def _woken(self) -> None:
        with self._cond:
            self._waiting = False
            self._cond.notify_all()

    def next_run(self, deadline: float | None) -> Run:
        """The next run of outcomes, probe outcomes before the rest's; StopIteration at the end."""
        while True:
            with self._cond:
                if self._outcomes:
                    return self._outcomes.popleft()
            if self._rest is not None:
                return self._rest.next_run(deadline)
            self._advance()
            with self._cond:
                while not self._outcomes and (self._probing or self._waiting):
                    timeout = None if deadline is None else deadline - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        raise TimeoutError("no result arrived within the timeout")
                    self._cond.wait(timeout)
                if not self._outcomes and self._source is None and self._rest is None:
                    raise StopIteration

    def done(self) -> bool:
        """Every outcome was handed to the consumer (or the stream was cancelled)."""
        if self._rest is not None:
            return self._rest.done()
        with self._cond:
            return self._source is None and not self._outcomes and not self._probing

    def cancel(self) -> None:
        """The consumer abandoned the results: pull no more input, cancel the rest."""
        with self._cond:
            self._source = None
        if self._rest is not None:
            self._rest.cancel()
