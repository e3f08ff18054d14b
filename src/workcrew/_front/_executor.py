"""``workcrew.Executor``: a ``concurrent.futures.Executor`` on workcrew's engine.

Constructed like ``ProcessPoolExecutor``; its futures are ordinary
``concurrent.futures.Future`` objects, so ``wait`` and ``as_completed`` work.
Differences from the standard library (also in docs/executor.md):

* ``map`` is lazy: it pulls input as results are consumed, with a bounded
  window, instead of submitting the whole input at once; and its default
  ``chunksize=None`` is adaptive (the standard library's is 1).
* a crashing worker fails only its own task (the standard library breaks the
  whole pool).
"""

from __future__ import annotations

import concurrent.futures
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from .._backends import open_engine
from .._core._auto_policy import KindChoice
from .._core._checks import check_chunksize
from .._core._engine_api import PoolEngine
from .._core._execute import STAR, function_name
from .._core._jobs import iterate_results
from .._core._options import PoolOptions
from .._core._public import public
from .._core._stats import PoolStatistics
from .._display._progress import Display, open_display
from .._display._timeline import Timeline
from ._shared import (
    board_url,
    close_board,
    documented_options,
    open_board,
    show_map,
    tally_for,
    timeline_of,
)

if TYPE_CHECKING:
    from .._display._dashboard import BoardEntry

__all__ = ("Executor",)

T = TypeVar("T")


@documented_options("executor")
class Executor(concurrent.futures.Executor):
    """A pool of process (or thread) workers behind the ``concurrent.futures`` API.

    Takes ``ProcessPoolExecutor``'s arguments (and ``ThreadPoolExecutor``'s
    ``thread_name_prefix``, by keyword: thread workers are then named
    ``<prefix>_0``, ``<prefix>_1``, ...) and the ``Pool`` keywords
    (``kind``, ``start_method``, ``chunksize``, ``task_timeout``, ...).  What
    ``initializer`` returns is the worker's state (:func:`workcrew.worker_state`);
    ``worker_exit`` is called with it when a worker ends gracefully (see
    docs/worker-state.md).  Context variables set by the submitting code are
    visible in its tasks.

    Example::

        from concurrent.futures import as_completed
        from workcrew import Executor

        def square(x):
            return x * x

        if __name__ == "__main__":
            with Executor(max_workers=4) as ex:
                futures = [ex.submit(square, i) for i in range(10)]
                print(sorted(f.result() for f in as_completed(futures)))
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        worker_exit: Callable[[Any], object] | None = None,
        max_tasks_per_child: int | None = None,
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
        thread_name_prefix: str = "",
        backend: str = "local",
        address: str | None = None,
        client: Any = None,
        security: Any = None,
    ) -> None:
        if mp_context is not None and start_method is None:
            start_method = mp_context.get_start_method()
        self._options = PoolOptions.build(
            max_workers,
            kind=kind,
            start_method=start_method,
            initializer=initializer,
            initargs=initargs,
            worker_exit=worker_exit,
            max_tasks_per_worker=max_tasks_per_child,
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
            thread_name_prefix=thread_name_prefix,
            backend=backend,
            address=address,
            client=client,
            security=security,
        )
        self._engine: PoolEngine = open_engine(self._options, drain_at_exit=True)
        self._board = open_board(self._options, "Executor", self._engine)
        finalizer = weakref.finalize(self, _collect, self._engine, self._board)
        finalizer.atexit = False  # the engine's exit hook drains it instead

    @property
    def workers(self) -> int:
        """The number of workers."""
        return self._options.workers

    @property
    def dashboard_url(self) -> str | None:
        """The live dashboard's address (``dashboard=True``) until ``shutdown()``; else None."""
        return board_url(self._board)

    def statistics(self) -> PoolStatistics:
        """What the executor did so far, per worker and overall (see docs/statistics.md)."""
        return self._engine.statistics()

    def timeline(self) -> Timeline:
        """Every task's span per worker; needs ``Executor(..., timeline=True)``."""
        return timeline_of(self._engine, self._options, "Executor")

    def set_kind(self, fn: Callable[..., Any], kind: str) -> None:
        """``kind="auto"`` executors: run ``fn`` on ``kind`` workers, without measuring it."""
        self._engine.set_kind(fn, kind)

    def kind_choices(self) -> list[KindChoice]:
        """``kind="auto"`` executors: which kind each function was routed to, and why."""
        return self._engine.kind_choices()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)``; return its ``concurrent.futures.Future``."""
        return self._engine.submit_call(fn, args, kwargs)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        task_timeout: float | None = None,
        retries: int | None = None,
        progress: bool | str = False,
    ) -> Iterator[T]:
        """``fn`` over zipped ``iterables``, results in order, input read lazily.

        Raises the first task exception when its result is reached;
        ``TimeoutError`` if the results are not all there ``timeout`` seconds
        after the call.  Closing the iterator early drops unstarted items.
        ``task_timeout`` and ``retries`` override the executor's for this call;
        ``progress=True`` shows a progress bar (docs/progress.md).
        """
        check_chunksize(chunksize)
        deadline = None if timeout is None else time.monotonic() + timeout
        policy = self._options.policy.override(timeout=task_timeout, retries=retries)
        tally = tally_for(progress, self._board)
        job = self._engine.stream(
            fn, STAR, zip(*iterables), chunksize, ordered=True, policy=policy, tally=tally
        )
        job.feed()  # work starts at the call, as in concurrent.futures
        results = iterate_results(job, deadline)
        if tally is None:
            return results
        sizes = [len(it) for it in iterables if isinstance(it, Sized)]
        total = min(sizes) if len(sizes) == len(iterables) else None
        show_map(self._board, function_name(fn), tally, total, job)
        display = open_display(progress, tally, total, function_name(fn))
        return results if display is None else _shown(results, display)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no new work; with ``cancel_futures`` drop what has not started.

        With ``wait`` (the default) return once every worker has exited.
        """
        if cancel_futures:
            self._engine.cancel_pending()
        self._engine.close()
        close_board(self._board)
        if wait:
            self._engine.join()

    def __repr__(self) -> str:
        state = "running" if self._engine.accepting else "shut down"
        return (
            f"<workcrew.Executor kind={self._options.kind!r} workers={self.workers} state={state}>"
        )


def _shown(results: Iterator[T], display: Display) -> Iterator[T]:
    """``results``, with the progress display ended when they end (or are dropped)."""
    try:
        yield from results
    finally:
        display.close()
        display.join()


public(Executor)


def _collect(engine: PoolEngine, board: BoardEntry | None) -> None:
    """A garbage-collected executor: off the dashboard, and closed (its work still runs)."""
    close_board(board)
    engine.close()
