"""``workcrew.Pipeline``: stages of workers connected by bounded queues.

An edge module: built only on ``workcrew.Pool``'s public API, one pool per
stage.  Data flow of one run (``Pipeline.run(source)``), for stages 1..n::

    source ─► source thread ─► channel 0 ─► stage 1 ─► channel 1 ─► ... ─► channel n ─► next()

    one stage:   channel i-1 ─► feeder ── map_async(batch) ──► Pool ── callback ──► done queue
                                  ▲  (waits while the window is full)                   │
                                  └──── window credits ◄──── collector ◄────────────────┘
                                                                 └──► channel i

* A **channel** is a bounded FIFO (``buffer`` items) with one producer and one
  consumer; blocking in it is the backpressure.  It measures how long its
  consumer waited for input and its producer for room.
* The **feeder** of a stage blocks for one item, takes what else is there (up
  to a batch, without blocking) and submits the batch with ``map_async``.  At
  most ``window`` items are in a stage at once (submitted, not yet passed on).
* **Callbacks** run on the pool's master thread: they only put into the
  unbounded done queue, or call ``_Run.stop``; neither ever waits.
* The **collector** passes finished batches on, in submission order
  (``ordered=True``) or as they finish, giving one window credit back per item
  it puts downstream.  It owns its pool's shutdown: ``close()`` + ``join()`` at
  the end of the stream, ``terminate()`` when the run stops.

Invariants:

1. An item is in exactly one place: the source thread's hand, a channel, or a
   stage's window.  So between the source and the caller there are at most
   ``1 + sum(buffer + window_i) + buffer`` items, however long the source.
2. Only the source thread advances the source; only a stage's feeder reads its
   input channel and submits to its pool; only its collector writes its output
   channel and shuts its pool down.  No thread ever waits on the master thread
   of a pool while holding a lock a callback needs.
3. ``stop`` is idempotent and the first reason wins: it aborts every channel,
   wakes every feeder and collector, and is the only way a run ends early.
   The caller's ``next()`` re-raises the first error after every thread ended.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import Any

from .._core._exceptions import TaskCancelled
from .._core._execute import add_note
from .._core._jobs import Tally
from .._core._public import public
from .._display._progress import Display, open_display
from ._channels import Channel, Window
from ._pool import Pool
from ._shared import board_of, tally_for
from ._stages import Stage, StageStatistics, check_count

__all__ = ("Pipeline", "PipelineRun", "Stage", "StageStatistics")

#: Items each queue between stages holds by default.  Larger smooths bursts
#: between stages of uneven speed; smaller keeps fewer items in memory.
DEFAULT_BUFFER = 64
#: A stage's window is at least this many items per worker, so every worker
#: has a next item queued while the collector passes the last one on.
WINDOW_PER_WORKER = 2
#: The window is split into at least this many batches (map_async calls), so
#: workers keep computing while a finished batch is handed downstream.
BATCHES_PER_WINDOW = 4

_clock = time.perf_counter


# -- the pipeline ------------------------------------------------------------------------


class Pipeline:
    """Stages of workers connected by bounded queues, run over a stream of items.

    ``dashboard=True`` shows each stage's pool, and one progress bar per stage, on the live
    dashboard (docs/dashboard.md; ``PipelineRun.dashboard_url``).
    Each stage has its own pool (its own kind and worker count); ``buffer`` is
    the size of each queue between stages.  ``ordered=True`` gives results in
    source order; ``ordered=False`` as they are done.  A plain function is a
    ``Stage(fn)``: a thread stage.

    Example::

        pipe = workcrew.Pipeline(
            workcrew.Stage(fetch, workers=16),          # threads wait on the network
            workcrew.Stage(parse, kind="process"),      # one process per CPU
            workcrew.Stage(store, workers=2),
        )
        for record in pipe.run(urls):
            print(record)
        print(pipe.statistics())
    """

    def __init__(
        self,
        *stages: Stage | Callable[[Any], Any],
        ordered: bool = True,
        buffer: int = DEFAULT_BUFFER,
        dashboard: bool = False,
    ) -> None:
        if not stages:
            raise ValueError("a Pipeline needs at least one stage")
        check_count("buffer", buffer, allow_none=False)
        self._stages = tuple(s if isinstance(s, Stage) else Stage(s) for s in stages)
        self._ordered = bool(ordered)
        self._buffer = buffer
        if not isinstance(dashboard, bool):
            raise TypeError(f"dashboard must be True or False, got {dashboard!r}")
        self._dashboard = dashboard
        self._last: _Run | None = None

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The stages, in order."""
        return self._stages

    @property
    def ordered(self) -> bool:
        """True if results come in source order."""
        return self._ordered

    @property
    def buffer(self) -> int:
        """Items each queue between stages holds."""
        return self._buffer

    def run(self, source: Iterable[Any], *, progress: bool | str = False) -> PipelineRun:
        """Start the pipeline over ``source``; iterate the returned object for the results.

        The pools start now; ``source`` is read in a pipeline thread, as far
        ahead as the queues allow.  Use the result in a ``for`` loop or a
        ``with`` block; leaving either early stops the run and cleans up.
        ``progress=True`` counts the results you read (docs/progress.md).
        """
        tally = tally_for(progress)
        total = len(source) if isinstance(source, Sized) else None
        run = _Run(self._stages, iter(source), self._ordered, self._buffer, self._dashboard, total)
        self._last = run
        if tally is None:
            return PipelineRun(run)
        desc = "Pipeline " + " -> ".join(stage.name for stage in self._stages)
        return PipelineRun(run, tally, open_display(progress, tally, total, desc))

    def statistics(self) -> tuple[StageStatistics, ...]:
        """Per-stage statistics of the latest run (live while it runs); ``()`` before any."""
        return () if self._last is None else self._last.statistics()

    def __repr__(self) -> str:
        names = " -> ".join(f"{s.name}[{s.kind}]" for s in self._stages)
        return f"<workcrew.Pipeline {names} ordered={self._ordered} buffer={self._buffer}>"


class PipelineRun(Iterator[Any]):
    """The results of one ``Pipeline.run``: an iterator, also a context manager.

    ``next()`` re-raises the first exception of any stage (or of the source),
    with a note naming where it happened, once every pipeline thread and worker
    has stopped.  ``close()``, leaving a ``with`` block, or dropping the
    iterator (``break``) stops the run: pools are terminated, threads end.
    """

    def __init__(
        self, run: _Run, tally: Tally | None = None, display: Display | None = None
    ) -> None:
        # Threads reference the _Run, never this object, so dropping the last
        # reference to it (a `break` out of a for loop) collects it at once.
        self._run = run
        self._tally, self._display = tally, display

    def __iter__(self) -> PipelineRun:
        return self

    @property
    def dashboard_url(self) -> str | None:
        """The live dashboard's address while the run's pools are open
        (``Pipeline(..., dashboard=True)``); None otherwise."""
        return self._run.dashboard_url()

    def __next__(self) -> Any:
        run = self._run
        try:
            found, item = run.results.get()
        except BaseException:  # Ctrl-C while waiting: stop everything, then let it out
            self.close()
            raise
        if found:
            if self._tally is not None:
                self._tally.add(1, 0)
            return item
        run.join()
        error = run.pop_error()
        if self._display is not None:
            if self._tally is not None and error is not None:
                self._tally.add(0, 1)
            self._display.close()
            self._display.join()
        if error is not None:
            raise error
        raise StopIteration

    def close(self) -> None:
        """Stop the run (if it is still going) and wait until its threads and workers end."""
        self._run.stop(None)
        self._run.join()
        if self._display is not None:
            self._display.close()

    def statistics(self) -> tuple[StageStatistics, ...]:
        """Per-stage statistics of this run (live while it runs)."""
        return self._run.statistics()

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    def __del__(self) -> None:
        display = getattr(self, "_display", None)
        if display is not None:
            display.close()
        run = getattr(self, "_run", None)
        if run is not None:
            run.stop(None)
            # Usually the caller dropped the iterator (`break`): wait, so nothing
            # outlives the loop.  But a collection of a reference cycle may run
            # on a workcrew thread (a pool's master, a stage thread) that this
            # run's threads wait for: there, stop only; the threads end by themselves.
            if not threading.current_thread().name.startswith("workcrew-"):
                run.join()


# -- the machinery of one run ------------------------------------------------------------


@dataclass(frozen=True)
class _End:
    """In a done queue: the feeder submitted ``batches`` batches and will submit no more."""

    batches: int


_STOP: Any = object()  # in a done queue: the run stopped


class _StageRun:
    """One stage of one run: its pool, its channels, its window and its counters.

    Each counter has a single writer (``items_in``: the feeder; ``items_out``
    and ``finished``: the collector; ``failures``: the pool's master thread),
    so none can lose an update; readers may see a value one step behind.
    """

    def __init__(
        self, index: int, count: int, stage: Stage, pool: Pool, channels: list[Channel]
    ) -> None:
        self.stage = stage
        self.pool = pool
        self.inp, self.out = channels
        self.where = (
            f"in stage {index + 1} of {count} ({stage.name!r}, kind={stage.kind!r}) of a Pipeline"
        )
        size = max(self.inp.capacity, WINDOW_PER_WORKER * pool.workers)
        self.window = Window(size)
        self.batch = max(1, size // BATCHES_PER_WINDOW)
        self.done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.items_in = self.items_out = self.failures = 0
        self.finished: float | None = None

    def ended(self) -> bool:
        """The stage passed on its last item (or the run stopped)."""
        return self.finished is not None

    def statistics(self, started: float) -> StageStatistics:
        end = self.finished if self.finished is not None else _clock()
        return StageStatistics(
            name=self.stage.name,
            kind=str(self.stage.kind),
            workers=self.pool.workers,
            items_in=self.items_in,
            items_out=self.items_out,
            failures=self.failures,
            input_wait_seconds=self.inp.get_wait,
            output_wait_seconds=self.out.put_wait,
            wall_seconds=end - started,
        )


class _StageCounts:
    """A stage's items passed on and failed, read by the dashboard as a map's tally."""

    __slots__ = ("_stage",)

    def __init__(self, stage: _StageRun) -> None:
        self._stage = stage

    @property
    def done(self) -> int:
        return self._stage.items_out + self._stage.failures

    @property
    def failed(self) -> int:
        return self._stage.failures


class _Run:
    """The threads, pools and channels of one run (see the module docstring)."""

    def __init__(
        self,
        stages: tuple[Stage, ...],
        source: Iterator[Any],
        ordered: bool,
        buffer: int,
        dashboard: bool = False,
        total: int | None = None,
    ) -> None:
        """``total``: the source's length if known (the dashboard's stage bars)."""
        self._lock = threading.Lock()
        self._stopped = False
        self._error: BaseException | None = None
        self._ordered = ordered
        self.started = _clock()
        channels = [Channel(buffer) for _ in range(len(stages) + 1)]
        self._channels = channels
        self.results = channels[-1]
        self._stages: list[_StageRun] = []
        try:
            for i, stage in enumerate(stages):
                pool = _open_pool(stage, dashboard)
                self._stages.append(_StageRun(i, len(stages), stage, pool, channels[i : i + 2]))
        except BaseException:
            for st in self._stages:
                st.pool.terminate()
            raise
        if dashboard:
            self._show_stages(total)  # before any batch is submitted
        self._threads: list[threading.Thread] = []
        self._start_threads(source)

    def dashboard_url(self) -> str | None:
        urls = [st.pool.dashboard_url for st in self._stages]
        return next((url for url in urls if url is not None), None)

    def _show_stages(self, total: int | None) -> None:
        """On the dashboard: each stage's pool named for its stage, its progress one bar.

        The stage's ``map_async`` batches are not shown one by one.
        """
        count = len(self._stages)
        for i, st in enumerate(self._stages):
            entry = board_of(st.pool)
            if entry is not None:
                entry.name = f"Pipeline stage {i + 1} of {count}: {st.stage.name}"
                entry.show_calls = False
                entry.add_map(f"stage {i + 1}: {st.stage.name}", _StageCounts(st), total, st.ended)

    def _start_threads(self, source: Iterator[Any]) -> None:
        # Collectors first: each owns its pool's shutdown, so once it runs
        # nothing can leave the pool open.
        targets: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = []
        targets += [(f"{st.stage.name}-collect", self._collect, (st,)) for st in self._stages]
        targets += [(f"{st.stage.name}-feed", self._feed, (st,)) for st in self._stages]
        targets.append(("source", self._pull, (source,)))
        self._pulling = False  # the source thread is inside next(source) (under self._lock)
        self._source_thread: threading.Thread | None = None
        try:
            for name, target, args in targets:
                # Each thread runs in a copy of the caller's context, so the context
                # variables set around run() reach the stage functions (the pools
                # capture them at submission, in these threads).
                thread = threading.Thread(
                    target=contextvars.copy_context().run,
                    args=(target, *args),
                    name=f"workcrew-pipeline-{name}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
                if target == self._pull:
                    self._source_thread = thread
        except BaseException:
            self.stop(None)
            for st in self._stages[len(self._threads) :]:
                st.pool.terminate()  # its collector never started
            self.join()
            raise

    # -- stopping ---------------------------------------------------------------------------

    def stop(self, error: BaseException | None, where: str = "") -> None:
        """End the run: the first call wins.  Never waits (callbacks call it)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            if error is not None and where:  # before the caller can see it
                add_note(error, f"workcrew: raised {where}")
            self._error = error
        for channel in self._channels:
            channel.abort()
        for st in self._stages:
            st.window.stop()
            st.done.put(_STOP)

    def join(self) -> None:
        """Wait for every thread of the run (collectors shut their pools down first)."""
        me = threading.current_thread()
        with self._lock:
            # A source blocked in its own next() cannot be interrupted; its thread
            # (a daemon) ends by itself once the source yields, seeing the stop.
            skip = self._source_thread if self._pulling else None
        for thread in self._threads:
            if thread is not me and thread is not skip:
                thread.join()
        if me not in self._threads:
            for st in self._stages:  # results of a stopped run: the Pipeline keeps the _Run
                while not st.done.empty():
                    st.done.get_nowait()

    def pop_error(self) -> BaseException | None:
        """The error that stopped the run, once; None after that or if there was none."""
        with self._lock:
            error, self._error = self._error, None
        return error

    def statistics(self) -> tuple[StageStatistics, ...]:
        return tuple(st.statistics(self.started) for st in self._stages)

    # -- threads ------------------------------------------------------------------------------

    def _pull(self, source: Iterator[Any]) -> None:
        """The source thread: the only one advancing the caller's iterator."""
        first = self._channels[0]
        try:
            while True:
                with self._lock:
                    if self._stopped:
                        return
                    self._pulling = True  # join() does not wait for what next() does
                try:
                    item = next(source)
                except StopIteration:
                    break
                finally:
                    with self._lock:
                        self._pulling = False
                if not first.put_some([item], 0):
                    return  # the run stopped
            first.close()
        except BaseException as exc:  # noqa: BLE001 - even Ctrl-C in the source reaches the caller
            self.stop(exc, "by the source iterator of a Pipeline")

    def _feed(self, st: _StageRun) -> None:
        """A stage's feeder: batches from its input channel to its pool, within its window."""
        submitted = 0
        try:
            while True:
                free = st.window.wait_free()
                if not free:
                    return  # stopped
                batch = st.inp.get_batch(min(free, st.batch))
                if batch is None:
                    return  # stopped
                if not batch:
                    st.done.put(_End(submitted))
                    return
                st.window.take(len(batch))
                st.items_in += len(batch)
                st.pool.map_async(
                    st.stage.fn,
                    batch,
                    callback=self._on_results(st, submitted),
                    error_callback=self._on_error(st),
                )
                submitted += 1
        except BaseException as exc:  # noqa: BLE001 - a pipeline thread never dies silently
            self.stop(exc, st.where)

    def _on_results(self, st: _StageRun, batch_id: int) -> Callable[[list[Any]], None]:
        def callback(results: list[Any]) -> None:  # on the pool's master thread: never wait
            st.done.put((batch_id, results))

        return callback

    def _on_error(self, st: _StageRun) -> Callable[[BaseException], None]:
        def error_callback(exc: BaseException) -> None:  # on the pool's master thread
            if not (self._stopped and isinstance(exc, TaskCancelled)):
                st.failures += 1  # not the cancellations of our own terminate()
            self.stop(exc, st.where)

        return error_callback

    def _collect(self, st: _StageRun) -> None:
        """A stage's collector: results downstream, then the pool's shutdown."""
        finished = False
        try:
            finished = self._pass_on(st)
        except BaseException as exc:  # noqa: BLE001 - a pipeline thread never dies silently
            self.stop(exc, st.where)
        try:
            if finished:
                st.out.close()
                st.pool.close()
                st.pool.join()
            else:
                st.pool.terminate()
        except BaseException as exc:  # noqa: BLE001 - a pipeline thread never dies silently
            self.stop(exc, st.where)
        finally:
            st.finished = _clock()

    def _pass_on(self, st: _StageRun) -> bool:
        """Emit every batch in order (or as done); True at the end of the stream."""
        expected: int | None = None
        emitted = 0
        waiting: dict[int, list[Any]] = {}
        while expected is None or emitted < expected:
            message = st.done.get()
            if message is _STOP:
                return False
            if isinstance(message, _End):
                expected = message.batches
                continue
            batch_id, results = message
            if not self._ordered:
                if not self._emit(st, results):
                    return False
                emitted += 1
                continue
            waiting[batch_id] = results
            while emitted in waiting:  # the next batch in submission order is there
                if not self._emit(st, waiting.pop(emitted)):
                    return False
                emitted += 1
        return True

    def _emit(self, st: _StageRun, results: list[Any]) -> bool:
        """Put ``results`` downstream, freeing one window credit per item; False if stopped."""
        done = 0
        while done < len(results):
            put = st.out.put_some(results, done)
            if not put:
                return False
            done += put
            st.items_out += put
            st.window.give(put)
        return True


def _open_pool(stage: Stage, dashboard: bool) -> Pool:
    return Pool(
        stage.workers,
        stage.initializer,
        stage.initargs,
        kind=str(stage.kind),
        start_method=stage.start_method,
        chunksize=stage.chunksize,
        task_timeout=stage.task_timeout,
        retries=stage.retries,
        worker_exit=stage.worker_exit,
        dashboard=dashboard,
    )


public(Pipeline, PipelineRun)
