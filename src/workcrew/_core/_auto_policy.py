"""``kind="auto"``'s measurement policy: how one function's route is decided.

The lecture's rule made automatic: CPU-bound work belongs on processes (the
GIL keeps threads on one core), IO-bound work on threads, coroutines on an
event loop.  Per function (per code object, like the scheduler's duration
estimates) the auto engine keeps a :class:`Route`:

* a coroutine function is routed to ``async`` at once;
* any other function is *probed*: its first tasks run one at a time on a
  thread worker, each wrapped (:func:`_measured`) to measure its thread's CPU
  time (``time.thread_time``) against its wall time, less the time it waited
  for a busy CPU (Linux schedstat, :func:`_runqueue_wait`).  After
  ``PROBE_SECONDS`` of probing (or ``MAX_PROBES`` tasks) the route is decided:
  a CPU/wall ratio of ``CPU_BOUND_RATIO`` or more means CPU-bound, so
  ``process``; less means waiting, so ``thread``.  A probe that times out
  routes to ``process``, the kind that can stop a task (a thread cannot be
  killed).  A function that cannot be pickled stays on threads.
* while a route is being probed, other tasks of that function wait (a
  CPU-bound function submitted a thousand times must not run a thousand
  times on threads); probes are serial (one probe slot per route) so that
  they never compete for the GIL and skew each other's ratio.

Once a route is decided, later measurements are ignored; only ``set_kind``
changes a decided route.  Every decision is logged on the ``workcrew`` logger
at INFO.

This module holds no engines and starts nothing: it is pure policy plus the
probe wrapper, so it may be read (and tested) without a pool.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._execute import function_name
from ._pickling import dumps_function
from ._public import public

__all__ = (
    "CPU_BOUND_RATIO",
    "MAX_PROBES",
    "PROBE_SECONDS",
    "ROUTED_KINDS",
    "TINY_TASK",
    "KindChoice",
    "Route",
)

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
#: the kinds a function may be routed to (by measurement or by ``set_kind``)
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
    outside it, on the thread that decided or released the route (a probe's
    done callback, or the caller of ``decide``).  ``choice`` is replaced whole,
    under the lock, and read without it: a reader sees None or a complete choice.
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
        """The decided kind, or None while the function is still probed."""
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
        # Checked and queued under one lock: a probe ending between the check
        # and the append would otherwise wake nobody, and the callback never run.
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
        # Taken under the lock, called outside it: a waiter may re-enter this
        # route (acquire_probe, wait) and must not deadlock on its lock.
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for callback in waiters:
            callback()


def _unpicklable(fn: Callable[..., Any]) -> str | None:
    """Why ``fn`` cannot reach a process worker, or None if it can be pickled."""
    try:
        dumps_function(fn)
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
    """``fn``, wrapped to write its thread's CPU and wall time into ``cell``.

    ``cell`` is filled in ``finally``, before the task's future resolves, so
    the route's done callback reads the measurement of a task that ended.  It
    is still empty when the task never ran (cancelled) or had not ended when
    its future resolved (a timeout: the thread goes on, and may fill it later,
    which is why ``wall`` is written last and read as "finished").
    """

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


public(KindChoice)
