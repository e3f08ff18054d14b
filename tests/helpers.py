"""Task functions for the tests: module level, so every start method can import them."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

#: Bound for every wait in the tests: reached only if something deadlocks.
TIMEOUT = 30.0

_state: dict[str, Any] = {}


def helper_pids() -> set[int]:
    """Long-lived helpers that are not pool workers: the fork servers, the resource trackers.

    loky's resource tracker (joblib's default backend, run beside workcrew's in
    tests/test_joblib.py) lives, like multiprocessing's, as long as the process.
    """
    pids = set()
    loky = sys.modules.get("joblib.externals.loky.backend.resource_tracker")
    if loky is not None and getattr(loky._resource_tracker, "_pid", None):
        pids.add(loky._resource_tracker._pid)
    from multiprocessing import forkserver, resource_tracker

    from workcrew._backends._forkserver import server_pid

    server = getattr(forkserver._forkserver, "_forkserver_pid", None)
    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    for pid in (server, tracker, server_pid()):
        if pid:
            pids.add(pid)
    return pids


def helper_fds(fds: dict[int, tuple[int, int]]) -> set[int]:
    """Those of ``fds`` (see open_fds) kept for the process's life: fork servers, trackers, locks.

    workcrew's lock table (deadlock detection) is one segment per process
    tree, made by the first lock that needs it and kept (its descriptor and
    its mapping's).
    """
    from multiprocessing import forkserver, resource_tracker

    from workcrew._backends import _forkserver
    from workcrew._sharing import _locks

    kept = {
        getattr(resource_tracker._resource_tracker, "_fd", None),
        getattr(forkserver._forkserver, "_forkserver_alive_fd", None),
    }
    loky = sys.modules.get("joblib.externals.loky.backend.resource_tracker")
    if loky is not None:
        kept.add(getattr(loky._resource_tracker, "_fd", None))
    channel = _forkserver._server.channel
    if channel is not None:
        kept.add(channel.fileno())
    if _locks._table is not None:
        inode = _locks._table.segment.ref.inode
        kept.update(fd for fd, (_, ino) in fds.items() if ino == inode)
    return {fd for fd in kept if fd is not None and fd >= 0}


def helper_segments() -> set[str]:
    """Shared memory kept for the process's life: the lock table's mapping (see helper_fds)."""
    from workcrew._sharing import _locks

    return {"/memfd:workcrew-locks (deleted)"} if _locks._table is not None else set()


def open_fds() -> dict[int, tuple[int, int]]:
    """This process's descriptors, each with the (device, inode) of what it names."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
        except OSError:  # the descriptor listdir itself read through, closed by now
            continue
        fds[int(name)] = (st.st_dev, st.st_ino)
    return fds


def named_segments() -> set[str]:
    """The names in /dev/shm (POSIX shared memory and named semaphores, of any process)."""
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def shared_memory() -> set[str]:
    """Shared-memory segments: named ones in /dev/shm, and memfd segments mapped here.

    (A memfd segment this process holds by descriptor only is an open
    descriptor, which :func:`open_fds` sees.)
    """
    with open("/proc/self/maps") as maps:
        mapped = {line.split(None, 5)[-1].strip() for line in maps if "/memfd:" in line}
    return named_segments() | mapped


def square(x: int) -> int:
    return x * x


def add(a: int, b: int = 0) -> int:
    return a + b


def identity(x: Any) -> Any:
    return x


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


def worker_name(_: object = None) -> str:
    """Unique per worker: the process name for process workers, the thread name for threads."""
    if threading.current_thread() is not threading.main_thread():
        return threading.current_thread().name
    return multiprocessing.current_process().name


def worker_pid(_: object = None) -> int:
    return os.getpid()


def set_state(value: Any) -> None:
    """An initializer: remembers a value in the worker."""
    _state[worker_name()] = value


def get_state(_: object = None) -> Any:
    return _state.get(worker_name())


def failing_initializer() -> None:
    raise RuntimeError("initializer refuses")


def wait_for_fifo(path: str) -> str:
    """Block until someone writes to the FIFO at ``path`` (works across processes)."""
    with open(path) as fifo:
        return fifo.read()


def release_fifo(path: str, text: str = "go") -> None:
    with open(path, "w") as fifo:
        fifo.write(text)


def hard_exit(code: int) -> None:
    os._exit(code)


def return_lock(_: object = None) -> threading.Lock:
    return threading.Lock()


class Unrebuildable(Exception):
    """Pickles, but cannot be unpickled: its __init__ needs two arguments."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")


def raise_unrebuildable(_: object = None) -> None:
    raise Unrebuildable(1, 2)


class NotImportableHere:
    """A class the tests make unimportable on purpose."""


def signal_then_wait(started: str, gate: str) -> str:
    """Tell the test this task runs (FIFO ``started``), then block on FIFO ``gate``."""
    release_fifo(started, "started")
    return wait_for_fifo(gate)


def make_gates(directory: Any) -> tuple[str, str]:
    """Two FIFOs: one the task opens to say it started, one that releases it."""
    started, gate = str(directory / "started"), str(directory / "gate")
    os.mkfifo(started)
    os.mkfifo(gate)
    return started, gate


def flaky(path: str, failures: int, how: str = "raise") -> int:
    """Fail the first ``failures`` calls (counted in a file, so across processes), then succeed."""
    with open(path, "a+") as log:
        log.write("x")
        log.seek(0)
        calls = len(log.read())
    if calls <= failures:
        if how == "exit":
            os._exit(9)
        raise ValueError(f"flaky call {calls}")
    return calls


def segfault(_: object = None) -> None:
    import ctypes

    ctypes.string_at(0)


def kill_self(_: object = None) -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def own_memory() -> int:
    """This process's own resident memory (RssAnon), as max_memory_per_worker measures it."""
    with open("/proc/self/statm", "rb") as statm:
        fields = statm.read().split()
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")


def hold_memory(megabytes: int) -> int:
    """Keep ``megabytes`` alive in the worker (a leak), return the worker's pid."""
    _state.setdefault("hoard", []).append(bytearray(megabytes << 20))
    return os.getpid()


class RaisesOnUnpickle:
    """Pickles fine; unpickling (in the worker) raises."""

    def __reduce__(self) -> Any:
        return (_refuse, ("unpickle",))


class ExitsOnUnpickle:
    """Pickles fine; unpickling (in the worker) ends the process."""

    def __reduce__(self) -> Any:
        return (os._exit, (5,))


class RaisesOnPickle:
    """Cannot be pickled: its __reduce__ raises."""

    def __reduce__(self) -> Any:
        raise RuntimeError("refusing to be pickled")


class ExitsOnPickle:
    """Ends the process that tries to pickle it."""

    def __reduce__(self) -> Any:
        os._exit(6)


class RaisesOnUnpickleInCaller:
    """Unpickling raises only outside workers (the caller), via a marker."""

    def __reduce__(self) -> Any:
        return (_refuse_in_caller, ())


def _refuse(what: str) -> None:
    raise RuntimeError(f"refusing to {what}")


def _refuse_in_caller() -> RaisesOnUnpickleInCaller:
    if multiprocessing.parent_process() is None:
        raise RuntimeError("refusing to unpickle in the caller")
    return RaisesOnUnpickleInCaller()


def make(kind: str) -> Any:
    """Return an object of the named helper class (built in the worker)."""
    return globals()[kind]()


def hard_exit_via_sys(code: int) -> None:
    raise SystemExit(code)


def slow_square(x: int) -> int:
    """x*x after ~0.1 ms of pure-Python work."""
    total = 0
    for i in range(1500):
        total += i
    return x * x + total * 0


def signal_then_fail(started: str) -> None:
    """Tell the test this task runs, then fail."""
    release_fifo(started, "started")
    raise ValueError("failing after the signal")


def sleepy_initializer(seconds: float) -> None:
    """An initializer slower than the task timeout (start-up must not count)."""
    import time

    time.sleep(seconds)


def leave_a_pool_open(_: object = None) -> int:
    """Start a process pool inside a worker and never close it."""
    import warnings

    import workcrew

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", workcrew.NestedPoolWarning)
        pool = workcrew.Pool(1, start_method="fork")
    _state["inner pool"] = pool
    return int(pool.apply(abs, (-7,)))


async def async_square(x: int) -> int:
    import asyncio

    await asyncio.sleep(0)
    return x * x


async def async_fail_on(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x


_live_coroutines = {"now": 0, "peak": 0}


async def async_track_concurrency(entered: Any, gate: Any) -> int:
    """Count how many run at once; say so on ``entered``, then wait for ``gate`` (threading)."""
    import asyncio

    _live_coroutines["now"] += 1
    _live_coroutines["peak"] = max(_live_coroutines["peak"], _live_coroutines["now"])
    entered.release()
    try:
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, TIMEOUT)
        return _live_coroutines["peak"]
    finally:
        _live_coroutines["now"] -= 1


async def async_forever(cancelled: Any) -> None:
    """Sleep forever; record the cancellation (a threading.Event) when it comes."""
    import asyncio

    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.set()
        raise


def nested_pool_warnings(_: object = None) -> list[str]:
    """Create (and close) a pool inside a worker; return the warnings it raised."""
    import warnings

    import workcrew

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with workcrew.Pool(1, kind="thread") as pool:
            pool.apply(abs, (-1,))
    return [type(w.message).__name__ for w in caught]


def native_thread_setting(_: object = None) -> str | None:
    """What a worker sets for OpenMP threads."""
    return os.environ.get("OMP_NUM_THREADS")


_hybrid: dict[str, Any] = {}


async def async_rendezvous(group: int) -> int:
    """Wait until ``group`` of these run at once in this process; return how many did."""
    import asyncio

    state = _hybrid.setdefault("async", {"now": 0, "event": asyncio.Event()})
    state["now"] += 1
    if state["now"] >= group:
        state["event"].set()
    try:
        await asyncio.wait_for(state["event"].wait(), TIMEOUT)
        return int(state["now"])
    finally:
        state["now"] -= 1
        if state["now"] == 0:
            _hybrid.pop("async", None)


def thread_rendezvous(barrier_size: int) -> str:
    """Wait until ``barrier_size`` of these run at once in this process (threads)."""
    barrier = _hybrid.setdefault("barrier", threading.Barrier(barrier_size))
    barrier.wait(TIMEOUT)
    return threading.current_thread().name


def nap(_: object = None) -> None:
    """IO-bound stand-in: waits 10 ms without using the CPU."""
    import time

    time.sleep(0.01)


def spin(milliseconds: float) -> int:
    """Pure-Python CPU work for about ``milliseconds`` of CPU time; returns this pid."""
    end = time.thread_time() + milliseconds / 1000
    n = 0
    while time.thread_time() < end:
        n += sum(i * i for i in range(200))
    return os.getpid()


def doze(milliseconds: float) -> int:
    """IO-like waiting (the workload auto must classify, not a synchronisation); returns pid."""
    time.sleep(milliseconds / 1000)
    return os.getpid()


def fetch(address: tuple[str, int]) -> bytes:
    """Read one reply from a local TCP server: waiting on the network."""
    with socket.create_connection(address, timeout=TIMEOUT) as conn:
        return conn.recv(100)


def spin_then_fail(x: int) -> int:
    """CPU work; item 0 raises (the probe of a map fails)."""
    spin(3)
    if x == 0:
        raise ValueError("first item is bad")
    return x * x


def wait_event(event: Any) -> None:
    """Block until ``event`` is set (a probe that outlives its timeout)."""
    event.wait(TIMEOUT)


async def loop_module(_: object = None) -> str:
    """The module of the event loop running this coroutine (asyncio's or uvloop's)."""
    import asyncio

    return type(asyncio.get_running_loop()).__module__.split(".")[0]


@contextlib.contextmanager
def no_leaks_around(
    spared_threads: tuple[str, ...] = (),
    spared_children: Callable[[], set[int]] = set,
    spared_fds: Callable[[], set[int]] = set,
    descriptors: bool = True,
) -> Iterator[None]:
    """Fail if the body leaves a thread, a child process, a descriptor or shared memory behind.

    ``spared_threads``: name prefixes of threads a library keeps for the life of
    the process (Dask's); ``spared_children``: pids (asked after the body) that
    belong to something longer-lived than the test (a module's cluster), and
    ``spared_fds`` such descriptors.  The helpers of the start methods (fork
    servers, resource trackers) and what they hold are always spared.  With
    ``descriptors=False`` descriptors and shared memory are left to a wider
    check (a module's cluster, which opens them as it serves: see test_dask.py).
    """
    import psutil

    me = psutil.Process()
    threads_before = set(threading.enumerate())
    children_before = {p.pid for p in me.children(recursive=True)}
    fds_before = open_fds()
    memory_before = shared_memory()
    yield
    # Joining (not sleeping) gives a thread that is returning its last frame
    # the moment it needs; a real leak still fails after TIMEOUT.
    stray = [
        t
        for t in threading.enumerate()
        if t not in threads_before and not (spared_threads and t.name.startswith(spared_threads))
    ]
    for thread in stray:
        thread.join(TIMEOUT)
    alive = [t.name for t in stray if t.is_alive()]
    assert not alive, f"threads outlived the test: {alive}"
    known = children_before | helper_pids() | spared_children()
    children = [p for p in me.children(recursive=True) if p.pid not in known]
    _, still = psutil.wait_procs(children, timeout=TIMEOUT)
    assert not still, f"child processes outlived the test: {[p.pid for p in still]}"
    if descriptors:
        check_descriptors(fds_before, memory_before, spared_fds)


def check_descriptors(
    fds_before: dict[int, tuple[int, int]],
    memory_before: set[str],
    spared_fds: Callable[[], set[int]] = set,
) -> None:
    """Fail if descriptors or shared memory are open now that were not before."""

    def left() -> tuple[dict[int, str], set[str]]:
        fds = open_fds()
        spared = helper_fds(fds) | spared_fds()
        opened = {
            fd: _describe_fd(fd)
            for fd, identity in fds.items()
            if fds_before.get(fd) != identity and fd not in spared
        }
        return opened, shared_memory() - memory_before - helper_segments()

    opened, kept = left()
    if opened or kept:  # what only garbage holds is let go first (collected only then: ~50 ms)
        gc.collect()
        opened, kept = left()
    assert not opened, f"descriptors outlived the test: {opened}"
    assert not kept, f"shared memory outlived the test: {sorted(kept)}"


def _describe_fd(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def forget_tblib_pickling() -> None:
    """Undo what importing distributed does: every exception class pickling through tblib.

    Later test modules check how workcrew reports exceptions that do not
    pickle by themselves: the test process gets its default pickling back.
    """
    import copyreg

    for cls, reducer in list(copyreg.dispatch_table.items()):
        if getattr(reducer, "__module__", "").startswith("tblib"):
            del copyreg.dispatch_table[cls]


#: Executors tasks left open, per worker process (kept alive on purpose).
_LEFT_OPEN: list[Any] = []


def leave_an_executor_open(x: int) -> int:
    """Start a ProcessPoolExecutor, use it, and never shut it down (as careless tasks do)."""
    import concurrent.futures

    executor = concurrent.futures.ProcessPoolExecutor(1)
    _LEFT_OPEN.append(executor)
    result: int = executor.submit(square, x).result()
    return result


class Scaler:
    """A class whose bound methods are tasks (a private one's name is mangled)."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def scale(self, x: int) -> int:
        return self.__scale(x)

    def __scale(self, x: int) -> int:
        return x * self.factor

    def private(self) -> Callable[[int], int]:
        """The bound private method (``self._Scaler__scale``)."""
        return self.__scale
