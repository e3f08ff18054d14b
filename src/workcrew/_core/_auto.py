"""``kind="auto"``: the :class:`AutoEngine` facade, one engine per kind behind one interface.

``AutoEngine`` satisfies :class:`~._engine_api.PoolEngine`, as :class:`Engine`
does, and holds one ``Engine`` per kind, created on first use.  Per function
it keeps a :class:`~._auto_policy.Route` (the measurement policy, in
``_auto_policy.py``): decided functions go straight to their kind's engine;
work of an undecided function waits as a *unit* (``_auto_units.py``) while
the function's first tasks are probed on the thread engine.  It never reaches
into an engine's master: it only submits jobs, like a front end.

Probe results are real results: nothing runs twice.  ``set_kind`` decides a
route by hand; ``kind_choices`` reports every decision.

Invariants and races (``_lock``, a Condition notified once the per-kind
engines are closed, guards ``_engines``, ``_routes``, ``_units``,
``_accepting`` and ``_subs_closed``):

* Work accepted before ``close()`` always runs: units dispatch themselves
  from the callback that decides their route (on a master thread), so
  ``close()`` closes the per-kind engines only once no unit is left (the last
  ``unit_done`` closes them otherwise).
* Once the per-kind engines are closed (``_subs_closed``) none may be
  created: a unit dispatched late gets PoolClosedError as its outcome.
* ``terminate()`` fails every waiting unit (TaskCancelled) before it closes
  and terminates the per-kind engines; a call already dispatched is failed by
  its engine's terminate instead.  ``join`` waits for the per-kind engines to
  be closed, then for each of them.
* A probe's measuring callback is registered on its future before anyone
  else's: the route has learned from a probe before the unit that ran it
  takes its next step.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future
from typing import Any

from ._auto_policy import ROUTED_KINDS, KindChoice, Route, _Measure, _measured
from ._auto_units import _AutoStream, _CallUnit, _ListUnit, _Unit
from ._backend import WorkerBackend
from ._engine import (
    Engine,
    check_callable,
    check_owner,
    pool_closed,
    task_key,
    warn_if_nested,
)
from ._exceptions import TaskCancelled, TaskTimeout
from ._jobs import RunSource, Tally
from ._options import PoolOptions, TaskPolicy, default_workers
from ._stats import PoolStatistics, TaskSpan, combine
from ._system import available_cpu_count

__all__ = ("AutoEngine",)


class AutoEngine:
    """The :class:`PoolEngine` interface over one engine per kind (see the module docstring)."""

    def __init__(
        self,
        options: PoolOptions,
        backend_for: Callable[[str], type[WorkerBackend]],
        *,
        drain_at_exit: bool,
    ) -> None:
        warn_if_nested(options)
        self.options = options
        self._backend_for = backend_for
        self._drain_at_exit = drain_at_exit
        self._lock = threading.Condition(threading.Lock())
        self._engines: dict[str, Engine] = {}
        self._routes: dict[Hashable, Route] = {}
        self._units: set[_Unit] = set()
        self._accepting = True
        self._pid = os.getpid()
        self._subs_closed = False  # the per-kind engines were closed: none may be created

    # -- routes --------------------------------------------------------------------------

    def route(self, fn: Callable[..., Any]) -> Route:
        """``fn``'s route, created on first sight (a coroutine function's decided at once)."""
        key = task_key(fn)
        with self._lock:
            route = self._routes.get(key)
            if route is None:
                route = self._routes[key] = Route(fn)
                fresh = True
            else:
                fresh = False
        if fresh and inspect.iscoroutinefunction(fn):
            route.decide("async", "a coroutine function")
        return route

    def set_kind(self, fn: Callable[..., Any], kind: str) -> None:
        """Route ``fn`` to ``kind`` from now on (tasks waiting for a decision go there too)."""
        check_callable(fn)
        if kind not in ROUTED_KINDS:
            raise ValueError(
                f"kind={kind!r} cannot be set for a function; choose one of {ROUTED_KINDS}"
            )
        self.route(fn).decide(kind, "set by set_kind()")

    def kind_choices(self) -> list[KindChoice]:
        """Every decision so far, in the order functions were first seen."""
        with self._lock:
            routes = list(self._routes.values())
        return [r.choice for r in routes if r.choice is not None]

    def engine(self, kind: str) -> Engine:
        """The engine for ``kind``, started on first use; PoolClosedError once shut down."""
        with self._lock:
            engine = self._engines.get(kind)
            if engine is None:
                if self._subs_closed:
                    raise pool_closed()
                engine = Engine(
                    self._options_for(kind),
                    self._backend_for(kind),
                    drain_at_exit=self._drain_at_exit,
                    warn_nested=False,
                )
                self._engines[kind] = engine
        return engine

    def _options_for(self, kind: str) -> PoolOptions:
        # `workers` is the concurrency of waiting work; CPU-bound work gains
        # nothing from more processes than CPUs, so process workers are capped.
        asked = self.options.requested_workers
        if asked is None:
            workers = default_workers(kind)
        elif kind == "process":
            workers = min(asked, available_cpu_count())
        else:
            workers = asked
        return self.options._replace(kind=kind, workers=workers)

    def probe(
        self,
        route: Route,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: TaskPolicy,
        context: contextvars.Context,
    ) -> Future[Any]:
        """Run one call on a thread worker, measured; the route learns from it first."""
        cell = _Measure()
        thread = self.engine("thread")
        try:
            future = thread.submit_call(_measured(fn, cell), args, kwargs, policy, context)
        except BaseException:
            route.release()
            raise

        def learn(f: Future[Any]) -> None:
            timed_out = not f.cancelled() and isinstance(f.exception(), TaskTimeout)
            route.observe(cell.cpu, cell.wall, timed_out=timed_out and cell.wall is None)

        future.add_done_callback(learn)  # registered first: runs before the unit's callback
        return future

    # -- submission (the PoolEngine interface) ------------------------------------------

    def start_all(self) -> None:
        """Start no worker: which kinds will run is known only once functions are routed.

        Each per-kind engine starts its workers on first use; each worker runs
        the ``initializer`` as it starts, as on demand-started pools.
        """

    def _enter(self, unit: _Unit) -> None:
        with self._lock:
            self._check_open()
            self._units.add(unit)

    def unit_done(self, unit: _Unit) -> None:
        """``unit`` submitted its last work; the last one after ``close()`` closes the engines."""
        with self._lock:
            self._units.discard(unit)
            close_now = not self._accepting and not self._units and not self._subs_closed
        if close_now:
            self._close_subs()

    def _check_open(self) -> None:
        check_owner(self._pid)
        if not self._accepting:
            raise pool_closed()

    def _decided(self, fn: Callable[..., Any]) -> tuple[Route, str | None]:
        """``fn``'s route and its kind if decided (then the pool must be open)."""
        check_callable(fn)
        route = self.route(fn)
        kind = route.kind
        if kind is not None:
            with self._lock:
                self._check_open()
        return route, kind

    def submit_call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: TaskPolicy | None = None,
        context: contextvars.Context | None = None,
    ) -> Future[Any]:
        """One call: to its kind's engine if decided, else a waiting unit (maybe the probe)."""
        # The caller's context variables are captured here, in the caller's
        # thread: work waiting for a decision is dispatched from other threads.
        context = contextvars.copy_context() if context is None else context
        policy = policy or self.options.policy
        route, kind = self._decided(fn)
        if kind is not None:
            return self.engine(kind).submit_call(fn, args, kwargs, policy, context)
        unit = _CallUnit(self, route, fn, args, kwargs, policy, context)
        self._enter(unit)
        unit.step()
        return unit.future

    def submit_list(
        self,
        fn: Callable[..., Any],
        mode: int,
        items: list[Any],
        chunksize: int | None,
        policy: TaskPolicy | None = None,
        context: contextvars.Context | None = None,
        tally: Tally | None = None,
    ) -> Future[list[Any]]:
        """A map: to its kind's engine if decided, else a unit that probes its first items."""
        context = contextvars.copy_context() if context is None else context
        policy = policy or self.options.policy
        route, kind = self._decided(fn)
        if kind is not None:
            return self.engine(kind).submit_list(fn, mode, items, chunksize, policy, context, tally)
        if not items:
            with self._lock:
                self._check_open()
            empty: Future[list[Any]] = Future()
            empty.set_result([])
            return empty
        unit = _ListUnit(self, route, fn, mode, items, chunksize, policy, context, tally)
        self._enter(unit)
        unit.step()
        return unit.future

    def stream(
        self,
        fn: Callable[..., Any],
        mode: int,
        iterable: Iterable[Any],
        chunksize: int | None,
        *,
        ordered: bool,
        policy: TaskPolicy | None = None,
        context: contextvars.Context | None = None,
        tally: Tally | None = None,
    ) -> RunSource:
        """A lazy map: its kind's stream if decided, else one that probes its first items."""
        context = contextvars.copy_context() if context is None else context
        policy = policy or self.options.policy
        with self._lock:
            self._check_open()
        route, kind = self._decided(fn)
        if kind is not None:
            return self.engine(kind).stream(
                fn,
                mode,
                iterable,
                chunksize,
                ordered=ordered,
                policy=policy,
                context=context,
                tally=tally,
            )
        return _AutoStream(
            self, route, fn, mode, iterable, chunksize, ordered, policy, context, tally
        )

    # -- shutdown ------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """True until close, terminate or shutdown."""
        return self._accepting

    def close(self) -> None:
        """Accept no new work; the per-kind engines close once no unit waits for its route."""
        with self._lock:
            self._accepting = False
            close_now = not self._units and not self._subs_closed
        if close_now:
            self._close_subs()

    def _close_subs(self) -> None:
        with self._lock:
            self._subs_closed = True
            engines = list(self._engines.values())
            self._lock.notify_all()
        for engine in engines:
            engine.close()

    def cancel_pending(self) -> None:
        """Cancel waiting calls (not maps) and every kind's unstarted tasks."""
        with self._lock:
            units = list(self._units)
            engines = list(self._engines.values())
        for unit in units:
            unit.cancel_pending()
        for engine in engines:
            engine.cancel_pending()

    def terminate(self) -> None:
        """Fail waiting units with TaskCancelled, then terminate every per-kind engine."""
        with self._lock:
            self._accepting = False
            units, self._units = list(self._units), set()
        for unit in units:
            unit.abort(TaskCancelled("the pool was terminated before this task was routed"))
        self._close_subs()
        for engine in self._engine_list():
            engine.terminate()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the per-kind engines to be closed, then for each to end; True if all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._subs_closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left)
        for engine in self._engine_list():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not engine.join(left):
                return False
        return True

    def _engine_list(self) -> list[Engine]:
        with self._lock:
            return list(self._engines.values())

    def statistics(self) -> PoolStatistics:
        """The workers of every kind this pool started, in one snapshot."""
        return combine("auto", [engine.statistics() for engine in self._engine_list()])

    def timeline(self) -> tuple[TaskSpan, ...]:
        """Every kind's task spans so far, merged in order of start."""
        spans = [span for engine in self._engine_list() for span in engine.timeline()]
        return tuple(sorted(spans, key=lambda span: span.start))

    def live(self) -> list[tuple[str, dict[str, Any]]]:
        """Every kind's live view (see ``Engine.live``)."""
        return [view for engine in self._engine_list() for view in engine.live()]
