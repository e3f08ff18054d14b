"""The fork server's side: its loop, and the start of each worker it forks.

Runs in the server process that ``_forkserver`` starts, a fresh interpreter
(``python -c``) given one end of a ``SOCK_SEQPACKET`` socket pair, the
*channel*.  What it imports is what every worker starts with, so this module
imports little, and the server imports the rest once (``PRELOAD``), before
its first fork.

Protocol on the channel, one message per datagram:

1. from the caller, once: the pickled set-up, ``(preparation data, modules
   to preload)``; the server becomes the caller's twin (``sys.path``,
   working directory, ``__main__`` run as ``__mp_main__``, authkey), as
   ``multiprocessing``'s forkserver does;
2. from the caller, at most once: ``b"import cloudpickle"``, sent before the
   first fork after the caller loaded cloudpickle (it sends some function by
   value): the server imports it, so that later workers start with it;
3. from the caller, per worker: ``b"fork"`` with descriptors ``[status, data,
   *passed]``.  The server forks; the child reads the caller's environment
   and the ``Process`` from ``data`` (a length, then the pickle of both),
   takes the environment and runs the Process; the server writes
   the child's pid, then, once it has reaped the child, its exit code (as
   ``Process.exitcode``: negative for a signal) to ``status``, and closes it.

End of file on the channel (the caller exited or closed it: it does so in an
exit hook, see ``_forkserver``) ends the server at once (``_exit``); its
workers live on, each bound to the caller by its own lifeline.

Invariants: the server is single-threaded, so ``fork`` is safe; it never
blocks on a caller (status writes are 8 bytes to a socket only it writes);
the server reaps children only in its loop, after registering each child's
status socket, so an exit is never reported before the pid.
"""

from __future__ import annotations

import io
import os
import pickle
import select
import signal
import socket
import struct
import sys

TYPE_CHECKING = False  # the server imports this module first: no typing at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = ("IMPORT", "MAX_FDS", "STATUS", "ServerDupFd", "main")

#: Most descriptors one request may carry: status, data, and what is passed.
MAX_FDS = 64
#: A pid or an exit code on a status socket (signed: -N is "killed by signal N").
STATUS = struct.Struct("q")
#: The length of the pickle that precedes it on a data pipe.
LENGTH = struct.Struct("Q")
#: What every worker imports, loaded once in the server so that forks start
#: with it: the worker's code, and the module of the Process class each worker
#: unpickles.  ``multiprocessing`` comes with the set-up.
#: cloudpickle is not here: most functions travel without it
#: (``_core/_pickling.py``), and its import would delay the first worker by
#: ~10 ms; the caller asks for it once it uses it (``IMPORT``).
PRELOAD = ("workcrew._backends._process_worker", "workcrew._backends._forkserver")
#: The request to import cloudpickle (protocol, 2.).
IMPORT = b"import cloudpickle"
#: Longest request message.
REQUEST_BYTES = 64
#: Largest set-up message (sys.path, argv, names of modules to preload).
SETUP_BYTES = 1 << 20

#: In a worker: the descriptors its request passed, in order (see ServerDupFd).
_passed: list[int] = []


class ServerDupFd:
    """A descriptor passed to a worker with its request, by its place in the list.

    ``multiprocessing`` pickles a connection, queue or lock's descriptor for a
    new process as ``popen.DupFd(popen.duplicate_for_child(fd))``; the
    caller's popen (``_forkserver``) puts the descriptor in the request and
    this object in the pickle, and the worker takes it back here.
    """

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        """The worker's descriptor (the worker owns it from now on)."""
        return _passed[self.index]


def main(channel_fd: int) -> None:
    """The server: set up as the caller's twin, then fork a worker per request."""
    _close_inherited(keep=channel_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    channel = socket.socket(fileno=channel_fd)
    setup = channel.recv(SETUP_BYTES)
    if not setup:
        return
    _become_twin(*pickle.loads(setup))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, _ignore)  # a handler, so that a child's exit wakes us
    statuses: dict[int, int] = {}  # child pid -> its status socket
    poller = select.poll()
    poller.register(channel, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                _drain(wake_r)
                _reap(statuses)
            elif not _serve(channel, statuses, (wake_r, wake_w)):
                _exit()


def _close_inherited(keep: int) -> None:
    """Close the descriptors above stderr that came with the launch, but ``keep``.

    The interpreter makes its own descriptors non-inheritable (PEP 446): an
    inheritable one is the caller's, one it left inheritable (a pipe it
    prepared for a child of its own, whose reader would never see end of
    file while the server holds it).  ``subprocess``'s ``close_fds=True``
    closes them in the child; the launch (``os.posix_spawn``) cannot, so
    the server does, before anything else.
    """
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(listing)
            break
        except OSError:
            continue
    else:
        return
    for name in names:
        fd = int(name)
        try:
            if fd > 2 and fd != keep and os.get_inheritable(fd):
                os.close(fd)
        except OSError:  # the listing's own descriptor, closed by now
            pass


def _exit() -> None:
    """End the server at once: its exit hooks run, its modules are not torn down.

    The caller has ended (or let the server go).  A normal exit would spend
    ~10 ms freeing every module the server imported, while the caller's
    stderr, which the server shares, stays open: a program whose output is
    captured (``subprocess.run``, ``| tee``) would seem to end that much later.
    The exit hooks (``atexit``, ``weakref.finalize``: those of the main module
    it ran, too) still run, as in ``multiprocessing``'s server.
    """
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):  # closed, or replaced by None
                pass
        os._exit(0)


def _ignore(signum: int, frame: Any) -> None:
    """SIGCHLD's handler: the wake-up descriptor does the work."""


def _become_twin(preparation: dict[str, Any], preload: list[str]) -> None:
    """Take the caller's paths, directory, authkey and ``__main__``, then preload modules.

    A ``__main__`` that fails to run here is reported on stderr and skipped:
    the workers then lack its names (functions still travel by value).  While
    it runs, the server is "inheriting", as ``multiprocessing``'s is: a main
    module without the ``if __name__ == "__main__":`` guard that starts a
    process pool as it runs fails here with ``multiprocessing``'s own
    explanation, instead of running the program's work a second time.
    """
    from multiprocessing import process, spawn

    main_path = preparation.get("init_main_from_path")
    me = process.current_process()
    me._inheriting = True  # type: ignore[attr-defined]  # spawn._check_not_importing_main reads it
    try:
        if isinstance(main_path, str) and main_path.endswith(".py"):
            # the rest as multiprocessing does it; the script by our runner
            spawn.prepare({k: v for k, v in preparation.items() if k != "init_main_from_path"})
            _run_main(main_path, spawn.old_main_modules)
        else:  # a script without the suffix (maybe a zip archive): runpy tells
            spawn.prepare(preparation)
    except BaseException:  # noqa: BLE001 - the user's main module: report it, serve anyway
        import traceback

        print(
            "workcrew: the forkserver could not run the main module; workers will not "
            "find names defined there:\n" + traceback.format_exc(),
            file=sys.stderr,
            flush=True,
        )
    finally:
        del me._inheriting  # type: ignore[attr-defined]  # set above, as multiprocessing does
    for name in (*preload, *PRELOAD):
        _preload(name)


def _run_main(path: str, old_mains: list[Any]) -> None:
    """Run the caller's main script as ``__mp_main__``, as ``multiprocessing.spawn`` does.

    What ``spawn._fixup_main_from_path`` does, without ``runpy.run_path``,
    which imports ``pkgutil`` (and with it, from Python 3.12, ``typing``):
    ~4 ms on the way to the first worker, for modules no worker needs.  One
    difference, deliberate: the script runs in the module's own namespace, as
    an imported module does, where ``runpy`` runs it in a temporary one and
    copies it (functions of the script then see a ``global`` they set in the
    module; under ``runpy`` they would not).
    """
    current = sys.modules["__main__"]
    if os.path.splitext(os.path.basename(path))[0] == "ipython":
        return  # multiprocessing's exception: IPython's launcher has no __main__ guard
    if getattr(current, "__file__", None) == path:
        return
    with io.open_code(path) as source:
        # dont_inherit: this module's ``from __future__ import annotations``
        # must not reach the script (its annotations would become strings)
        code = compile(source.read(), path, "exec", dont_inherit=True)
    module = type(sys)("__mp_main__")
    module.__dict__.update(
        __file__=path, __cached__=None, __loader__=None, __package__="", __spec__=None
    )
    old_mains.append(current)  # as multiprocessing: kept alive, for what refers to it
    argv, argv0 = sys.argv, (sys.argv[0] if sys.argv else None)
    sys.modules["__mp_main__"] = module
    if argv0 is not None:
        argv[0] = path  # the script sees its own path there, as under runpy
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop("__mp_main__", None)  # as runpy: no half-run module stays
        raise
    else:
        sys.modules["__main__"] = module
    finally:
        if argv0 is not None and argv:  # the list as it was (the script may rebind sys.argv)
            argv[0] = argv0


def _preload(name: str) -> None:
    try:
        __import__(name)
    except Exception:  # noqa: BLE001 - as multiprocessing: a module that fails loads later, or fails there
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _reap(statuses: dict[int, int]) -> None:
    """Report every exited child's code on its status socket, and close it."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = statuses.pop(pid, None)
        if fd is not None:
            _write_status(fd, os.waitstatus_to_exitcode(status))
            os.close(fd)


def _write_status(fd: int, value: int) -> None:
    try:
        os.write(fd, STATUS.pack(value))
    except OSError:  # the caller closed its end: nobody waits for this
        pass


def _serve(channel: socket.socket, statuses: dict[int, int], wake: tuple[int, int]) -> bool:
    """Fork the worker one request asks for; False at the channel's end of file."""
    try:
        message, fds, flags, _ = socket.recv_fds(channel, REQUEST_BYTES, MAX_FDS)
    except OSError:
        return False
    if not message:
        return False
    if message == IMPORT and not fds:
        _preload("cloudpickle")
        return True
    if message != b"fork" or len(fds) < 2 or flags & socket.MSG_CTRUNC:
        for fd in fds:  # not ours to serve: the caller sees its status socket close
            os.close(fd)
        return True
    status, data, *passed = fds
    pid = os.fork()
    if pid == 0:
        os._exit(_child(channel, statuses, wake, status, data, passed))
    for fd in (data, *passed):
        os.close(fd)
    _write_status(status, pid)
    statuses[pid] = status
    return True


def _child(
    channel: socket.socket,
    statuses: dict[int, int],
    wake: tuple[int, int],
    status: int,
    data: int,
    passed: list[int],
) -> int:
    """In the new worker: drop the server's descriptors and handlers, run the Process."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        channel.close()
        for fd in (*wake, status, *statuses.values()):
            os.close(fd)
        _passed[:] = passed
        environ, process = pickle.loads(
            _read_exactly(data, LENGTH.unpack(_read_exactly(data, 8))[0])
        )
        os.environ.clear()
        os.environ.update(environ)
    except BaseException:  # noqa: BLE001 - nothing to run: say why, as multiprocessing does
        import traceback

        traceback.print_exc()
        return 1
    # ``data`` stays open: its end of file tells the Process its parent died
    # (the caller keeps a copy of the write end, see _forkserver).
    code: int = process._bootstrap(parent_sentinel=data)
    return code


def _read_exactly(fd: int, size: int) -> bytes:
    parts = []
    while size:
        part = os.read(fd, min(size, 1 << 20))
        if not part:
            raise EOFError("the caller closed the start-up data before its end")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)
