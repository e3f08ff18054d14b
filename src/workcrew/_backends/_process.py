"""Process workers: one OS process per worker, with pipes of its own.

Each worker has its own task pipe and result pipe, so the master always knows
exactly which chunks a worker holds; a dead worker's chunks are never confused
with another's.  Both are widened (``_process_start.pipe_capacity``) so that a
chunk or a result of a few hundred kilobytes passes in one piece.  The master
end of the task pipe is non-blocking (a full pipe never stalls the master);
the worker writes results blocking, and the master reads them whenever they
are readable, so neither side can wait on the other in a cycle.  A worker's
exit is seen through its process sentinel, after the results it wrote before
dying have been read.  What it prints and logs reaches the caller's
``sys.stdout``, ``sys.stderr`` and logging (``_output``).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
from collections.abc import Callable
from functools import partial

from .._core._backend import Chunk, Loop, Sent, WorkerBackend, WorkerEvents, WorkerHandle
from .._core._exceptions import RemoteTraceback, TaskFailed, WorkcrewError, serialization_error
from .._core._execute import Failure, Outcome, function_name
from .._core._fds import (
    Inherited,
    master_fds,
    pipe,
    register_master_fd,
    unregister_master_fd,
)
from .._core._function_cache import FunctionCache
from .._core._options import PoolOptions
from .._core._pickling import ForChild, dumps_function
from .._core._system import available_cpu_count, resident_bytes
from .._sharing._buffers import Exporter, dumps_oob, map_buffers
from . import _wire
from ._decoding import (
    INLINE_LIMIT,
    Decoders,
    Delivery,
    InOrder,
    NeedsDecoder,
    loads_plain,
    needs_decoder,
)
from ._output import LineForwarder, caller_log_levels, emit_record, line_prefix, load_record
from ._process_start import (
    discard_pipes,
    reap_unstarted,
    start_tracker_without_stdout,
    task_and_result_pipes,
)
from ._process_worker import EncodedFailure, RunSettings, worker_main
from ._unpicklable import argument_error

TYPE_CHECKING = False  # no typing at run time (see _backend.Chunk)
if TYPE_CHECKING:
    from typing import Any

__all__ = ("ProcessBackend", "backend_class")

#: Functions kept pickled (by identity, never keeping them alive) per pool.
FUNCTION_CACHE_SIZE = 256
#: Lines of a worker's stderr kept for its crash report (a fatal-signal stack
#: dump can be long; the report shows its top, where the task's frames are).
STDERR_TAIL_LINES = 200
#: Seconds to learn an exited worker's exit code from its parent.
EXIT_STATUS_TIMEOUT = 5.0
#: A worker's function table is reset once it holds this many functions.
WORKER_FUNCTION_LIMIT = 512


class ProcessBackend(WorkerBackend):
    """Starts worker processes with the pool's start method."""

    can_kill = True

    def __init__(self, options: PoolOptions, loop: Loop) -> None:
        super().__init__(options, loop)
        # forkserver: workcrew's own server (see _forkserver); fork, spawn: multiprocessing's
        self.context: Any
        if options.start_method == "forkserver":
            from ._forkserver import ServerContext  # loaded only by pools that use it

            self.context = ServerContext()
        else:
            self.context = multiprocessing.get_context(options.start_method)
        if options.start_method == "spawn":
            start_tracker_without_stdout()
        self.start_eagerly = options.start_method == "fork"
        #: BLAS/OpenMP threads per worker: the CPUs shared out among the workers.
        self.native_threads = max(1, available_cpu_count() // options.workers)
        #: Resize BLAS libraries already loaded when a worker starts (spawn and
        #: forkserver workers whose main module imported NumPy).  Not under
        #: fork: it costs ~5 ms per worker, and forked workers inherit the
        #: caller's settings (docs/worker-kinds.md says how to limit them).
        self.resize_loaded = not self.start_eagerly
        self.threads_spec = (self.native_threads, self.resize_loaded)
        #: the initializer and initargs, pickled for each worker as it starts, the way
        #: multiprocessing pickles a Process's arguments (PoolOptions checked they can be)
        self.init_hooks = (
            None
            if options.initializer is None
            else ForChild((options.initializer, options.initargs))
        )
        self._functions: FunctionCache[tuple[int, bytes | BaseException]] = FunctionCache(
            FUNCTION_CACHE_SIZE
        )
        self._next_key = 0
        #: large argument buffers go to workers through shared segments, reused
        self.exporter = Exporter(reuse=True)
        #: threads that unpickle results which may be slow (see _decoding.py)
        self.decoders = Decoders()

    def close(self) -> None:
        self.exporter.close()
        self.decoders.close()

    def start_worker(self, worker_id: int, events: WorkerEvents) -> WorkerHandle:
        handle = ProcessHandle(self, worker_id, events)
        handle.attach()
        return handle

    def prepare_worker(self, worker_id: int, events: WorkerEvents) -> WorkerHandle:
        return ProcessHandle(self, worker_id, events)

    def function_blob(self, fn: Callable[..., Any]) -> tuple[int, bytes | BaseException]:
        """The cache key and pickle of ``fn`` (or the error pickling it)."""
        return self._functions.get(fn, self._pickle_function)

    def _pickle_function(self, fn: Callable[..., Any]) -> tuple[int, bytes | BaseException]:
        blob: bytes | BaseException
        try:
            blob = dumps_function(fn)
        except BaseException as exc:  # noqa: BLE001 - reported for every item of this function
            blob = serialization_error(
                f"cannot send function {function_name(fn)} to a process worker: "
                f"{type(exc).__name__}: {exc}. Functions that hold locks, sockets, open files "
                "or similar state cannot be pickled: build that state inside the task (or in "
                "an initializer), or use kind='thread'.",
                cause=exc,
            )
        self._next_key += 1
        return self._next_key, blob


class ProcessHandle(WorkerHandle):
    """One worker process and the master's ends of its five pipes.

    task (master writes chunks), result (worker writes outcomes and log
    records), stdout and stderr (the worker's fd 1 and 2: written line by line
    to the caller's ``sys.stdout`` and ``sys.stderr``, stderr's last lines kept
    for crash reports) and lifeline (never written: its end of file tells the
    worker we are gone).
    """

    def __init__(self, backend: ProcessBackend, worker_id: int, events: WorkerEvents) -> None:
        self.worker_id = worker_id
        self._backend = backend
        self._events = events
        self._loop = backend.loop
        self._known: set[int] = set()  # function keys this worker has been sent
        self._lent: set[int] = set()  # buffer segments this worker may still map
        self._incoming = InOrder(self._loop, backend.decoders)  # frames, in order
        self.exited = False
        self.exitcode: int | None = None
        task_r, task_w, result_r, result_w = task_and_result_pipes(backend.options.workers)
        stdout_r, stdout_w = pipe()
        stderr_r, stderr_w = pipe()
        lifeline_r, lifeline_w = pipe()
        prefix = line_prefix(worker_id, backend.options.worker_output)
        self._stdout = LineForwarder(stdout_r.fileno(), "stdout", prefix)
        self._stderr = LineForwarder(stderr_r.fileno(), "stderr", prefix, STDERR_TAIL_LINES)
        self._conns = (task_w, result_r, stdout_r, stderr_r, lifeline_w)
        for conn in self._conns:
            register_master_fd(conn.fileno())
        child_ends = (task_r, result_w, stdout_w, stderr_w, lifeline_r)
        self.process = self._new_process(child_ends)
        self._stillborn = False
        try:
            self.process.start()
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The child died before it read its start-up data (killed from
            # outside at birth): a worker that exited before it was ready.
            self.pid, self.exitcode = reap_unstarted(exc)
            self._stillborn = True
        except BaseException:  # never started (too many descriptors, out of processes)
            discard_pipes((*self._conns, *child_ends))  # none may outlive the error
            raise
        else:
            self.pid = self.process.pid
        for conn in child_ends:
            conn.close()  # the child's ends: only the child may hold them
        self._writer = _wire.FrameWriter(task_w.fileno())
        self._reader = _wire.FrameReader(result_r.fileno())
        self._pidfd: int | None = None
        if self._stillborn:
            self._close()
            return
        for conn in (task_w, result_r, stdout_r, stderr_r):
            os.set_blocking(conn.fileno(), False)
        self._sentinel = self._exit_sentinel()

    def _new_process(self, child_ends: tuple[Any, ...]) -> Any:
        """The worker's (unstarted) Process, given its ends of the five pipes."""
        backend = self._backend
        options = backend.options
        # Only a forked child shares our descriptor numbers; under spawn and
        # forkserver the same numbers name other files in the child.
        inherited: list[Inherited] = master_fds() if options.start_method == "fork" else []
        settings = RunSettings(options.concurrency_per_worker, options.event_loop, options.timeline)
        return backend.context.Process(
            target=worker_main,
            args=(
                self.worker_id,
                child_ends,
                backend.init_hooks,
                inherited,
                backend.threads_spec,
                settings,
                caller_log_levels(),
            ),
            name=f"workcrew-worker-{self.worker_id}",
            daemon=False,  # workers may start pools of their own
        )

    def _exit_sentinel(self) -> int:
        """A descriptor that becomes readable when the worker process exits.

        multiprocessing's sentinel under fork and spawn is a pipe the worker
        holds open until it exits, and a grandchild that a task forks inherits
        it: the pipe would stay open after the worker died, and crash reports,
        timeouts, terminate() and join() would wait for the grandchild.  The
        fork server's sentinel is its status socket for the worker, which
        reports the exit only while the server lives.  A pidfd (Linux 5.3+)
        is readable when the worker itself exits, whoever its parent is, and
        the server's death does not fire it.  (A forkserver worker is not our
        child: killed and reaped by the server before we open its pidfd, it
        makes ``pidfd_open`` fail and the status socket serves; its pid
        cannot have been reused in that instant unless the pid space wrapped.)
        """
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is None or self.pid is None:
            return int(self.process.sentinel)
        try:
            self._pidfd = pidfd_open(self.pid)
        except OSError:  # an older kernel, or the worker is already gone: the sentinel
            return int(self.process.sentinel)
        register_master_fd(self._pidfd)
        return self._pidfd

    def attach(self) -> None:
        """Start watching the worker's pipes and sentinel (master thread)."""
        if self._stillborn:  # reported once the master holds this handle
            self._loop.call_soon_threadsafe(partial(self._events.on_exit, self, self.exitcode))
            return
        self._loop.add_reader(self._reader.fd, self._on_readable)
        self._loop.add_reader(self._sentinel, self._on_sentinel)
        self._loop.add_reader(self._stdout.fd, self._on_stdout)
        self._loop.add_reader(self._stderr.fd, self._on_stderr)

    # -- sending -------------------------------------------------------------------

    def send_chunk(self, seq: int, chunk: Chunk) -> Sent:
        key, blob = self._backend.function_blob(chunk.fn)
        if isinstance(blob, BaseException):  # the function does not pickle: nothing to send
            return Sent(dict.fromkeys(range(len(chunk.items)), blob))
        reset = len(self._known) > WORKER_FUNCTION_LIMIT
        if reset:
            self._known.clear()
        new_functions = [] if key in self._known else [(key, blob)]
        failed: dict[int, BaseException] = {}
        wire = (key, chunk.mode, chunk.items, chunk.skip)
        try:
            body, buffers = dumps_oob((reset, new_functions, wire))
        except BaseException:  # noqa: BLE001 - some argument does not pickle: find it, send the rest
            wire = self._strip_unpicklable(chunk, wire, failed)
            body, buffers = dumps_oob((reset, new_functions, wire))
        if len(failed) == len(chunk.items):
            return Sent(failed)  # nothing left to run; the master fails every item
        try:
            refs = self._backend.exporter.export(buffers) if buffers else []
        except OSError as exc:  # out of memory or descriptors: fail this chunk, not the pool
            error = serialization_error(
                f"cannot send the arguments' large buffers to worker {self.worker_id} through "
                f"shared memory: {exc}. Free memory, or send smaller pieces.",
                cause=exc,
            )
            return Sent(dict.fromkeys(range(len(chunk.items)), error))
        self._known.update(key for key, _ in new_functions)
        self._lent.update(ref.id for ref in refs)
        sidecar = _wire.pack_sidecar([], refs)
        self._write(_wire.CHUNK, _wire.SEQ.pack(seq) + sidecar + body)
        # a shared array's bytes are not sent (only its reference): they do not fill a chunk
        return Sent(failed, len(body) + sum(ref.nbytes for ref in refs if not ref.shared))

    def _strip_unpicklable(
        self, chunk: Chunk, wire: tuple[Any, ...], failed: dict[int, BaseException]
    ) -> tuple[Any, ...]:
        key, mode, items, skip = wire
        bad = set(skip or ())
        items = list(items)
        for i, item in enumerate(items):
            if i in bad:
                continue
            error = argument_error(chunk.fn, mode, item)
            if error is not None:
                failed[i] = error
                items[i] = None
                bad.add(i)
        return key, mode, items, frozenset(bad) or None

    def _write(self, tag: int, payload: bytes) -> None:
        if self.exited:
            return
        try:
            self._writer.send(tag, payload)
        except (BrokenPipeError, ConnectionResetError):
            return  # the worker died; its sentinel reports it and its chunks are handled then
        if self._writer.pending:
            self._loop.add_writer(self._writer.fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            self._writer.flush()
        except (BrokenPipeError, ConnectionResetError):
            self._writer = _wire.FrameWriter(self._writer.fd)  # drop what cannot arrive
        if not self._writer.pending:
            self._loop.remove_writer(self._writer.fd)

    def request_stop(self) -> None:
        self._write(_wire.STOP, b"")

    def kill(self) -> None:
        if not self.exited:
            try:
                os.kill(self.pid or 0, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def join(self, timeout: float | None) -> bool:
        if self.exited:
            return True
        self.process.join(timeout)
        return self.process.exitcode is not None

    # -- receiving -----------------------------------------------------------------

    def answers_in_transit(self) -> int:
        return self._incoming.answers

    def _on_readable(self) -> None:
        frames, eof = self._reader.read()
        if frames:
            # Lines a task printed before it answered are in the pipes now:
            # they reach the caller before its result does.
            self._on_stdout()
            self._on_stderr()
        for tag, payload in frames:
            self._take(tag, payload)
        if eof:
            self._loop.remove_reader(self._reader.fd)

    def _on_sentinel(self) -> None:
        # Everything the worker wrote before it exited is in the pipe now:
        # read it first, so results are never mistaken for a crash.
        self._on_readable()
        self._loop.remove_reader(self._sentinel)
        # The worker has exited: its parent reaps it at once (we, or the fork server,
        # which then writes its status; the bound guards against a stopped server,
        # and against multiprocessing's sentinel, which a task can close early).
        # Our own child seen by its pidfd needs none: multiprocessing would only
        # import its connection module (~4 ms) to see the ready sentinel.
        exited = self._pidfd is not None and self._backend.options.start_method != "forkserver"
        self.process.join(None if exited else EXIT_STATUS_TIMEOUT)
        self.exitcode = self.process.exitcode
        self._close()
        # Reported after the results read above, some of which may still be
        # decoding (until then ``exited`` keeps new chunks away from us).
        self._incoming.when_idle(partial(self._events.on_exit, self, self.exitcode))

    def _on_stdout(self) -> None:
        self._output(self._stdout)

    def _on_stderr(self) -> None:
        self._output(self._stderr)

    def _output(self, forwarder: LineForwarder) -> None:
        forwarder.read()
        if forwarder.eof:
            self._loop.remove_reader(forwarder.fd)

    def memory(self) -> int | None:
        if self.pid is None:
            return None
        return resident_bytes(self.pid)

    def last_stderr_lines(self) -> list[str]:
        """The last lines the worker wrote to stderr (for crash reports)."""
        tail = list(self._stderr.tail or ())
        partial = self._stderr.partial()
        return [*tail, partial] if partial else tail

    def _close(self) -> None:
        if self.exited:
            return
        self.exited = True
        # The process is gone and its mappings with it: the segments are free.
        self._backend.exporter.release(list(self._lent))
        self._lent.clear()
        # whatever the worker wrote last, before its pipes go, unfinished lines too
        self._stdout.finish()
        self._stderr.finish()
        for conn in self._conns:
            fd = conn.fileno()
            if self._writer.pending and fd == self._writer.fd:
                self._loop.remove_writer(fd)
            self._loop.remove_reader(fd)
            unregister_master_fd(fd)
            conn.close()
        if self._pidfd is not None:
            unregister_master_fd(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if not self._stillborn:  # a Process whose start failed cannot be closed
            self.process.close()

    def _take(self, tag: int, payload: bytes) -> None:
        """Master thread: one frame, reported in its order, decoded where it fits."""
        incoming = self._incoming
        if tag == _wire.RESULT:
            decode, plain, at = self._open_result(payload)
            large = len(payload) - at > INLINE_LIMIT
            incoming.add(decode, offload=large, answer=True, plain=plain)
        elif tag == _wire.READY:
            incoming.add(self._ready, offload=False)
        elif tag == _wire.LOG:
            incoming.add(partial(self._load_log, payload), offload=needs_decoder(payload, 0))
        elif tag == _wire.LOAD_FAILED:
            incoming.add(
                partial(self._load_failed, payload), offload=needs_decoder(payload, 0), answer=True
            )
        elif tag == _wire.INIT_FAILED:
            incoming.add(partial(self._init_failed, payload), offload=needs_decoder(payload, 0))

    # The decoders below run on the master thread or on a decoder thread: they
    # touch no state of the handle, and return what the master thread does.

    def _ready(self) -> Delivery:
        return partial(self._events.on_ready, self)

    def _load_log(self, payload: bytes) -> Delivery:
        return partial(emit_record, load_record(payload, self.worker_id), self.worker_id, self.pid)

    def _load_failed(self, payload: bytes) -> Delivery:
        seq, message = pickle.loads(payload)  # (int, str), written by our worker code
        return partial(self._chunk_not_loaded, seq, serialization_error(message, loading=True))

    def _chunk_not_loaded(self, seq: int, error: WorkcrewError) -> None:
        # The chunk's new functions were lost with it: send them again.
        self._known.clear()
        self._events.on_chunk_error(self, seq, error, ran=False)

    def _init_failed(self, payload: bytes) -> Delivery:
        failure = self._decode_failure(pickle.loads(payload))
        from .._core._broken import InitializerError  # loaded when it fails (see _broken)

        error = InitializerError(
            f"the pool's initializer raised in worker {self.worker_id} (pid {self.pid}): "
            f"{type(failure.exc).__name__}: {failure.exc}; the pool cannot start workers."
        )
        error.__cause__ = failure.exc
        return partial(self._events.on_init_failed, self, error)

    def _open_result(
        self, payload: bytes
    ) -> tuple[Callable[[], Delivery], Callable[[], Delivery], int]:
        """Master thread, as the frame arrives: free what it releases, map its buffers.

        Mapping needs the worker alive (its segments are reached through its
        descriptors), and the worker runs nothing more until it has our
        RELEASE: so this is done now, however long the unpickling waits.
        Returns the decoder of the rest, its first try on the master thread
        (see ``InOrder.add``), and where its pickle starts.
        """
        (duration,) = _wire.DURATION.unpack_from(payload)
        released, refs, at = _wire.unpack_sidecar(payload, _wire.DURATION.size)
        if released:
            self._backend.exporter.release(released)
            self._lent.difference_update(released)
        buffers = None
        if refs:
            try:
                buffers = map_buffers(refs)
            except Exception as exc:  # noqa: BLE001 - the worker died before we mapped its segments
                lost = partial(self._result_lost, exc)
                return lost, lost, at
            finally:  # mapped (or failed): the worker may close its segments
                self._write(_wire.RELEASE, _wire.SEQ.pack(refs[0].id))
        decode = partial(self._decode_result, payload, at, buffers, duration)
        return decode, partial(decode, plain=True), at

    def _decode_result(
        self,
        payload: bytes,
        at: int,
        buffers: list[Any] | None,
        duration: float,
        plain: bool = False,
    ) -> Delivery:
        """The result's delivery; with ``plain``, NeedsDecoder unless that runs no code."""
        data = memoryview(payload)[at:]
        try:
            if plain:
                seq, (values, failures, spans) = loads_plain(data, buffers)
                if failures:  # exceptions, each in a pickle of its own
                    raise NeedsDecoder("failures")
            else:
                seq, (values, failures, spans) = pickle.loads(data, buffers=buffers)
            if failures:
                failures = {i: self._decode_failure(f) for i, f in failures.items()}
            outcome = Outcome(values, failures, spans)
        # BaseException: unpickling runs code of the task's types (a __reduce__
        # may even call sys.exit); whatever it raises fails this chunk, never
        # the master loop.  A plain try's error is the decoder's to report.
        except BaseException as exc:  # noqa: BLE001 - e.g. a result class the caller cannot import
            if plain:
                raise NeedsDecoder(repr(exc)) from None
            return self._result_lost(exc)
        return partial(self._events.on_result, self, seq, duration, outcome)

    def _result_lost(self, exc: BaseException) -> Delivery:
        error = serialization_error(
            f"the results sent by worker {self.worker_id} could not be unpickled in the "
            f"caller: {type(exc).__name__}: {exc}. Make sure every type a task returns "
            "is importable in the calling process.",
            loading=True,
        )
        return partial(self._events.on_chunk_error, self, -1, error, ran=True)

    def _decode_failure(self, encoded: EncodedFailure) -> Failure:
        blob, type_name, message, tb, call = encoded
        exc: BaseException | None = None
        if blob is not None:
            try:
                exc = pickle.loads(blob)
            except BaseException:  # noqa: BLE001 - checked in the worker, but environments differ
                exc = None
        if exc is None:
            if type_name == "workcrew.SerializationError":
                exc = serialization_error(message)
            else:
                exc = TaskFailed(
                    f"{type_name}: {message} (raised by {call} in worker {self.worker_id}; the "
                    "exception itself could not be pickled, so it is reported as TaskFailed)",
                    type_name=type_name,
                )
        if tb:
            exc.__cause__ = RemoteTraceback(tb)
        return Failure(exc, tb, call)


backend_class = ProcessBackend
