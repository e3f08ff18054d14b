"""The master: one thread that owns every worker and every chunk in flight.

Data flow::

    caller threads                 master thread                      workers
    --------------                 -------------                      -------
    submit/map/imap --job--> inbox --> Scheduler --chunk--> handle.send_chunk --> worker
         ^                  (+ wake pipe)   ^                                      |
         |                                  |  (sizes from measured durations)     |
    future / iterator <-- job.deliver <-- on_result <--- selector: result pipes <--+
                                           on_exit  <--- selector: sentinels  <--- (death)

The master thread runs an event loop (``_loop.py``): it waits once, on a
selector over the wake pipe, every worker's result pipe and every worker's
sentinel (process kinds), and runs callbacks; between waits it dispatches work
and advances shutdown.  Other threads never change its state; they post
callables with :meth:`Master.call_soon_threadsafe`.

The invariants it keeps are listed, each with the test that checks it, in
docs/design.md ("Invariants of the master loop").
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import signal
import threading
import time

from ._backend import Chunk, WorkerBackend, WorkerEvents, WorkerHandle
from ._crash import crash_error, is_cancel, over_memory, timeout_error
from ._exceptions import TaskCancelled, WorkcrewError, broken_pool
from ._execute import Outcome, function_name
from ._jobs import Job, StreamJob
from ._loop import EventLoop
from ._options import PoolOptions
from ._recorder import Recorder, open_live
from ._retry import Attempts
from ._scheduler import Scheduler
from ._slots import InFlight, Slot
from ._startup import StartupWatch

TYPE_CHECKING = False  # no typing at run time (see _backend.Chunk)
if TYPE_CHECKING:
    from typing import Any

__all__ = ("Master", "State")

_log = logging.getLogger("workcrew")

#: After ``terminate()``, seconds a process worker has to exit after SIGTERM
#: before it gets SIGKILL.
KILL_GRACE = 0.5
#: While feeding many idle workers in one pass, the master yields the GIL this
#: often: otherwise thread workers given a chunk cannot start until the whole
#: pass is done (about 3 ms for 200 workers).
YIELD_EVERY = 16


class State(enum.Enum):
    """Life of a pool; it only moves down this list."""

    RUNNING = 1  # accepts jobs
    CLOSING = 2  # finishes queued jobs, accepts none
    STOPPING = 3  # no work left: workers are asked to exit
    TERMINATING = 4  # everything pending was failed; workers are killed
    STOPPED = 5  # no worker left; the master thread has ended


class Master(WorkerEvents):
    """The event loop and bookkeeping of one pool (see the module docstring)."""

    def __init__(self, options: PoolOptions, backend_class: type[WorkerBackend]) -> None:
        self.options = options
        self.state = State.RUNNING
        self.broken: BaseException | None = None
        self.loop = EventLoop()
        #: run ``callback`` on the master thread soon (the one method for other threads)
        self.call_soon_threadsafe = self.loop.call_soon_threadsafe
        #: run ``callback`` on the master thread after ``delay`` seconds (master thread)
        self.call_later = self.loop.call_later
        self._scheduler = Scheduler(options.workers, options.concurrency_per_worker)
        self._slots: dict[int, Slot] = {}
        self._worker_ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._startup = StartupWatch(options.start_method)
        self._rescan = True  # look at every worker on the next dispatch
        self._touched: dict[int, Slot] = {}  # workers whose load changed since
        self._retiring: set[int] = set()  # ids of slots asked to exit
        self._attempts = Attempts()
        self.recorder = Recorder(options.kind)
        #: what a dashboard reads beyond the statistics (only with ``dashboard=True``)
        self.live = open_live(options.dashboard, self.recorder.origin)
        try:
            self.backend = backend_class(options, self.loop)
        except BaseException:  # e.g. an unreachable cluster: the pool never existed
            self.loop.close()
            raise
        self.thread = threading.Thread(target=self._run, name="workcrew-master", daemon=True)
        # Workers start on demand (see _dispatch); under fork the engine forks
        # them from the submitting thread and hands them over (see adopt), and
        # the master only replaces those that end.
        self._adopted = 0
        #: The most live workers the pool has had at once.  Below it, a worker
        #: was lost (crashed, recycled, timed out): its replacement starts at
        #: once, as multiprocessing's does; above it, only when work waits.
        self._grown = 0
        self.thread.start()

    # -- the loop --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self.state is not State.STOPPED:
                self.loop.run_once()
                self._dispatch()
                self._advance_shutdown()
        except BaseException as exc:  # noqa: BLE001 - a bug here must not leave callers hanging
            self._internal_error(exc)
        finally:
            self._close_loop()

    # -- jobs (posted by the engine) -------------------------------------------------

    def add_job(self, job: Job) -> None:
        """Master thread: queue a job, or fail it if the pool no longer runs."""
        if self.state in (State.RUNNING, State.CLOSING):
            self._scheduler.add(job)
            self._rescan = True
        else:
            job.abort(self._refusal())

    def _refusal(self) -> BaseException:
        if self.broken is not None:
            return self.broken
        return TaskCancelled("the pool was terminated before this task could run")

    def _dispatch(self) -> None:
        if self.state not in (State.RUNNING, State.CLOSING) or self._scheduler.idle():
            self._touched.clear()
            return
        # Only workers whose load changed are looked at, unless new work came
        # (then all are): a pool of hundreds of threads must not pay a scan of
        # every worker per finished task.
        if self._rescan:
            candidates = list(self._slots.values())
        else:
            candidates = [s for s in self._touched.values() if s.handle.worker_id in self._slots]
        self._rescan = False
        self._touched.clear()
        # Idle workers first, so work spreads before anything is queued behind
        # a busy worker; then one prefetched chunk per busy worker, if allowed.
        for n, slot in enumerate(candidates, 1):
            if not slot.inflight and not slot.retiring and not self._send_next(slot, False):
                return
            if n % YIELD_EVERY == 0:
                time.sleep(0)  # let the workers fed so far start (thread kinds need the GIL)
        # Workers start on demand: one more whenever work is left and all are busy.
        target = self._adopted if self.backend.start_eagerly else self._target()
        while (live := len(self._slots) - len(self._retiring)) < target:
            if live >= self._grown and self._scheduler.idle():
                break  # nothing waits: a new worker would only boot and idle (see _grown)
            new = self._start_worker()
            if new is None or not self._send_next(new, prefetch=False):
                return
        for slot in candidates:
            if (
                len(slot.inflight) == 1
                and not slot.retiring
                and slot.inflight[0].job.policy.timeout is None
                and not self._send_next(slot, prefetch=True)
            ):
                return

    def _target(self) -> int:
        """Workers to keep: the configured count, or a cluster's (its kind follows it).

        When a cluster shrinks, idle surplus workers retire; the scheduler
        learns the new size and the kind's cost per chunk.
        """
        target = self.backend.worker_target(self.options.workers)
        surplus = len(self._slots) - len(self._retiring) - target
        if surplus > 0:  # rare (a cluster lost workers): only then scan the workers
            idle = [s for s in self._slots.values() if not s.inflight and not s.retiring]
            for slot in idle[:surplus]:
                self._retire(slot)
        backend = self.backend
        self._scheduler.set_costs(target, backend.chunk_overhead(), backend.parallelism(target))
        return target

    def start_all(self) -> None:
        """Master thread: start every worker now, not on demand (see Engine.start_all)."""
        while self.state is State.RUNNING and len(self._slots) < self.options.workers:
            if self._start_worker() is None:
                return

    def next_worker_id(self) -> int:
        """A fresh worker id (any thread: itertools.count is atomic under the GIL)."""
        return next(self._worker_ids)

    def adopt(self, handle: WorkerHandle) -> None:
        """Master thread: take over a worker the engine started (``prepare_worker``)."""
        handle.attach()
        slot = self._slots[handle.worker_id] = Slot(handle, self.options.max_tasks_per_worker)
        self.recorder.started(handle.worker_id, getattr(handle, "pid", None))
        if self.state in (State.RUNNING, State.CLOSING):
            self._adopted += 1
            self._grown = max(self._grown, len(self._slots) - len(self._retiring))
            self._touch(slot)
            return
        self._mark_retiring(slot)  # the pool stopped meanwhile: let it go at once
        handle.request_stop()
        if self.state is State.TERMINATING:
            self._terminate_process(handle)

    def _requeue(self, job: Job, start: int, items: list[Any]) -> None:
        self._scheduler.requeue(job, start, items)
        self._rescan = True

    def _mark_retiring(self, slot: Slot) -> None:
        slot.retiring = True
        self._retiring.add(slot.handle.worker_id)

    def _touch(self, slot: Slot) -> None:
        """``slot`` may take work again (a chunk finished, it became ready)."""
        self._touched[slot.handle.worker_id] = slot

    def wake(self) -> None:
        """Master thread: new input may be available; look at every worker."""
        self._rescan = True

    def _send_next(self, slot: Slot, prefetch: bool) -> bool:
        allowance = slot.allowance
        if (allowance is not None and allowance <= 0) or slot.handle.exited:
            return True  # this worker is full (or gone, exit not yet reported); others may not be
        behind = slot.inflight[0].job if prefetch and slot.inflight else None
        chunk = self._scheduler.next_chunk(allowance, prefetch, slot.ready, behind)
        if chunk is None:
            return False
        job, start, items = chunk
        seq = next(self._seq)
        sent = slot.handle.send_chunk(seq, Chunk(job.fn, job.mode, items))
        self._scheduler.record_size(job.key, len(items), sent.nbytes)
        self.recorder.sent(slot.handle.worker_id, len(items))
        if isinstance(job, StreamJob):
            self.recorder.submit(len(items))  # lazy input: counted as it goes out
        errors = sent.failed or None
        if errors and len(errors) == len(items):
            # Nothing was sent: settled like any failure (earlier attempts kept).
            self._settle(job, start, items, [None] * len(items), errors)
            return True
        slot.inflight.append(InFlight(seq, job, start, items, errors))
        if self.live is not None:
            self.live.sent(slot.handle.worker_id, seq, job.fn, job.mode, items)
        timeout = job.policy.timeout
        if timeout is not None:
            worker_id = slot.handle.worker_id
            self.call_later(timeout, lambda: self._expire(worker_id, seq))
        return True

    def _expire(self, worker_id: int, seq: int) -> None:
        """A timed chunk's deadline passed: if it still runs, stop it (see TaskTimeout)."""
        slot = self._slots.get(worker_id)
        if slot is None or not slot.inflight or slot.inflight[0].seq != seq:
            return  # finished in time (or its worker is gone already)
        if slot.handle.answers_in_transit():
            return  # answered in time: its result is being unpickled (answers come in order)
        slot.expired = seq
        if slot.handle.cancel_current():
            return  # the coroutine is cancelled; on_result turns that into TaskTimeout
        slot.killed_for = seq
        self._mark_retiring(slot)
        if self.backend.can_kill:
            self._terminate_process(slot.handle)  # on_exit reports the timeout
            return
        # A thread cannot be stopped: fail the task now, retire the thread (it
        # exits when the call returns; its late result is dropped) and let
        # _dispatch start a replacement.
        del self._slots[worker_id]
        self._retiring.discard(worker_id)
        slot.handle.request_stop()
        running = slot.inflight.popleft()
        for chunk in slot.inflight:  # never started: back to the queue, in order
            self._requeue(chunk.job, chunk.start, chunk.items)
        slot.inflight.clear()
        error = timeout_error(slot, running, self.backend.can_kill)
        self.recorder.exited(worker_id, "killed")  # its thread's later exit is not reported
        if self.live is not None:
            self.live.failed(worker_id, running.seq, {0: error}, gone=True)
        self._settle(running.job, running.start, running.items, [None], {0: error})

    def cancel_running(self, job: Job) -> None:
        """Master thread: kill the worker running ``job`` (its future was cancelled)."""
        for slot in self._slots.values():
            if slot.inflight and slot.inflight[0].job is job and self.backend.can_kill:
                slot.killed_for = slot.inflight[0].seq
                self._mark_retiring(slot)
                self._terminate_process(slot.handle)

    def _check_memory(self, slot: Slot, chunk: InFlight) -> None:
        limit = self.options.max_memory_per_worker
        if limit is None or slot.retiring:
            return
        rss = slot.handle.memory()
        if rss is not None and rss > limit:
            _log.warning("%s", over_memory(slot, chunk, rss, limit))
            self._retire(slot)

    # -- WorkerEvents: what backends report --------------------------------------------

    def on_ready(self, handle: WorkerHandle) -> None:
        slot = self._slots.get(handle.worker_id)
        if slot is not None:
            slot.ready = True
            self._startup.ready()
            if self.live is not None:
                self.live.ready(handle.worker_id)
            self._touch(slot)  # it may now take timed tasks

    def on_result(self, handle: WorkerHandle, seq: int, duration: float, outcome: Outcome) -> None:
        slot = self._slots.get(handle.worker_id)
        if slot is None or not slot.inflight or slot.inflight[0].seq != seq:
            return  # a retired thread whose task ran past its timeout: already failed
        chunk = slot.inflight.popleft()
        self._touch(slot)
        values, failures = outcome.values, outcome.failures
        errors = {i: f.exc for i, f in failures.items()} if failures else None
        self._record(slot, chunk, outcome, len(errors) if errors else 0, duration)
        if errors and slot.expired == chunk.seq:  # cancelled for its timeout (async kinds)
            timeout = timeout_error(slot, chunk, self.backend.can_kill)
            errors = {i: timeout if is_cancel(e) else e for i, e in errors.items()}
        if chunk.unsent:
            errors = {**(errors or {}), **chunk.unsent}
        if self.live is not None:
            self.live.answered(handle.worker_id, seq, duration, outcome.spans, errors)
        # Counted before delivery: from then on the reader owns (and empties) the list.
        count = len(values)
        self._settle(chunk.job, chunk.start, chunk.items, values, errors)
        self._scheduler.record(chunk.job.key, count, duration)
        if slot.quota is not None:
            slot.quota -= count
            if slot.quota <= 0 and not slot.inflight:
                self._retire(slot)
        self._check_memory(slot, chunk)

    def _record(
        self, slot: Slot, chunk: InFlight, outcome: Outcome, failed: int, duration: float
    ) -> None:
        handle, recorder = slot.handle, self.recorder
        memory = handle.memory if self.backend.can_kill else None  # process workers only
        recorder.finished(handle.worker_id, len(chunk.items), failed, duration, memory)
        if outcome.spans is not None:  # timed items: the pool records a timeline
            recorder.record_spans(
                handle.worker_id, function_name(chunk.job.fn), outcome.spans, outcome.failures or {}
            )

    def _settle(
        self,
        job: Job,
        start: int,
        items: list[Any],
        values: list[Any],
        errors: dict[int, BaseException] | None,
    ) -> None:
        """Deliver a run of outcomes, holding back failed items that will be retried."""
        if job.done():
            return  # aborted or cancelled meanwhile: drop the outcome
        retrying: set[int] = set()
        for i, exc in (errors or {}).items():
            delay = self._attempts.retry_delay(job, start + i, exc)
            if delay is None:
                self._attempts.finish(job, start + i, exc)
            else:
                retrying.add(i)
                self._retry_later(job, start + i, items[i], delay)
        if not retrying:
            if len(values) == 1 and not errors:
                self._attempts.finish(job, start, None)  # a retried item that succeeded
            job.deliver(start, values, errors)
            return
        # Deliver the runs between the retried items (the StreamJob tiling
        # invariant: each retried item is delivered later as its own run).
        run_start = 0
        for i in [*sorted(retrying), len(values)]:
            if i > run_start:
                run_errors = {
                    k - run_start: e for k, e in (errors or {}).items() if run_start <= k < i
                }
                job.deliver(start + run_start, values[run_start:i], run_errors or None)
            run_start = i + 1

    def _retry_later(self, job: Job, index: int, item: Any, delay: float) -> None:
        self._attempts.wait(job)

        def again() -> None:
            self._attempts.release(job)
            if not job.done() and self.state in (State.RUNNING, State.CLOSING):
                self._requeue(job, index, [item])

        self.call_later(delay, again)

    def on_chunk_error(
        self, handle: WorkerHandle, seq: int, error: WorkcrewError, *, ran: bool
    ) -> None:
        slot = self._slots.get(handle.worker_id)
        if slot is None or not slot.inflight or seq not in (-1, slot.inflight[0].seq):
            return  # nothing in flight there, or not its oldest chunk: already settled
        chunk = slot.inflight.popleft()
        self._touch(slot)
        if ran or len(chunk.items) == 1:
            errors: dict[int, BaseException] = dict.fromkeys(range(len(chunk.items)), error)
            if self.live is not None:
                self.live.failed(handle.worker_id, chunk.seq, errors)
            self._settle(chunk.job, chunk.start, chunk.items, [None] * len(chunk.items), errors)
            return
        # Nothing ran: retry each item alone, so only the culprit fails.
        if self.live is not None:
            self.live.failed(handle.worker_id, chunk.seq, {})
        for i, item in enumerate(chunk.items):
            self._requeue(chunk.job, chunk.start + i, [item])

    def on_init_failed(self, handle: WorkerHandle, error: BaseException) -> None:
        self._break(error)

    def on_exit(self, handle: WorkerHandle, exitcode: int | None) -> None:
        slot = self._slots.pop(handle.worker_id, None)
        self._retiring.discard(handle.worker_id)
        if slot is None:
            return
        self.recorder.exited(handle.worker_id, self._exit_kind(slot, exitcode))
        if slot.inflight:
            self._salvage(slot, exitcode)
        if self.live is not None:
            self.live.gone(handle.worker_id)
        # Workers that keep dying before they are ready cannot start (a bad
        # main module, a crashing initializer, a broken environment): break
        # the pool instead of respawning forever.  An error exit status says
        # so at once; deaths by a signal may be bad luck (someone killing
        # workers), so they need a longer run to count.
        accepting_work = self.state in (State.RUNNING, State.CLOSING)
        if not slot.ready and not slot.retiring and accepting_work:
            error = self._startup.died_starting(exitcode)
            if error is not None:
                self._break(error)
        # No replacement here: _dispatch starts a worker when work needs one.

    def _exit_kind(self, slot: Slot, exitcode: int | None) -> str:
        if slot.killed_for or slot.expired or self.state is State.TERMINATING:
            return "killed"
        if slot.retiring or not exitcode:
            return "stopped"
        return "crashed"

    def _salvage(self, slot: Slot, exitcode: int | None) -> None:
        """A worker died holding chunks: blame only the one it was running."""
        running = slot.inflight.popleft()
        for chunk in slot.inflight:  # never started: back to the queue, in order
            self._requeue(chunk.job, chunk.start, chunk.items)
        slot.inflight.clear()
        if self.state is State.TERMINATING or running.job.done():
            return
        if slot.killed_for and running.seq != slot.killed_for:
            # We killed it for a task (timeout, cancel) that finished just in
            # time; the chunk it had started since is innocent: run it again.
            self._requeue(running.job, running.start, running.items)
            return
        if not slot.ready:  # died during start-up: the chunk never ran
            self._requeue(running.job, running.start, running.items)
            return
        if len(running.items) > 1:
            # Which item killed it is unknown: run each alone, so only the
            # culprit fails (the others may run twice).
            for i, item in enumerate(running.items):
                self._requeue(running.job, running.start + i, [item])
            return
        if slot.expired == running.seq:
            error: BaseException = timeout_error(slot, running, self.backend.can_kill)
        else:
            error = crash_error(slot, exitcode, running, self._startup.oom_kills_at_start)
        self.recorder.finished(slot.handle.worker_id, 1, 1, 0.0)  # it ran, and failed
        if self.live is not None:
            self.live.failed(slot.handle.worker_id, running.seq, {0: error})
        self._settle(running.job, running.start, running.items, [None], {0: error})

    # -- workers ---------------------------------------------------------------------------

    def _start_worker(self) -> Slot | None:
        """A new worker, or None if none can start (the pool is then broken)."""
        worker_id = self.next_worker_id()
        try:
            handle = self.backend.start_worker(worker_id, self)
        except Exception as exc:  # noqa: BLE001 - out of processes, descriptors or memory
            error = broken_pool(
                f"cannot start worker {worker_id}: {type(exc).__name__}: {exc}. The machine "
                "may be out of processes, file descriptors or memory."
            )
            error.__cause__ = exc
            self._break(error)
            return None
        slot = self._slots[worker_id] = Slot(handle, self.options.max_tasks_per_worker)
        self.recorder.started(worker_id, getattr(handle, "pid", None))
        self._grown = max(self._grown, len(self._slots) - len(self._retiring))
        return slot

    def _retire(self, slot: Slot) -> None:
        """Recycle a worker that reached its task quota (its replacement starts on exit)."""
        self._mark_retiring(slot)
        slot.handle.request_stop()

    # -- shutdown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Master thread: accept no more jobs; stop once every queued job is done."""
        if self.state is State.RUNNING:
            self.state = State.CLOSING
            for job in self._scheduler.jobs:
                job.seal()  # lazy input still unread will never be read: don't wait for it

    def cancel_pending(self) -> None:
        """Master thread: drop every job's unstarted items; running chunks finish.

        Work that idle workers can take now is handed out first: it was
        submitted before the shutdown, and concurrent.futures runs what its
        workers had picked up (here the jobs and this call may arrive in one
        batch, before any dispatch).
        """
        self._dispatch()
        cancelled = TaskCancelled("cancelled by shutdown(cancel_futures=True) before it started")
        for job in self._scheduler.jobs:
            job.cancel_pending(cancelled)
        for job in [*self._scheduler.clear_requeued(), *self._attempts.waiting]:
            job.abort(cancelled)  # taken once already: only failing them settles them
            self._attempts.forget(job)

    def terminate(self) -> None:
        """Master thread: fail everything pending and stop every worker now."""
        if self.state in (State.TERMINATING, State.STOPPED):
            return
        self.state = State.TERMINATING
        self._abort_all(self._refusal())
        for slot in self._slots.values():
            self._mark_retiring(slot)
            slot.handle.request_stop()
            if self.backend.can_kill:
                self._terminate_process(slot.handle)

    def _terminate_process(self, handle: WorkerHandle) -> None:
        pid = handle.pid
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            self.call_later(KILL_GRACE, handle.kill)

    def _break(self, error: BaseException) -> None:
        if self.broken is None:
            self.broken = error
        self.terminate()

    def _abort_all(self, exc: BaseException) -> None:
        jobs = {id(job): job for job in self._scheduler.jobs}
        jobs.update((id(job), job) for job in self._attempts.waiting)
        for slot in self._slots.values():
            jobs.update((id(c.job), c.job) for c in slot.inflight)
        for job in jobs.values():
            job.abort(exc)
            self._attempts.forget(job)

    def _advance_shutdown(self) -> None:
        if self.state is State.CLOSING and self._scheduler.idle() and not self._attempts.pending:
            # Nothing is left to hand out: idle workers go now (as multiprocessing's
            # take their sentinel), the others once they answer.  A retry after a
            # crash would start a worker again (_dispatch runs while closing).
            for slot in self._slots.values():
                if not slot.inflight and not slot.retiring:
                    self._mark_retiring(slot)
                    slot.handle.request_stop()
            if not any(s.inflight for s in self._slots.values()):
                self.state = State.STOPPING
        if self.state in (State.STOPPING, State.TERMINATING) and not self._slots:
            self.state = State.STOPPED

    def _internal_error(self, exc: BaseException) -> None:
        error = broken_pool(f"workcrew's master loop failed: {exc!r} (please report this bug)")
        error.__cause__ = exc
        self.broken = error
        self.state = State.TERMINATING
        self._abort_all(error)
        for slot in self._slots.values():
            slot.handle.kill()
            slot.handle.join(KILL_GRACE)

    def _close_loop(self) -> None:
        self.state = State.STOPPED
        self.backend.close()
        self.loop.close()
