"""workcrew's fork server: the default start method, started fast.

``start_method="forkserver"`` starts workers by asking a server process to
fork them: a fresh interpreter that imported only what workers need, so no
thread, lock or module state of the caller reaches a worker (the safety of
spawn), and a worker starts in a millisecond (the speed of fork).
``multiprocessing``'s own forkserver does the same, but its server imports
``multiprocessing``'s whole connection machinery (~20 ms) and needs the
resource tracker (another interpreter) before its first fork; this one
imports ``multiprocessing`` itself and the worker's code
(``_forkserver_main.PRELOAD``; cloudpickle once the caller uses it), and
needs no tracker: workcrew's shared memory has no names to clean up.

What a worker sees is what a ``multiprocessing`` forkserver child sees: the
server became the caller's twin when it started (``sys.path``, working
directory, ``__main__`` run as ``__mp_main__``, authkey, the modules of
``multiprocessing.set_forkserver_preload``), and each worker runs
``Process._bootstrap`` (``current_process()``, ``parent_process()``,
finalizers).  Like ``multiprocessing``'s, the server keeps the environment
and ``sys.path`` of the moment it started; it starts with the first pool of
a process (one per process: a forked child starts its own) and ends when
the caller does.
"""

from __future__ import annotations

import atexit
import io
import os
import pickle
import select
import signal
import socket
import sys
import threading

# Already loaded with the pool's front end.  ``multiprocessing.spawn`` and
# ``multiprocessing.util`` (which imports ``subprocess``: ~4 ms together) are
# not imported here: they load after the server is launched, while it boots.
from multiprocessing import process
from multiprocessing.context import set_spawning_popen

from .._core._fds import register_master_fd, unregister_master_fd
from ._forkserver_main import IMPORT, LENGTH, MAX_FDS, STATUS, ServerDupFd

TYPE_CHECKING = False  # the fork server's workers import this module: no typing at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = ("ServerContext", "ServerProcess", "StartFailed", "server_pid", "start_server")

#: Seconds to wait for the server to fork a worker and report its pid (the
#: first request also waits for the server to start: an interpreter and its
#: imports, tens of milliseconds; a loaded machine may take seconds).
PID_TIMEOUT = 60.0
#: Seconds to learn how a worker that died before reading its start-up data ended.
REAP_TIMEOUT = 5.0


class StartFailed(BrokenPipeError):
    """A worker died before it read its start-up data (killed at birth).

    ``pid`` and ``exitcode`` say which and how, where they could be learned.
    """

    def __init__(self, message: str, pid: int | None, exitcode: int | None) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode


class _Server:
    """This process's fork server: started on first use, again if it died."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.channel: socket.socket | None = None
        #: the server's pid (None: none was started, or it was found ended and reaped)
        self.server: int | None = None
        #: servers let go of that had not yet exited: reaped on later checks
        self.unreaped: list[int] = []
        #: the server was asked to import cloudpickle
        self.has_cloudpickle = False
        #: _let_go is registered as an exit hook
        self.hooked = False

    def request(self, fds: list[int]) -> None:
        """Ask the server to fork a worker given ``fds`` (status, data, passed)."""
        with self.lock:
            for attempt in (1, 2):
                channel = self.running()
                try:
                    if not self.has_cloudpickle and "cloudpickle" in sys.modules:
                        # This program sends functions by value: workers to come
                        # start with cloudpickle, imported once by the server.
                        channel.send(IMPORT)
                        self.has_cloudpickle = True
                    socket.send_fds(channel, [b"fork"], fds)
                    return
                except OSError:
                    if attempt == 2:
                        raise
                    self._forget()  # the server died (killed?): start a new one, once

    def running(self) -> socket.socket:
        """The channel to a running server, started if need be (hold ``lock``).

        The server is launched before anything else is done: its boot (an
        interpreter, its imports, the caller's main module) is the first
        pool's critical path, and what this thread does next (the set-up, the
        pool's engine) runs meanwhile on another core.
        """
        self.unreaped = [pid for pid in self.unreaped if not _exited(pid)]
        if self.channel is not None and self._alive():
            return self.channel
        self._forget()
        _check_may_start()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.server = _launch(theirs.fileno())
        finally:
            theirs.close()
        self.channel = ours
        if not self.hooked:  # registered now, so that it runs before the hooks of code
            atexit.register(_let_go)  # that ran before the first pool (atexit is LIFO)
            self.hooked = True
        register_master_fd(ours.fileno())  # forked workers must not hold the server's channel
        try:
            ours.send(_setup())
        except BaseException:
            self._forget()  # the server reads end of file where it waits for its set-up
            raise
        return ours

    def _alive(self) -> bool:
        """Whether the server runs (hold ``lock``); one that ended is reaped, once."""
        if self.server is None:
            return False
        if _exited(self.server):
            self.server = None  # waited for: its pid may now be another process's
            return False
        return True

    def _forget(self) -> None:
        if self.channel is not None:
            unregister_master_fd(self.channel.fileno())
            self.channel.close()  # the server ends at end of file
        server = self.server
        if server is not None and self._alive():
            self.unreaped.append(server)
        self.channel = None
        self.server = None
        self.has_cloudpickle = False

    def pid(self) -> int | None:
        """The server's pid, if it runs."""
        with self.lock:
            return self.server if self._alive() else None

    def after_fork_in_child(self) -> None:
        # A forked child must not share its parent's server: it starts its own.
        if self.channel is not None:
            self.channel.close()
        self.lock = threading.Lock()  # another thread may have held the parent's at the fork
        self.channel = None
        self.server = None
        self.unreaped = []  # the parent's children, not this process's
        self.has_cloudpickle = False  # (the exit hook, if any, was inherited: it stays)


_server = _Server()
os.register_at_fork(after_in_child=_server.after_fork_in_child)


def _let_go() -> None:
    """Exit hook: close the channel now, so the server ends while this process does.

    Every pool has shut down by now (their hook is one of threading's, which
    run before atexit's).  Left to the interpreter's teardown, the channel
    would close ~10 ms later, and the server (which shares this process's
    stderr) would end that much after it.
    """
    # Another (daemon) thread may hold the lock in a send to a stopped server:
    # then the interpreter's teardown closes the channel instead.
    if _server.lock.acquire(timeout=1.0):
        try:
            _server._forget()
        finally:
            _server.lock.release()


def start_server() -> None:
    """Start this process's fork server now, if it is not running (returns at once)."""
    with _server.lock:
        _server.running()


def server_pid() -> int | None:
    """The pid of this process's fork server, if one runs (for tests and tools)."""
    return _server.pid()


#: The channel's descriptor in the server (``_launch`` puts it there), or the next one.
SERVER_CHANNEL_FD = 3


def _launch(channel_fd: int) -> int:
    """Start the server, a fresh interpreter with the caller's options; its pid.

    ``os.posix_spawn`` rather than ``subprocess``, whose import (~2.5 ms)
    would delay the start.  The server gets the caller's end of nothing but
    the channel (copied to ``SERVER_CHANNEL_FD`` in the child, or to the
    next number if it is already there: dup2 onto itself would keep
    close-on-exec; the caller's copy stays non-inheritable, so no process
    another thread starts meanwhile can hold it) and stderr: a main module
    that fails in the server is reported there.  stdin and stdout are
    /dev/null: a daemon a task forks inherits the server's descriptors, and
    must not hold the caller's stdout open (``python script.py | cat`` would
    wait).  Descriptors the caller left inheritable reach the interpreter,
    which closes them before anything else (``_forkserver_main.main``), as
    ``subprocess``'s ``close_fds=True`` would have.  No signal is blocked;
    the environment is ``os.environ`` (as each worker's is, see ``_ServerPopen``).
    """
    target = SERVER_CHANNEL_FD if channel_fd != SERVER_CHANNEL_FD else SERVER_CHANNEL_FD + 1
    command: list[str | bytes] = [
        _executable(),
        *_interpreter_args(),
        "-c",
        f"from workcrew._backends._forkserver_main import main; main({target})",
    ]
    # In order: the channel first, where /dev/null cannot replace it (it is 0
    # or 1 if the caller closed those); then stdin and stdout.
    actions = [
        (os.POSIX_SPAWN_DUP2, channel_fd, target),
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    ]
    return os.posix_spawn(command[0], command, os.environ, file_actions=actions, setsigmask=())


def _executable() -> str | bytes:
    """The interpreter workers run: ``multiprocessing.set_executable``'s, if it was called."""
    spawn = sys.modules.get("multiprocessing.spawn")  # set_executable imports it
    executable: str | bytes = spawn.get_executable() if spawn is not None else sys.executable
    return executable


#: ``sys.flags`` whose setting ``subprocess._args_from_interpreter_flags`` turns into
#: options (``dont_write_bytecode``, the common one, is handled here).
_FLAGS = (
    "debug",
    "optimize",
    "no_site",
    "verbose",
    "bytes_warning",
    "quiet",
    "isolated",
    "ignore_environment",
    "no_user_site",
    "safe_path",
    "dev_mode",
)


def _interpreter_args() -> list[str]:
    """The options that give the server the caller's interpreter settings.

    ``subprocess._args_from_interpreter_flags`` computes them (it is what
    ``multiprocessing`` uses), but importing ``subprocess`` costs ~2.5 ms on
    the way to the first worker.  Where no option other than ``-B`` is set
    (nearly always) the answer is known without it; a test compares the two.
    """
    flags = sys.flags
    if sys.warnoptions or sys._xoptions or any(getattr(flags, name, 0) for name in _FLAGS):
        import subprocess

        args: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]  # the stdlib's own helper, stable since 3.4
        return args
    return ["-" + "B" * flags.dont_write_bytecode] if flags.dont_write_bytecode else []


def _exited(pid: int) -> bool:
    """Whether the server ``pid`` ended (reaped now if so: ask once per pid)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped by the program's own waitpid(-1)
        return True
    return done != 0


def _check_may_start() -> None:
    """Raise where no process may start, before the server is started.

    That is in a process that is itself starting (a main module run
    unguarded in a fork server or a spawned child: ``multiprocessing``
    marks it "inheriting"); the set-up raises ``multiprocessing``'s own
    explanation then.  (The set-up may fail for other reasons, rarely: the
    working directory was deleted.  The server just launched then reads end
    of file and ends; it is reaped at the next start.)
    """
    if getattr(process.current_process(), "_inheriting", False):
        _setup()


def _setup() -> bytes:
    """What makes the server the caller's twin, pickled: preparation data, modules to preload."""
    from multiprocessing import spawn

    preparation = spawn.get_preparation_data("workcrew-forkserver")
    preload: list[str] = []
    mp_server = sys.modules.get("multiprocessing.forkserver")
    if mp_server is not None:  # multiprocessing.set_forkserver_preload applies here too
        listed = getattr(mp_server._forkserver, "_preload_modules", None) or []
        preload = [name for name in listed if name != "__main__"]  # __main__: in preparation
    # The authkey pickles only while a process is being started.
    set_spawning_popen(_Pickling())  # type: ignore[arg-type]  # duck-typed Popen
    try:
        return pickle.dumps((preparation, preload), protocol=5)
    finally:
        set_spawning_popen(None)


def _write_ready(fd: int, data: bytes) -> int:
    """Write what ``fd`` takes without blocking; how many bytes (0 if its reader is gone)."""
    os.set_blocking(fd, False)
    try:
        return os.write(fd, data)
    except (BlockingIOError, BrokenPipeError):  # full, or the server died: after the pid
        return 0
    finally:
        os.set_blocking(fd, True)


def _readable(fd: int, timeout: float | None) -> bool:
    """Whether ``fd`` becomes readable (or reaches end of file) within ``timeout`` seconds.

    ``multiprocessing.connection.wait`` in one descriptor's case, without
    importing that module: it loads ``tempfile`` (with ``shutil``, ``random``,
    ``bz2``, ``lzma``), ~4 ms of the caller's time while the server boots,
    which a loaded machine takes from the server's boot.  (``poll`` is retried
    after a signal with the time left, PEP 475.)
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0.0, timeout * 1000)))


def _dump(obj: Any) -> bytes:
    from multiprocessing.reduction import ForkingPickler

    buffer = io.BytesIO()
    ForkingPickler(buffer, 5).dump(obj)
    return buffer.getvalue()


class _Pickling:
    """The "spawning popen" while the set-up pickles (it passes no descriptors)."""

    def duplicate_for_child(self, fd: int) -> int:
        raise ValueError("the fork server's set-up cannot pass descriptors")


class _ServerPopen:
    """What ``Process.start()`` makes for a fork server worker (multiprocessing's Popen API)."""

    method = "forkserver"

    def __init__(self, process_obj: Any) -> None:
        self.returncode: int | None = None
        self.pid: int | None = None
        self.finalizer: Any = None
        self._passed: list[int] = []
        self._launch(process_obj)

    # -- what multiprocessing's reducers call while the Process pickles --

    def duplicate_for_child(self, fd: int) -> int:
        """Pass ``fd`` with the request; the worker finds it at this index."""
        self._passed.append(fd)
        return len(self._passed) - 1

    DupFd = ServerDupFd

    # -- start --

    def _launch(self, process_obj: Any) -> None:
        from multiprocessing import util  # loaded by now: the server's set-up imported it

        util._flush_std_streams()  # type: ignore[attr-defined]  # as every multiprocessing Popen does
        set_spawning_popen(self)  # type: ignore[arg-type]  # duck-typed Popen
        try:
            # The caller's environment now, not the server's from its start: a
            # worker sees what fork and spawn workers see (os.environ at start).
            body = _dump((dict(os.environ), process_obj))
        finally:
            set_spawning_popen(None)
        if len(self._passed) + 2 > MAX_FDS:
            raise ValueError(
                f"a worker's start-up arguments pass {len(self._passed)} descriptors (pipes, "
                f"queues, locks); the fork server takes at most {MAX_FDS - 2}: pass fewer, "
                "or use start_method='spawn'"
            )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        data_r, data_w = os.pipe()
        try:
            _server.request([theirs.fileno(), data_r, *self._passed])
        finally:
            theirs.close()
            os.close(data_r)  # now only the server (until it forks) and the worker hold it
        self.sentinel = ours.detach()
        # The worker's end of the data pipe is its parent sentinel: it reaches
        # end of file when the caller is gone, so this copy lives with the Popen.
        keep = os.dup(data_w)
        self.finalizer = util.Finalize(self, util.close_fds, (keep, self.sentinel))  # type: ignore[attr-defined]  # in multiprocessing.util since 3.8, not in its stubs
        data = LENGTH.pack(len(body)) + body
        # What the pipe takes now the worker reads as soon as it is forked,
        # without waiting for this thread to learn its pid; the rest follows.
        sent = _write_ready(data_w, data)
        try:
            pid = self._read_status(PID_TIMEOUT)
        except EOFError:
            os.close(data_w)
            raise StartFailed(
                "the fork server ended without starting a worker", None, None
            ) from None
        if pid is None:
            os.close(data_w)  # a worker forked after all reads end of file, and ends
            raise StartFailed(
                "the fork server did not start a worker within "
                f"{PID_TIMEOUT:.0f} s (is the machine overloaded?)",
                None,
                None,
            )
        self.pid = pid
        try:
            with open(data_w, "wb", closefd=True) as pipe:
                pipe.write(memoryview(data)[sent:])
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.returncode = self._status_within(REAP_TIMEOUT)
            raise StartFailed(
                f"worker process {pid} died before reading its start-up data", pid, self.returncode
            ) from exc

    def _read_status(self, timeout: float | None) -> int | None:
        """The next value the server writes: the pid, then the exit code.

        None if nothing came within ``timeout``; EOFError if the server ended
        without writing it (it was killed).
        """
        if not _readable(self.sentinel, timeout):
            return None
        raw = b""
        while len(raw) < STATUS.size:
            part = os.read(self.sentinel, STATUS.size - len(raw))
            if not part:
                raise EOFError("the fork server closed a worker's status")
            raw += part
        value: int = STATUS.unpack(raw)[0]
        return value

    # -- multiprocessing's Popen API --

    def _status_within(self, timeout: float | None) -> int | None:
        try:
            return self._read_status(timeout)
        except EOFError:  # the server was killed: the worker's end is unknown
            return 255  # what multiprocessing reports then

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        """The worker's exit code once the server reported it (waits if ``flag`` is 0)."""
        if self.returncode is None:
            self.returncode = self._status_within(0 if flag == os.WNOHANG else None)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, waiting at most ``timeout`` seconds (None: for ever)."""
        if self.returncode is None:
            self.returncode = self._status_within(timeout)
        return self.returncode

    def _send_signal(self, sig: int) -> None:
        if self.returncode is None and self.pid is not None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self._send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self._send_signal(signal.SIGKILL)

    def close(self) -> None:
        if self.finalizer is not None:
            self.finalizer()


class ServerProcess(process.BaseProcess):
    """A ``multiprocessing`` Process that the fork server starts."""

    _start_method = "forkserver"

    @staticmethod
    def _Popen(process_obj: Any) -> _ServerPopen:
        return _ServerPopen(process_obj)


class ServerContext:
    """The part of a ``multiprocessing`` context the process backend uses."""

    Process = ServerProcess
