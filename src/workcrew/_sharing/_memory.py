"""Shared memory segments that any process of the program can map, and semaphores inside them.

A :class:`Segment` is an anonymous memory file (``memfd_create``): it has no
name in ``/dev/shm``, so nothing is left behind there whoever dies, and the
kernel frees it when the last descriptor and mapping are gone.  Another process
opens it through ``/proc/<creator pid>/fd/<fd>`` while the creator keeps the
descriptor open, which it does for the life of the segment object; the inode
number in the reference guards against a descriptor number reused since.

Semaphores are POSIX unnamed semaphores (``sem_init`` with pshared=1) placed
in a segment and driven by CPython's own ``_multiprocessing.SemLock`` (built
with ``_rebuild`` on their address): the same C code as ``multiprocessing.Lock``,
so an uncontended acquire costs what theirs does, and a blocked wait releases
the GIL and can be interrupted by Ctrl-C.  This needs Linux with glibc
(``sem_close`` on an unnamed semaphore, which SemLock calls when collected, is
a harmless EINVAL there).
"""

from __future__ import annotations

import _multiprocessing  # type: ignore[import-not-found]  # CPython internals, no stubs
import mmap
import os
import sys
import threading
import weakref
from collections import namedtuple

# Every process worker imports this module (through _locks and _buffers): what
# it imports is paid at every worker start, so ctypes (needed only once a lock
# or segment is made), typing and dataclasses are not imported here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple

__all__ = (
    "SEM_SIZE",
    "SemLockBase",
    "Segment",
    "SegmentRef",
    "lock_mutex",
    "make_semaphore",
    "require_support",
    "thread_alive",
)

#: Bytes reserved per semaphore (glibc's sem_t is 32 bytes on 64-bit systems).
SEM_SIZE = 32
#: SemLock kinds (CPython's _multiprocessing): an owner-tracking recursive mutex, a counter.
RECURSIVE_MUTEX, SEMAPHORE = 0, 1
SEM_VALUE_MAX = 2**31 - 1
#: The C type of multiprocessing's locks; workcrew.Lock subclasses it.
SemLockBase: Any = _multiprocessing.SemLock


def _support_problem() -> str | None:
    if sys.platform != "linux" or not hasattr(os, "memfd_create"):
        return f"it needs Linux (this is {sys.platform})"
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        libc = None
    if not libc:
        return "it needs the GNU C library (glibc); this system uses another C library"
    return None


_PROBLEM = _support_problem()


def require_support(what: str) -> None:
    """Raise ``NotImplementedError`` naming ``what`` where shared segments cannot work."""
    if _PROBLEM is not None:
        raise NotImplementedError(
            f"{what} shares memory between processes and {_PROBLEM}. "
            "Use the standard library's multiprocessing primitives, passed to workers "
            "through the pool's initializer, on this platform."
        )


_libc: Any = None


def _sem_init(address: int, value: int) -> None:
    global _libc
    import ctypes

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.sem_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
    if _libc.sem_init(address, 1, value) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"sem_init failed: {os.strerror(errno)}")


if TYPE_CHECKING:

    class SegmentRef(NamedTuple):
        """How another process finds a segment: its creator's pid, descriptor and inode."""

        pid: int
        fd: int
        inode: int
        size: int

else:  # the same record without importing typing (a tuple: hashable, picklable by name)
    SegmentRef = namedtuple("SegmentRef", "pid fd inode size", module=__name__)
    SegmentRef.__doc__ = "How another process finds a segment: its creator's pid, fd and inode."


#: Segments mapped in this process, by (creator pid, inode).  A forked child
#: inherits the entries and the shared mappings behind them, so it reuses them.
_mapped: weakref.WeakValueDictionary[tuple[int, int], Segment] = weakref.WeakValueDictionary()
_mapped_lock = threading.Lock()


class Segment:
    """A block of shared memory mapped in this process (created here or attached)."""

    def __init__(self, buf: mmap.mmap, ref: SegmentRef, fd: int | None) -> None:
        import ctypes

        self.buf = buf
        self.ref = ref
        self._fd = fd  # kept open by the creator only: it is how others reach the segment
        # One exported view pins the mapping (mmap refuses to close under it)
        # and gives the base address for semaphores and ctypes cells.
        self._anchor = ctypes.c_char.from_buffer(buf)
        self.address = ctypes.addressof(self._anchor)
        if fd is not None:
            weakref.finalize(self, os.close, fd)

    @classmethod
    def create(cls, size: int, label: str) -> Segment:
        """A new zero-filled segment of ``size`` bytes (pages are allocated when touched)."""
        require_support(label)
        fd = os.memfd_create(f"workcrew-{label}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            buf = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        ref = SegmentRef(os.getpid(), fd, os.fstat(fd).st_ino, size)
        segment = cls(buf, ref, fd)
        with _mapped_lock:
            _mapped[(ref.pid, ref.inode)] = segment
        return segment

    @classmethod
    def attach(cls, ref: SegmentRef, what: str) -> Segment:
        """The segment ``ref`` names, mapped once per process; ``what`` names it in errors."""
        key = (ref.pid, ref.inode)
        with _mapped_lock:
            segment = _mapped.get(key)
            if segment is None:
                segment = cls(_open(ref, what), ref, None)
                _mapped[key] = segment
        return segment

    def cells(self, ctype: Any, offset: int, count: int) -> Any:
        """A ctypes array of ``count`` ``ctype`` values at ``offset``, over the shared bytes."""
        return (ctype * count).from_buffer(self.buf, offset)


def _open(ref: SegmentRef, what: str) -> mmap.mmap:
    path = f"/proc/{ref.pid}/fd/{ref.fd}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise _gone(ref, what, exc) from exc
    try:
        if os.fstat(fd).st_ino != ref.inode:
            raise _gone(ref, what, None)
        return mmap.mmap(fd, ref.size)
    finally:
        os.close(fd)


def _gone(ref: SegmentRef, what: str, exc: OSError | None) -> RuntimeError:
    reason = f" ({exc.strerror})" if exc is not None else ""
    return RuntimeError(
        f"cannot reach the shared memory of {what}: the process that created it "
        f"(pid {ref.pid}) has exited or dropped the object{reason}. Keep the object "
        "referenced in the process that created it for as long as workers use it."
    )


def make_semaphore(
    segment: Segment, offset: int, kind: int, maxvalue: int, init: int | None
) -> Any:
    """A SemLock over the semaphore at ``offset``; ``init`` (its value) only when creating it."""
    address = segment.address + offset
    if init is not None:
        _sem_init(address, init)
    return _multiprocessing.SemLock._rebuild(address, kind, maxvalue, None)


def thread_alive(tid: int) -> bool:
    """Whether the OS thread ``tid`` (a native thread id, any process) still runs."""
    try:
        with open(f"/proc/{tid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # "tid (comm) S ...": the state follows the last parenthesis; Z/X: dead, not reaped.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def lock_mutex(mutex: Any, cells: Any, index: int, check_every: float) -> None:
    """Take ``mutex``, whose holder's thread id is kept in ``cells[index]``.

    A holder killed while holding it (these mutexes guard microseconds of
    copying) would block everyone forever: every ``check_every`` seconds the
    waiter looks, and takes the mutex over when the holder's thread is gone.
    Best effort: there is no atomic compare-and-swap here, so two waiters
    that both see the same dead holder can race (the recheck narrows it).
    """
    if not mutex.acquire(False):
        while not mutex.acquire(True, check_every):
            holder = cells[index]
            if holder and not thread_alive(holder) and cells[index] == holder:
                cells[index] = 0
                try:
                    mutex.release()
                except ValueError:  # another waiter took over first
                    pass
    cells[index] = threading.get_native_id()
