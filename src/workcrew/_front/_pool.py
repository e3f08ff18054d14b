"""``workcrew.Pool``: a drop-in for ``multiprocessing.Pool`` on workcrew's engine.

Deliberate differences from ``multiprocessing.Pool`` (also in docs/pool.md):

* leaving a ``with`` block normally waits for submitted work (close + join);
  only leaving it by an exception terminates.  ``multiprocessing`` always
  terminates, silently dropping pending ``apply_async`` work.
* ``terminate()`` fails pending results with :class:`TaskCancelled` instead of
  leaving ``get()`` to wait forever.
* ``chunksize=None`` (the default, also for ``imap``) sizes chunks adaptively
  from measured task durations.
* ``imap``/``imap_unordered`` pull their input lazily with a bounded window;
  ``multiprocessing`` reads the whole input ahead in a background thread.
* callbacks run on the pool's master thread (``multiprocessing``: its result
  thread); keep them short, and never wait on the pool from them.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sized
from concurrent.futures import Future, InvalidStateError

from .._backends import open_engine
from .._core._checks import check_chunksize
from .._core._engine_api import PoolEngine
from .._core._exceptions import TaskCancelled
from .._core._execute import MAP, STAR, function_name
from .._core._options import PoolOptions, TaskPolicy
from .._core._public import public
from .._display._progress import open_display
from ._results import AsyncResult, IMapIterator, _ShownIMapIterator, _ShownResult
from ._shared import (
    board_url,
    close_board,
    documented_options,
    open_board,
    show_map,
    tally_for,
    timeline_of,
)

TYPE_CHECKING = False  # typing's names for checkers; stand-ins at run time (see _core._typing)
if TYPE_CHECKING:  # loaded when used, not with ``from workcrew import Pool``
    from typing import Any, TypeVar

    from .._core._auto_policy import KindChoice
    from .._core._stats import PoolStatistics
    from .._display._dashboard import BoardEntry
    from .._display._timeline import Timeline
else:
    from .._core._typing import TypeVar

__all__ = ("Pool",)

T = TypeVar("T")


@documented_options("pool")
class Pool:
    """A pool of workers with the ``multiprocessing.Pool`` API.

    ``Pool(4)`` starts four process workers.  Beyond the standard arguments:
    ``kind`` (``"process"``, ``"thread"``, ``"async"`` or ``"auto"``), ``start_method`` (``"fork"``,
    ``"spawn"``, ``"forkserver"``; default forkserver where available),
    ``chunksize`` (default for every map call; None = adaptive),
    ``task_timeout`` (seconds a task may run), ``retries``, ``retry_on`` and
    ``retry_backoff`` (see docs/failures.md), ``max_memory_per_worker`` (bytes of
    resident memory after which a process worker is replaced),
    ``concurrency_per_worker`` (process workers running that many IO-bound tasks
    at once each: coroutines on an event loop, functions on threads),
    ``event_loop`` (``"auto"``: uvloop when installed, else asyncio's;
    ``"asyncio"``; ``"uvloop"``) for the async kind and hybrid workers,
    ``worker_output`` (``"plain"``, the default: process workers' printed lines
    reach ``sys.stdout``/``sys.stderr`` as printed, like ``multiprocessing``;
    ``"tagged"``: each line starts ``[worker 3] ``; see docs/output.md).
    ``kind="auto"`` measures each function and routes it (see docs/auto.md).

    What ``initializer`` returns is the worker's state, which tasks read with
    :func:`workcrew.worker_state`; ``worker_exit`` is called with it when a
    worker ends gracefully (see docs/worker-state.md).  Context variables
    (``contextvars``) set by the submitting code are visible in its tasks.

    Example::

        from workcrew import Pool

        def square(x):
            return x * x

        if __name__ == "__main__":
            with Pool(4) as pool:
                print(pool.map(square, range(10)))
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        worker_exit: Callable[[Any], object] | None = None,
        kind: str = "process",
        start_method: str | None = None,
        chunksize: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] | type[BaseException] = (Exception,),
        retry_backoff: float = 0.0,
        max_memory_per_worker: int | None = None,
        concurrency_per_worker: int = 1,
        event_loop: str = "auto",
        worker_output: str = "plain",
        timeline: bool = False,
        dashboard: bool = False,
        backend: str = "local",
        address: str | None = None,
        client: Any = None,
        security: Any = None,
    ) -> None:
        if context is not None and start_method is None:
            start_method = context.get_start_method()
        self._options = PoolOptions.build(
            processes,
            kind=kind,
            start_method=start_method,
            initializer=initializer,
            initargs=tuple(initargs),
            worker_exit=worker_exit,
            max_tasks_per_worker=maxtasksperchild,
            chunksize=chunksize,
            task_timeout=task_timeout,
            retries=retries,
            retry_on=retry_on,
            retry_backoff=retry_backoff,
            max_memory_per_worker=max_memory_per_worker,
            concurrency_per_worker=concurrency_per_worker,
            event_loop=event_loop,
            worker_output=worker_output,
            timeline=timeline,
            dashboard=dashboard,
            backend=backend,
            address=address,
            client=client,
            security=security,
        )
        self._engine: PoolEngine = open_engine(self._options, drain_at_exit=False)
        if initializer is not None:
            self._engine.start_all()  # as multiprocessing.Pool: initializers run at once
        self._board = open_board(self._options, "Pool", self._engine)
        self._finalizer = weakref.finalize(self, _collect, self._engine, self._board)
        self._finalizer.atexit = False  # the engine's own exit hook handles interpreter exit

    @property
    def workers(self) -> int:
        """The number of workers."""
        return self._options.workers

    @property
    def dashboard_url(self) -> str | None:
        """The live dashboard's address (``dashboard=True``), token included; None otherwise.

        None also once the pool is joined or terminated.  See docs/dashboard.md.
        """
        return board_url(self._board)

    def statistics(self) -> PoolStatistics:
        """What the pool did so far, per worker and overall (``print`` it for a table).

        Works at any time, also after ``join()``; see docs/statistics.md.
        """
        return self._engine.statistics()

    def timeline(self) -> Timeline:
        """Every task's span per worker, recorded since the pool started.

        Needs ``Pool(..., timeline=True)``.  ``Timeline.write_trace(path)``
        writes Chrome Trace Event JSON (Perfetto, chrome://tracing);
        ``write_html(path)`` a picture of it; ``text()`` one for a terminal.
        """
        return timeline_of(self._engine, self._options, "Pool")

    @property
    def kind(self) -> str:
        """The worker kind: ``"process"``, ``"thread"``, ``"async"``, ``"auto"`` or ``"dask"``."""
        return self._options.kind

    @property
    def start_method(self) -> str:
        """The start method of process workers."""
        return self._options.start_method

    def set_kind(self, fn: Callable[..., Any], kind: str) -> None:
        """``kind="auto"`` pools: run ``fn`` on ``kind`` workers, without measuring it."""
        self._engine.set_kind(fn, kind)

    def kind_choices(self) -> list[KindChoice]:
        """``kind="auto"`` pools: which kind each function was routed to, and why."""
        return self._engine.kind_choices()

    # -- single calls ----------------------------------------------------------------

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` in a worker; return a ``concurrent.futures.Future``."""
        return self._engine.submit_call(fn, args, kwargs)

    def apply(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        *,
        task_timeout: float | None = None,
        retries: int | None = None,
    ) -> T:
        """Run ``func(*args, **kwds)`` in a worker and return its result."""
        return _wait(self.apply_async(func, args, kwds, task_timeout=task_timeout, retries=retries))

    def apply_async(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
        retries: int | None = None,
    ) -> AsyncResult[T]:
        """Like ``apply``, returning an :class:`AsyncResult` at once."""
        policy = self._policy(task_timeout, retries)
        future = self._engine.submit_call(func, tuple(args), dict(kwds or {}), policy)
        return AsyncResult(future, callback, error_callback)

    # -- maps ---------------------------------------------------------------------------
    # Every map call takes ``task_timeout`` and ``retries`` to override the pool's.

    def map(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        retries: int | None = None,
        progress: bool | str = False,
    ) -> list[T]:
        """``[func(x) for x in iterable]``, computed by the workers, in order.

        ``progress=True`` shows a bar on a terminal (plain lines otherwise; see
        docs/progress.md); every mapping method takes it.
        """
        return _wait(self._list(func, MAP, iterable, chunksize, task_timeout, retries, progress))

    def map_async(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
        retries: int | None = None,
        progress: bool | str = False,
    ) -> AsyncResult[list[T]]:
        """Like ``map``, returning an :class:`AsyncResult` at once."""
        future = self._list(func, MAP, iterable, chunksize, task_timeout, retries, progress).future
        return AsyncResult(future, callback, error_callback)

    def starmap(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        retries: int | None = None,
        progress: bool | str = False,
    ) -> list[T]:
        """``[func(*args) for args in iterable]``, computed by the workers, in order."""
        return _wait(self._list(func, STAR, iterable, chunksize, task_timeout, retries, progress))

    def starmap_async(
        self,
        func: Callable[..., T],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
        retries: int | None = None,
        progress: bool | str = False,
    ) -> AsyncResult[list[T]]:
        """Like ``starmap``, returning an :class:`AsyncResult` at once."""
        future = self._list(func, STAR, iterable, chunksize, task_timeout, retries, progress).future
        return AsyncResult(future, callback, error_callback)

    def imap(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        retries: int | None = None,
        progress: bool | str = False,
    ) -> IMapIterator[T]:
        """Results of ``func`` over a lazily read ``iterable``, in input order."""
        return self._stream(
            func, iterable, chunksize, task_timeout, retries, ordered=True, progress=progress
        )

    def imap_unordered(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        task_timeout: float | None = None,
        retries: int | None = None,
        progress: bool | str = False,
    ) -> IMapIterator[T]:
        """Results of ``func`` over a lazily read ``iterable``, as they complete."""
        return self._stream(
            func, iterable, chunksize, task_timeout, retries, ordered=False, progress=progress
        )

    # -- from async code -------------------------------------------------------------
    # For callers inside a running event loop (a web server, say): these await
    # the pool's work without blocking the loop.  The work itself runs on the
    # pool's workers (processes for CPU-bound functions).

    async def asubmit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``await pool.asubmit(fn, *args)``: the result of ``fn(*args, **kwargs)``."""
        import asyncio

        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    async def amap(
        self, func: Callable[[Any], T], iterable: Iterable[Any], chunksize: int | None = None
    ) -> list[T]:
        """``await pool.amap(func, iterable)``: ``map`` without blocking the event loop."""
        import asyncio

        return await asyncio.wrap_future(self.map_async(func, iterable, chunksize).future)

    async def aimap(
        self,
        func: Callable[[Any], T],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        ordered: bool = True,
    ) -> AsyncIterator[T]:
        """``async for r in pool.aimap(func, iterable)``: results as ``imap`` (or unordered).

        Each wait for the next result happens in a helper thread, never on the loop.
        """
        it = self._stream(func, iterable, chunksize, None, None, ordered=ordered)
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            while True:
                value = await loop.run_in_executor(None, next, it, _STOP)
                if value is _STOP:
                    return
                yield value
        finally:
            it.close()

    def _policy(self, task_timeout: float | None, retries: int | None) -> TaskPolicy:
        return self._options.policy.override(timeout=task_timeout, retries=retries)

    def _list(
        self,
        func: Callable[..., T],
        mode: int,
        iterable: Iterable[Any],
        chunksize: int | None,
        task_timeout: float | None,
        retries: int | None,
        progress: bool | str = False,
    ) -> AsyncResult[list[T]]:
        policy = self._policy(task_timeout, retries)
        items = _as_list(iterable)
        tally = tally_for(progress, self._board)
        future = self._engine.submit_list(
            func, mode, items, _chunksize(chunksize), policy, tally=tally
        )
        show_map(self._board, function_name(func), tally, len(items), future)
        if tally is not None:
            display = open_display(progress, tally, len(items), function_name(func))
            if display is not None:
                future.add_done_callback(lambda _: display.close())
                return _ShownResult(future, display)
        return AsyncResult(future)

    def _stream(
        self,
        func: Callable[..., T],
        iterable: Iterable[Any],
        chunksize: int | None,
        task_timeout: float | None,
        retries: int | None,
        *,
        ordered: bool,
        progress: bool | str = False,
    ) -> IMapIterator[T]:
        policy = self._policy(task_timeout, retries)
        tally = tally_for(progress, self._board)
        job = self._engine.stream(
            func, MAP, iterable, _chunksize(chunksize), ordered=ordered, policy=policy, tally=tally
        )
        if tally is not None:
            total = len(iterable) if isinstance(iterable, Sized) else None
            show_map(self._board, function_name(func), tally, total, job)
            display = open_display(progress, tally, total, function_name(func))
            if display is not None:
                return _ShownIMapIterator(job, display)
        return IMapIterator(job)

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Accept no new tasks; workers exit once the submitted ones are done."""
        self._engine.close()

    def terminate(self) -> None:
        """Stop the workers now; pending results fail with :class:`TaskCancelled`."""
        self._engine.terminate()
        self._finalizer.detach()
        close_board(self._board)

    def join(self) -> None:
        """Wait for the workers to exit; call ``close()`` or ``terminate()`` first."""
        if self._engine.accepting:
            raise ValueError("Pool is still running: call close() or terminate() before join()")
        self._engine.join()
        self._finalizer.detach()
        close_board(self._board)

    def __enter__(self) -> Pool:
        if not self._engine.accepting:  # as multiprocessing (bpo-35477)
            raise ValueError(
                "Pool not running: this pool was closed or terminated (a `with` block "
                "ends with close()); create a new Pool"
            )
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            self.join()
        else:
            self.terminate()

    def __repr__(self) -> str:
        state = "running" if self._engine.accepting else "closed"
        return f"<workcrew.Pool kind={self.kind!r} workers={self.workers} state={state}>"


#: what ``next(it, _STOP)`` returns at the end of ``aimap``'s iterator: StopIteration
#: cannot cross an executor future, so the end is turned into this marker
_STOP: Any = object()


def _wait(result: AsyncResult[T]) -> T:
    try:
        return result.get()
    except KeyboardInterrupt:
        # Stop handing out the rest of this map; a `with` block then terminates.
        if not result.future.cancel():
            with contextlib.suppress(InvalidStateError):
                result.future.set_exception(TaskCancelled("interrupted by KeyboardInterrupt"))
        raise


def _as_list(iterable: Iterable[Any]) -> list[Any]:
    return iterable if isinstance(iterable, list) else list(iterable)


def _chunksize(chunksize: int | None) -> int | None:
    check_chunksize(chunksize)
    return chunksize


def _collect(engine: PoolEngine, board: BoardEntry | None) -> None:
    close_board(board)
    if engine.accepting:
        warnings.warn(
            "a workcrew.Pool was garbage-collected without close() or terminate(); "
            "it was terminated. Use `with Pool() as pool:` to shut it down explicitly.",
            ResourceWarning,
            stacklevel=1,
        )
    engine.terminate()


public(Pool)
