"""Arrays built directly in shared memory, sent to process workers by reference.

:func:`shared_array` returns a NumPy array whose bytes are a memfd segment
mapped shared (a :class:`SharedMap`).  When such an array, or a contiguous
view of it, crosses a process pool's wire (a task's argument or its result),
``_buffers`` finds the segment behind it (:func:`shared_span`) and sends only
where the bytes lie: ``(pid, fd, inode, offset, nbytes)``.  The receiver maps
the same pages shared (:func:`attach`): nothing is copied, and a write on
either side is seen by the other.

Only the pool's wire sends references: a pickle made anywhere else may be
loaded after every process holding the segment is gone, so ``pickle.dumps``
and multiprocessing see an ordinary array (NumPy's own reduction: a copy).

Lifetime: a segment lives while some process maps it or holds a descriptor of
it.  Each process that maps one keeps its own descriptor open as long as its
mapping lives (the :class:`SharedMap` is collected when no array uses it), so
that references it sends name a descriptor of its own; the sender also holds
the segment until the receiver has mapped it (``Exporter`` lends it).  No name
in ``/dev/shm``: no crash of any process can leak one.

Registry: every segment mapped in this process, by inode.  An inode identifies
one segment among the live ones (the kernel reuses a number only once the old
segment is freed, and a registered segment is mapped here, so alive), which
lets a receiver that already maps the segment reuse its mapping: a worker
given two views of one array gets two views of one mapping, the caller given
back a view of its own array maps nothing, and a forked child uses the
mapping it inherited.
"""

from __future__ import annotations

import mmap
import operator
import os
import sys
import threading
import weakref
from collections.abc import Iterable

from .._core._public import public
from ._memory import require_support

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal, SupportsIndex

    import numpy as np
    from numpy.typing import DTypeLike

__all__ = ("SharedMap", "attach", "shared_array", "shared_span")

#: mmap's own duplicate of the descriptor is not needed (we keep one open); 3.13+ can skip it.
_NO_FD_COPY: dict[str, bool] = {"trackfd": False} if sys.version_info >= (3, 13) else {}


class SharedMap(mmap.mmap):
    """One shared-array segment mapped shared in this process.

    ``fd`` is this process's descriptor of it (closed when the map is
    collected), ``inode`` names the segment, ``length`` is its size in bytes.
    """

    __slots__ = ("_address", "fd", "inode", "length")
    fd: int
    inode: int
    length: int  # (mmap's own size() is a method)
    _address: int

    def address(self) -> int:
        """Where the mapping starts in this process's memory."""
        if not self._address:
            self._address = _address_of(memoryview(self))
        return self._address


_registry: weakref.WeakValueDictionary[int, SharedMap] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


def _new_map(fd: int, size: int) -> SharedMap:
    """Map ``fd`` shared; the map owns ``fd`` from now on (closed when it is collected)."""
    try:
        segment = SharedMap(fd, size, **_NO_FD_COPY)
    except BaseException:
        os.close(fd)
        raise
    segment.fd, segment.inode, segment.length = fd, os.fstat(fd).st_ino, size
    segment._address = 0
    weakref.finalize(segment, os.close, fd)
    _registry[segment.inode] = segment
    return segment


def attach(pid: int, fd: int, inode: int, size: int) -> SharedMap:
    """The segment a reference names, mapped once per process; ``OSError`` if it is gone."""
    with _registry_lock:
        segment = _registry.get(inode)
        if segment is not None and segment.length == size:
            return segment
        try:
            mine = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise _gone(pid, exc.strerror) from exc
        if os.fstat(mine).st_ino != inode:
            os.close(mine)
            raise _gone(pid, "its descriptor now names another file")
        return _new_map(mine, size)


def _gone(pid: int, reason: str | None) -> OSError:
    return FileNotFoundError(
        f"a workcrew.shared_array of process {pid} is gone ({reason}): the process that "
        "sent it exited or dropped the array before the receiver mapped it. Keep the "
        "array referenced until the tasks that use it are done."
    )


def shared_span(raw: memoryview) -> tuple[SharedMap, int] | None:
    """``(segment, offset)`` when the bytes of ``raw`` lie in a shared array's segment.

    Cheap when there is none (no shared array was made or mapped here), and for
    arrays that own their memory (``base`` is None): the walk up the ``base``
    chain stops at once.
    """
    if not _registry or not raw.nbytes:
        return None
    segment = _segment_behind(raw.obj)
    if segment is None:
        return None
    offset = _address_of(raw) - segment.address()
    if offset < 0 or offset + raw.nbytes > segment.length:
        return None
    return segment, offset


def _segment_behind(obj: object) -> SharedMap | None:
    """The segment a buffer exporter is a view of: ndarray -> base ... -> memoryview -> map."""
    np = sys.modules.get("numpy")
    for _ in range(64):  # a chain of views is short; never loop on a strange object
        if isinstance(obj, SharedMap):
            return obj
        if isinstance(obj, memoryview):
            obj = obj.obj
        elif np is not None and isinstance(obj, np.ndarray) and obj.base is not None:
            obj = obj.base
        else:
            return None
    return None


def _address_of(buffer: memoryview) -> int:
    """The address of a buffer's first byte (read-only buffers included)."""
    np = sys.modules.get("numpy")
    if np is not None:
        address: int = np.frombuffer(buffer, dtype=np.uint8).__array_interface__["data"][0]
        return address
    import ctypes  # only without NumPy, which shared arrays need anyway

    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def shared_array(
    shape: SupportsIndex | Iterable[SupportsIndex],
    dtype: DTypeLike = float,
    *,
    order: Literal["C", "F"] = "C",
) -> np.ndarray[Any, np.dtype[Any]]:
    """A new NumPy array, filled with zeros, whose memory process workers share.

    Fill it in place (``a[:] = ...``, ``np.copyto(a, b)``, ``np.add(x, y, out=a)``)
    and pass it, or contiguous slices of it, to tasks of a :class:`workcrew.Pool`
    or :class:`workcrew.Executor`: process workers receive a view of the same
    memory, copying nothing, whatever the array's size.  The view is writable
    and shared: what a task writes, the caller (and every other task) sees, so
    give concurrent tasks disjoint slices or guard them with a
    :class:`workcrew.Lock`.  An array a task returns that lies in a shared
    array comes back to the caller as a view of the same memory.  Thread and
    async workers get the array itself, with the same meaning.

    The memory lives while any array over it does, in any process (a pool
    holds what it sends until the worker has mapped it), and nothing is left
    behind when the last one goes, whoever dies.  Pickled any other way
    (``pickle.dumps``, multiprocessing) it is an ordinary array, copied.
    Non-contiguous views (``a[:, 0]``, ``a[::2]``) are copied too.  Linux with
    glibc only; see docs/arrays.md.
    """
    import numpy as np

    require_support("workcrew.shared_array")
    kind = np.dtype(dtype)
    if kind.hasobject:
        raise TypeError(
            f"workcrew.shared_array cannot hold dtype {kind} (Python objects are pointers "
            "into one process); use a numeric, boolean, string or structured dtype"
        )
    dims = _dimensions(shape)
    if order not in ("C", "F"):
        raise ValueError(f"workcrew.shared_array: order must be 'C' or 'F', not {order!r}")
    count = 1
    for n in dims:
        count *= n
    fd = os.memfd_create("workcrew-shared-array", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, max(count * kind.itemsize, 1))  # pages are allocated when touched
    except BaseException:
        os.close(fd)
        raise
    with _registry_lock:
        segment = _new_map(fd, max(count * kind.itemsize, 1))
    flat = np.frombuffer(segment, dtype=kind, count=count)
    return flat.reshape(dims, order=order)


def _dimensions(shape: SupportsIndex | Iterable[SupportsIndex]) -> tuple[int, ...]:
    if isinstance(shape, Iterable):
        dims = tuple(operator.index(n) for n in shape)
    else:
        dims = (operator.index(shape),)
    if any(n < 0 for n in dims):
        raise ValueError(f"workcrew.shared_array: negative dimension in shape {shape!r}")
    return dims


public(shared_array)
