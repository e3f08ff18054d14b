"""workcrew as a joblib parallel backend: ``import workcrew.joblib`` registers ``"workcrew"``.

::

    from joblib import Parallel, delayed, parallel_config
    import workcrew.joblib  # registers the backend

    with parallel_config(backend="workcrew", n_jobs=4, task_timeout=600, retries=1):
        results = Parallel()(delayed(pow)(i, 2) for i in range(10))

Everything joblib (and scikit-learn's ``n_jobs=``) dispatches then runs on a
workcrew :class:`~workcrew.Pool`: joblib keeps its batching, ordering,
generators and callbacks; workcrew adds its pool options (``kind``,
``task_timeout``, ``retries``, ``start_method``, ...) and ``progress=``, and a
worker that crashes fails its batch alone (the pool replaces it).  See
docs/joblib.md.

Decisions recorded here:

* **One pool per Parallel call at a time, kept between calls.**  ``configure``
  takes an idle pool of the same settings from a small cache (or starts one);
  the end of the call gives it back, so a script's successive calls (a grid
  search, then a forest) pay the workers' start once, as loky's reused
  executor does.  Two calls running at once (two threads) never share a pool,
  so aborting one kills nothing of the other.  Idle pools close at exit or
  with :func:`shutdown`.
* **An error aborts as joblib expects**: joblib stops at a call's first error
  and calls ``abort_everything``; that terminates this call's pool (tasks
  still running are killed, as loky kills its workers) and the next call gets
  a fresh one.
* **A crash is isolated down to the estimator.**  When a worker dies under a
  batch, the batch runs once more with every scikit-learn-style estimator
  among its arguments fitting in a child process of the worker
  (:func:`_isolated_fits`): a ``fit`` that crashes again then raises
  :class:`~workcrew.WorkerCrashed` from ``fit`` itself, inside the caller's
  code, so ``GridSearchCV(error_score=np.nan)`` scores that candidate NaN and
  finishes.  Other functions' second crash raises ``WorkerCrashed`` for the
  batch.  Only process workers are isolated (a thread cannot survive a crash).
* **``n_jobs=1`` runs in the caller**, as it does with every joblib backend
  (so ``n_jobs=1`` still means "debug in this process"); workcrew's options
  then do not apply.
* **``task_timeout`` bounds one call**: with it, auto-batching sends one call
  per task (an explicit ``Parallel(batch_size=n)`` is honoured).
* **joblib's callbacks run on a thread of the call's own** (:class:`_Callbacks`),
  in the order the batches end, as on loky's result thread.  joblib's callback
  takes the call's next items and dispatches their batch: run where the pool
  reports results (its master thread), it would hold up every other result
  and dispatch meanwhile.  The thread starts with the call's first batch and
  ends with the call (``stop_call``); a callback's exception is logged, as
  ``concurrent.futures`` logs one, and the next callbacks still run.
* joblib's memmapping options (``max_nbytes``, ``mmap_mode``, ``temp_folder``)
  are accepted and ignored: arrays travel by pickle protocol 5, through
  workcrew's shared memory for large ones (docs/arrays.md).
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import pickle
import queue
import reprlib
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager
from typing import Any

from joblib import register_parallel_backend
from joblib.parallel import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
)

import workcrew

from ._display._progress import Display, check_progress, open_display

__all__ = ("WorkcrewBackend", "shutdown")

_LOG = logging.getLogger("workcrew.joblib")
#: Options of :class:`workcrew.Pool` the backend passes on (``processes`` is joblib's ``n_jobs``).
_POOL_OPTIONS = frozenset(inspect.signature(workcrew.Pool).parameters) - {"processes"}
#: What joblib passes to ``configure`` for its own backends; the backend accepts and ignores it.
_JOBLIB_ONLY = frozenset({"max_nbytes", "mmap_mode", "temp_folder", "verbose", "context"})


class WorkcrewBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]  # joblib is untyped
    """joblib's ``"workcrew"`` backend: joblib's batches run as tasks of a workcrew Pool.

    Constructor keywords (given to ``parallel_config(backend="workcrew", ...)``)
    are :class:`workcrew.Pool`'s options, plus ``progress`` (``True``, ``"bar"``,
    ``"plain"``: a workcrew progress display of the calls done).  ``kind``
    defaults to ``"process"``, or ``"thread"`` where the caller says
    ``prefer="threads"``.
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = False

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - _POOL_OPTIONS - {"progress"})
        if unknown:
            raise TypeError(
                f"the workcrew joblib backend got unknown option(s) {', '.join(unknown)}: "
                f"it takes workcrew.Pool's options ({', '.join(sorted(_POOL_OPTIONS))}) "
                "and progress"
            )
        self._progress = options.pop("progress", False)
        check_progress(self._progress)
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self._options = options
        # joblib reads these two to decide whether require="sharedmem" can be met.
        self.uses_threads = self.supports_sharedmem = options.get("kind") == "thread"
        self._pool: _Lease | None = None
        self._display: Display | None = None
        self._tally = _Tally()
        self._callbacks: _Callbacks | None = None

    # -- joblib's backend API --

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """joblib's rule: 0 is an error, None means 1, -1 all CPUs, -2 all but one."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs != 1 and self._options.get("kind") != "thread" and _in_daemon():
            warnings.warn(
                "the workcrew joblib backend runs in a daemonic process (a multiprocessing "
                "Pool's worker), which may not start processes: setting n_jobs=1",
                stacklevel=3,
            )
            return 1
        if n_jobs < 0:
            return max(workcrew.available_cpu_count() + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **joblib_options: Any,
    ) -> int:
        """Take a pool of ``n_jobs`` workers for this call; the number of workers."""
        unknown = sorted(set(joblib_options) - _JOBLIB_ONLY)
        if unknown:
            raise TypeError(f"the workcrew joblib backend got unknown option(s) {unknown}")
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        options = dict(self._options)
        options.setdefault("kind", "thread" if prefer == "threads" else "process")
        self.parallel = parallel
        key = _key(n_jobs, options)
        if self._pool is None or self._pool.key != key:
            self._release()
            self._pool = _checkout(key, n_jobs, options)
        return n_jobs

    def start_call(self) -> None:
        """Open the progress display of this Parallel call, if one was asked for."""
        self._tally = _Tally()
        self._display = open_display(self._progress, self._tally, None, "joblib")

    def stop_call(self) -> None:
        """Wait for the call's callbacks, then draw the display's last line."""
        self._end_callbacks()  # first: the last callbacks count the last calls done
        display, self._display = self._display, None
        if display is not None:
            display.close()
            display.join()

    def compute_batch_size(self) -> int:
        """joblib's auto-batching, or one call per task when ``task_timeout`` bounds each."""
        if self._options.get("task_timeout") is not None:
            return 1
        size: int = super().compute_batch_size()
        return size

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], Any] | None = None) -> Any:
        """Run one joblib batch as a task; its Future calls ``callback`` when done."""
        if self._pool is None:
            raise RuntimeError(
                "the workcrew joblib backend was asked to run a task outside a Parallel "
                "call (configure() first)"
            )
        if self._callbacks is None:
            self._callbacks = _Callbacks()
        callbacks = self._callbacks
        done = (self._count,) if callback is None else (self._count, callback)
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        future.add_done_callback(lambda settled: callbacks.put(settled, done))
        self._pool.send(func, future, guarded=False)
        return future

    def retrieve_result_callback(self, future: Future[Any]) -> Any:
        """The batch's results, or the exception that ended it."""
        return future.result()

    def terminate(self) -> None:
        """The end of a Parallel call: give the pool back for the next call."""
        self._end_callbacks()  # (joblib called stop_call before, if it has one)
        self._release()
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed: kill what is still running (the pool goes), then ready a new pool."""
        lease, self._pool = self._pool, None
        if lease is not None:
            lease.pool.terminate()
            lease.pool.join()
        if ensure_ready and self.parallel is not None:
            self.configure(
                n_jobs=self.parallel.n_jobs,
                parallel=self.parallel,
                **self.parallel._backend_kwargs,
            )

    # -- inner workings --

    def _end_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, None
        if callbacks is not None:
            callbacks.close()

    def _release(self) -> None:
        lease, self._pool = self._pool, None
        if lease is not None:
            _checkin(lease)

    def _count(self, future: Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._tally.failed += 1
        else:
            self._tally.done += len(future.result())


def _in_daemon() -> bool:
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)


class _Callbacks:
    """A thread that runs one Parallel call's completion callbacks, in the order they settle.

    Futures settle on the pool's master thread, which only queues their
    callbacks here.  A future that settles after :meth:`close` (a task that
    ended with its call: aborted, or left behind) has its callbacks run where
    it settles; joblib ignores the callbacks of a call that has ended.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[
            tuple[Future[Any], tuple[Callable[[Any], Any], ...]] | None
        ] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="workcrew-joblib-callbacks", daemon=True
        )
        self._thread.start()

    def put(self, future: Future[Any], callbacks: tuple[Callable[[Any], Any], ...]) -> None:
        """Run ``callbacks`` with ``future``, after those queued before."""
        with self._lock:
            if not self._closed:
                self._queue.put((future, callbacks))
                return
        _run_callbacks(future, callbacks)

    def close(self) -> None:
        """Run what is queued, then end the thread (at once, if called from a callback)."""
        with self._lock:
            self._closed = True
            self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            _run_callbacks(*item)
            del item  # a result is not kept alive until the next one


def _run_callbacks(future: Future[Any], callbacks: tuple[Callable[[Any], Any], ...]) -> None:
    for callback in callbacks:
        try:
            callback(future)
        except BaseException:  # noqa: BLE001 - as concurrent.futures: log, go on
            try:
                _LOG.exception("exception calling callback for %r", future)
            except BaseException:  # noqa: BLE001 - a failing log handler must not stop the rest
                pass


class _Tally:
    """Calls done and failed in one Parallel call (what the progress display draws)."""

    def __init__(self) -> None:
        self.done = 0
        self.failed = 0


class _Lease:
    """A pool lent to one backend, with the settings it was made for."""

    def __init__(self, key: tuple[Any, ...], pool: workcrew.Pool, options: dict[str, Any]) -> None:
        self.key = key
        self.pool = pool
        #: Whether the pool runs tasks in processes of their own (a crash can be isolated).
        self.isolates = (
            options["kind"] in ("process", "auto") and options.get("backend", "local") == "local"
        )

    def send(self, batch: Callable[[], Any], future: Future[Any], *, guarded: bool) -> None:
        """Run ``batch`` as a task, its outcome to ``future``; a first crash runs it guarded."""

        def failed(exc: BaseException) -> None:
            if isinstance(exc, workcrew.WorkerCrashed) and self.isolates:
                if not guarded:
                    self.send(batch, future, guarded=True)
                    return
                exc = _crashed_twice(batch, exc)
            _settle(future, exception=exc)

        if future.done():  # cancelled while it waited
            return
        task, args = (_run_guarded, (batch, os.getpid())) if guarded else (_run, (batch,))
        try:
            self.pool.apply_async(
                task, args, callback=lambda r: _settle(future, result=r), error_callback=failed
            )
        except Exception as exc:  # noqa: BLE001 - a pool terminated by an abort: the batch fails
            _settle(future, exception=exc)


def _crashed_twice(batch: Any, crash: workcrew.WorkerCrashed) -> workcrew.WorkerCrashed:
    """The error of a batch that crashed its worker, then again with its fits isolated."""
    calls = [_describe(func, args, kwargs) for func, args, kwargs in getattr(batch, "items", ())]
    shown = ", ".join(calls[:3]) + (f" and {len(calls) - 3} more" if len(calls) > 3 else "")
    error = workcrew.WorkerCrashed(
        f"the joblib batch [{shown}] crashed its worker twice (the second time with each "
        f"estimator's fit in a child process): {crash.args[0] if crash.args else crash}",
        worker_id=crash.worker_id,
        pid=crash.pid,
        exitcode=crash.exitcode,
    )
    error.__cause__ = crash
    return error


def _describe(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    func = getattr(func, "function", func)  # scikit-learn's _FuncWrapper
    name = getattr(func, "__qualname__", None) or type(func).__name__
    shown = [reprlib.repr(a) for a in args] + [f"{k}={reprlib.repr(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(shown)})"


def _settle(
    future: Future[Any], *, result: Any = None, exception: BaseException | None = None
) -> None:
    # The call may have been aborted (its futures cancelled) while the task ran.
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


# -- the cache of idle pools --

_idle: dict[tuple[Any, ...], workcrew.Pool] = {}
_idle_lock = threading.Lock()
#: Idle pools kept between calls; more (other settings) close when given back.
MAX_IDLE = 2


def _key(n_jobs: int, options: dict[str, Any]) -> tuple[Any, ...]:
    """What makes pools interchangeable: size, options, and the environment workers start with.

    The environment counts because workers read it as they start (thread
    limits such as ``OMP_NUM_THREADS``, credentials, paths): a call made after
    the caller changed it gets workers that see the change.
    """
    options_key = tuple(sorted((name, _hashable(value)) for name, value in options.items()))
    return (n_jobs, options_key, hash(frozenset(os.environ.items())))


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))  # an unhashable option (a list of initargs): this object only
    return value


def _checkout(key: tuple[Any, ...], n_jobs: int, options: dict[str, Any]) -> _Lease:
    with _idle_lock:
        pool = _idle.pop(key, None)
    if pool is None:
        pool = workcrew.Pool(n_jobs, **options)
    return _Lease(key, pool, options)


def _checkin(lease: _Lease) -> None:
    surplus = []
    with _idle_lock:
        previous = _idle.pop(lease.key, None)
        _idle[lease.key] = lease.pool
        while len(_idle) > MAX_IDLE:
            surplus.append(_idle.pop(next(iter(_idle))))
    for pool in (previous, *surplus):
        if pool is not None:
            _close(pool)


def _close(pool: workcrew.Pool) -> None:
    pool.close()
    pool.join()


def shutdown() -> None:
    """Close the pools the backend keeps between Parallel calls (also done at exit).

    Pools lent to a running Parallel call are not touched; they are kept when
    the call ends, and a later :func:`shutdown` (or the exit) closes them.
    """
    with _idle_lock:
        pools = list(_idle.values())
        _idle.clear()
    for pool in pools:
        _close(pool)


def _forget_after_fork() -> None:
    # A forked child inherits the parent's idle pools but none of their
    # threads or workers: they are the parent's to close, never the child's to use.
    global _idle_lock
    _idle.clear()
    _idle_lock = threading.Lock()


atexit.register(shutdown)
os.register_at_fork(after_in_child=_forget_after_fork)


# -- in the worker --


def _run(batch: Any) -> Any:
    """Run a joblib batch (in a worker, unpickling this function registers the backend there)."""
    return batch()


# -- a batch run once more after a crash --


def _run_guarded(batch: Any, caller_pid: int) -> Any:
    """Run a joblib batch with each estimator among its arguments fitting in a child process."""
    if os.getpid() == caller_pid:  # not a process of its own: nothing can be isolated
        return batch()
    with _isolated_fits(batch):
        return batch()


@contextmanager
def _isolated_fits(batch: Any) -> Iterator[None]:
    estimators = [obj for obj in _arguments(batch) if _is_estimator(obj)]
    for estimator in estimators:
        estimator.fit = _IsolatedFit(estimator)
    try:
        yield
    finally:
        for estimator in estimators:
            estimator.__dict__.pop("fit", None)


def _arguments(batch: Any) -> Iterator[Any]:
    for _func, args, kwargs in getattr(batch, "items", ()):
        yield from args
        yield from kwargs.values()


def _is_estimator(obj: Any) -> bool:
    """The scikit-learn estimator protocol: ``fit``, ``get_params``, ``set_params``."""
    return (
        not isinstance(obj, type)
        and hasattr(obj, "__dict__")
        and all(callable(getattr(obj, name, None)) for name in ("fit", "get_params", "set_params"))
    )


class _IsolatedFit:
    """``estimator.fit`` run in a forked child; its fitted state comes back by pickle.

    The child is a copy of the worker (the training data is shared, not
    copied); it sends back the estimator's ``__dict__`` or the exception
    ``fit`` raised.  A child that dies without answering (a segfault, an
    abort, the OOM killer) makes ``fit`` raise :class:`workcrew.WorkerCrashed`.
    """

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: whatever happens, it must never return into the worker
            code = 70
            try:
                os.close(read_end)
                code = self._child(write_end, args, kwargs)
            finally:
                os._exit(code)
        os.close(write_end)
        with open(read_end, "rb") as pipe:
            answer = pipe.read()
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 or not answer:
            raise workcrew.WorkerCrashed(
                f"{type(self.estimator).__name__}.fit crashed its process (exit code {code}; "
                "a negative code is the signal that killed it)",
                pid=pid,
                exitcode=code,
            )
        fitted, state = pickle.loads(answer)
        if not fitted:
            raise state
        self.estimator.__dict__.update(state)
        return self.estimator

    def _child(self, write_end: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        estimator = self.estimator
        estimator.__dict__.pop("fit", None)
        try:
            type(estimator).fit(estimator, *args, **kwargs)
            answer = pickle.dumps((True, estimator.__dict__), protocol=5)
        except Exception as exc:  # noqa: BLE001 - fit's own error goes back to be raised there
            try:
                answer = pickle.dumps((False, exc), protocol=5)
            except Exception:  # noqa: BLE001 - an exception that cannot travel: its words can
                answer = pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
        with open(write_end, "wb") as pipe:
            pipe.write(answer)
        return 0


# -- registration, and joblib's test-suite switch --

register_parallel_backend("workcrew", WorkcrewBackend)


def pytest_configure(config: Any) -> None:
    """As a pytest plugin (``pytest -p workcrew.joblib``): honour joblib's test switch.

    joblib's own test configuration (its repository's conftest.py, not in the
    wheel) makes ``JOBLIB_TESTS_DEFAULT_PARALLEL_BACKEND`` joblib's default
    backend; this does the same when joblib's tests run from the installed
    package (``pytest -p workcrew.joblib --pyargs joblib.test``).
    """
    name = os.environ.get("JOBLIB_TESTS_DEFAULT_PARALLEL_BACKEND")
    if name:
        from joblib import parallel

        parallel.DEFAULT_BACKEND = name
