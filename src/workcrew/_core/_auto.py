"""``kind="auto"``: measure each function on its first tasks, then route it to the right kind.

The lecture's rule made automatic: CPU-bound work belongs on processes (the
GIL keeps threads on one core), IO-bound work on threads, coroutines on an
event loop.  :class:`AutoEngine` has the :class:`Engine` interface and holds
one engine per kind, created on first use.  Per function (per code object,
like the scheduler's duration estimates) it keeps a :class:`Route`:

* a coroutine function is routed to ``async`` at once;
* any other function is *probed*: its first tasks run one at a time on a
  thread worker, each wrapped to measure its thread's CPU time
  (``time.thread_time``) against its wall time, less the time it waited
  for a busy CPU (Linux schedstat).  After ``PROBE_SECONDS`` of
  probing (or ``MAX_PROBES`` tasks) the route is decided: a CPU/wall ratio of
  ``CPU_BOUND_RATIO`` or more means CPU-bound, so ``process``; less means
  waiting, so ``thread``.  A probe that times out routes to ``process``, the
  kind that can stop a task (a thread cannot be killed).  A function that
  cannot be pickled stays on threads.
* while a route is being probed, other tasks of that function wait (a
  CPU-bound function submitted a thousand times must not run a thousand
  times on threads); probes are serial so that they never compete for the GIL
  and skew each other's ratio.

Probe results are real results: nothing runs twice.  ``set_kind`` decides a
route by hand; ``choices`` reports every decision, and each is logged on the
``workcrew`` logger at INFO.

Work waiting for a decision is a *unit*; units dispatch themselves from the
callback that decides their route (on a master thread).  ``close()`` therefore
closes the per-kind engines only once no unit is left: work accepted before
``close()`` always runs.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cloudpickle

from ._backend import WorkerBackend
from ._engine import (
    Engine,
    check_callable,
    check_owner,
    pool_closed,
    task_key,
    warn_if_nested,
)
from ._exceptions import TaskCancelled, TaskTimeout, TimeoutError
from ._execute import MAP, function_name
from ._jobs import Run, RunSource, Tally, resolve
from ._options import PoolOptions, TaskPolicy, default_workers
from ._stats import PoolStatistics, TaskSpan, combine
from ._system import available_cpu_count

__all__ = ("AutoEngine", "KindChoice", "kind_choices", "set_kind")

log = logging.getLogger("workcrew")

#: cpu/wall at or above this is CPU-bound (a thread would hold the GIL this much)
CPU_BOUND_RATIO = 0.5
#: probing stops once probes have run this long in total ...
PROBE_SECONDS = 0.002
#: ... or after this many tasks (tiny tasks)
MAX_PROBES = 8
#: tasks shorter than this on average are too short to measure (reading the
#: CPU clock is a system call of about a microsecond); they are CPU work in
#: practice (waiting takes longer), and processes run them in big chunks
TINY_TASK = 50e-6
ROUTED_KINDS = ("process", "thread", "async")


@dataclass(frozen=True)
class KindChoice:
    """How ``kind="auto"`` routed one function (``Pool.kind_choices()``).

    ``cpu_ratio`` is the probes' CPU time over their wall time (None when not
    measured: a coroutine function, or a kind set by hand); ``probes`` the
    number of tasks measured, ``probe_seconds`` their total wall time.
    """

    function: str
    kind: str
    cpu_ratio: float | None
    probes: int
    probe_seconds: float
    reason: str


class Route:
    """The routing state of one function: undecided (probing) or decided.

    Thread-safety: every field is guarded by ``_lock``; waiters are called
    outside it, on the thread that decided or released the route.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.name = function_name(fn)
        self.fn = fn
        self.choice: KindChoice | None = None
        self._lock = threading.Lock()
        self._probing = False
        self._waiters: list[Callable[[], None]] = []
        self._cpu = self._wall = 0.0
        self._probes = 0

    @property
    def kind(self) -> str | None:
        choice = self.choice
        return None if choice is None else choice.kind

    def acquire_probe(self) -> bool:
        """Claim the single probe slot; False if decided or another probe runs."""
        with self._lock:
            if self.choice is not None or self._probing:
                return False
            self._probing = True
            return True

    def wait(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once decided or the probe slot is free (now, if it is)."""
        with self._lock:
            if self.choice is None and self._probing:
                self._waiters.append(callback)
                return
        callback()

    def observe(self, cpu: float | None, wall: float | None, timed_out: bool) -> None:
        """A probe ended: record its measurement, maybe decide, release the slot."""
        with self._lock:
            self._probing = False
            if self.choice is None:
                if timed_out:
                    self._decide_locked(
                        "process", "a probe timed out; only processes can be stopped"
                    )
                elif cpu is not None and wall is not None:
                    self._cpu += cpu
                    self._wall += wall
                    self._probes += 1
                    if self._wall >= PROBE_SECONDS or self._probes >= MAX_PROBES:
                        self._decide_by_ratio_locked()
        self._wake()

    def release(self) -> None:
        """Give the probe slot back without a measurement (the probe never ran)."""
        self.observe(None, None, timed_out=False)

    def decide(self, kind: str, reason: str) -> None:
        """Fix the route (``set_kind``, coroutine functions)."""
        with self._lock:
            self._decide_locked(kind, reason)
        self._wake()

    def _decide_by_ratio_locked(self) -> None:
        ratio = self._cpu / self._wall if self._wall > 0 else 1.0
        if self._wall / self._probes < TINY_TASK:
            kind, why = "process", "tasks too short to be waiting on IO"
        elif ratio < CPU_BOUND_RATIO:
            kind, why = "thread", "mostly waiting"
        else:
            kind, why = "process", "CPU-bound"
        if kind == "process":
            problem = _unpicklable(self.fn)
            if problem is not None:
                kind, why = "thread", f"{why}, but cannot be pickled for processes ({problem})"
        mean = self._wall / self._probes
        self._decide_locked(
            kind, f"{why}: cpu/wall {ratio:.2f} over {self._probes} task(s) of {mean * 1e3:.3g} ms"
        )

    def _decide_locked(self, kind: str, reason: str) -> None:
        measured = self._probes > 0
        self.choice = KindChoice(
            function=self.name,
            kind=kind,
            cpu_ratio=self._cpu / self._wall if measured and self._wall > 0 else None,
            probes=self._probes,
            probe_seconds=self._wall,
            reason=reason,
        )
        log.info("kind='auto': %s runs on %s workers (%s)", self.name, kind, reason)

    def _wake(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for callback in waiters:
            callback()


def _unpicklable(fn: Callable[..., Any]) -> str | None:
    try:
        cloudpickle.dumps(fn)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means "keep it in-process"
        return f"{type(exc).__name__}: {exc}"
    return None


class _Measure:
    """What one probe measured: set in the worker thread before its future resolves."""

    __slots__ = ("cpu", "wall")

    def __init__(self) -> None:
        self.cpu: float | None = None
        self.wall: float | None = None


def _runqueue_wait() -> float:
    """Seconds this thread has waited for a CPU while runnable (Linux; else 0).

    On a busy machine a CPU-bound task spends part of its wall time waiting
    for a core; that time is not IO, so it is taken out of the probe's wall time.
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _measured(fn: Callable[..., Any], cell: _Measure) -> Callable[..., Any]:
    @functools.wraps(fn)  # errors and notes name the user's function
    def probe(*args: Any, **kwargs: Any) -> Any:
        waited = _runqueue_wait()
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            cell.cpu = time.thread_time() - cpu
            wall = time.perf_counter() - wall
            cell.wall = max(cell.cpu, wall - (_runqueue_wait() - waited))

    return probe


class _Unit(Protocol):
    def abort(self, exc: BaseException) -> None: ...

    def cancel_pending(self) -> None: ...


class AutoEngine:
    """The :class:`Engine` interface over one engine per kind (see the module docstring)."""

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

    def choices(self) -> list[KindChoice]:
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
        return replace(self.options, kind=kind, workers=workers)

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

    # -- submission (the Engine interface) ----------------------------------------------

    def _enter(self, unit: _Unit) -> None:
        with self._lock:
            self._check_open()
            self._units.add(unit)

    def unit_done(self, unit: _Unit) -> None:
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
        return self._accepting

    def close(self) -> None:
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
        with self._lock:
            units = list(self._units)
            engines = list(self._engines.values())
        for unit in units:
            unit.cancel_pending()
        for engine in engines:
            engine.cancel_pending()

    def terminate(self) -> None:
        with self._lock:
            self._accepting = False
            units, self._units = list(self._units), set()
        for unit in units:
            unit.abort(TaskCancelled("the pool was terminated before this task was routed"))
        self._close_subs()
        for engine in self._engine_list():
            engine.terminate()

    def join(self, timeout: float | None = None) -> bool:
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
        spans = [span for engine in self._engine_list() for span in engine.timeline()]
        return tuple(sorted(spans, key=lambda span: span.start))


def _args_of(mode: int, item: Any) -> tuple[Any, ...]:
    return (item,) if mode == MAP else tuple(item)


class _DeferredFuture(Future[Any]):
    """The future of a call waiting for its route; mirrors the real one once dispatched.

    ``cancel()`` before dispatch cancels it here (it will never run); after
    dispatch it is forwarded, so a running process task is stopped as usual.
    ``_lock`` orders cancel against dispatch.
    """

    def __init__(self) -> None:
        super().__init__()
        self._dispatch_lock = threading.Lock()
        self._inner: Future[Any] | None = None

    def cancel(self) -> bool:
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
        auto: AutoEngine,
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
        self.future.fail_unstarted(exc)  # once dispatched, its engine's terminate fails it

    def cancel_pending(self) -> None:
        self.future.cancel()


class _ListUnit:
    """A ``map``/``starmap`` of an undecided function: probes its first items, then the rest.

    The probe outcomes and the rest's results are joined in order into one future.
    """

    def __init__(
        self,
        auto: AutoEngine,
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
        resolve(self.future, None, exc)

    def cancel_pending(self) -> None:
        """Maps are not cancelled by ``shutdown(cancel_futures=True)``."""


class _AutoStream:
    """``imap``/``Executor.map`` of an undecided function (a :class:`RunSource`).

    Input is pulled only in the consuming thread, as for every stream: probe
    items one at a time, then a real stream job over the rest of the input on
    the chosen kind.  Probe outcomes are handed back before the rest's.
    """

    def __init__(
        self,
        auto: AutoEngine,
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

    def cancel(self) -> None:
        with self._cond:
            self._source = None
        if self._rest is not None:
            self._rest.cancel()


def set_kind(engine: object, fn: Callable[..., Any], kind: str) -> None:
    """``Pool.set_kind``/``Executor.set_kind``: only an auto pool routes per function."""
    if not isinstance(engine, AutoEngine):
        raise ValueError(
            "set_kind() routes functions of a kind='auto' pool; this pool runs every task on "
            "its one kind. Create the pool with kind='auto', or pick the kind at construction."
        )
    engine.set_kind(fn, kind)


def kind_choices(engine: object) -> list[KindChoice]:
    """``Pool.kind_choices``: the routing decisions of an auto pool (none for other kinds)."""
    return engine.choices() if isinstance(engine, AutoEngine) else []
