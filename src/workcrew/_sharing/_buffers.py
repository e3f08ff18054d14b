"""Large buffers between the caller and process workers through shared memory.

Pickle protocol 5 hands every buffer of an object that supports it (NumPy
arrays, ``bytearray``, ``pickle.PickleBuffer``) to a callback instead of
copying it into the pickle.  Buffers of at least :data:`THRESHOLD` bytes go
*out of band*: the sender writes each into a memfd segment (one ``pwrite``,
no pickling), the message carries only ``(pid, fd, inode, size, id)``, and the
receiver maps the segment privately (copy-on-write: the task may modify its
array without touching the sender's) and unpickles over the mapping.

Reuse: writing into a fresh memfd costs the kernel's page allocation and
zeroing (about 2 GB/s here), rewriting one whose pages exist runs at memcpy
speed.  So the caller's :class:`Exporter` keeps segments for reuse, and a
segment is rewritten only after its receiver reported it *released*: the
worker unmaps a chunk's segments when the chunk is done (``mmap.close()``
succeeds only when no array still uses the mapping; a task that kept one
keeps its segment until it lets go), or the worker process has ended.

Nothing is ever named in ``/dev/shm``: a segment lives while a descriptor or
a mapping of it does, so no crash of any process can leak one.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import mmap
import os
import pickle
import sys
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .._core._fds import register_master_fd, unregister_master_fd
from ._memory import require_support

__all__ = ("THRESHOLD", "BufferRef", "Exporter", "Imported", "dumps_oob", "map_buffers")

#: Buffers this large or larger travel through shared memory, smaller ones in the pickle.
THRESHOLD = 256 * 1024
#: Bytes of released segments an exporter keeps for reuse.
KEEP_BYTES = 512 << 20

try:
    require_support("shared buffers")
    ENABLED = True
except NotImplementedError:  # pragma: no cover - other platforms pickle buffers in band
    ENABLED = False


@dataclass(frozen=True)
class BufferRef:
    """One out-of-band buffer: where the receiver finds it, and its id for release."""

    pid: int
    fd: int
    inode: int
    nbytes: int
    id: int


def dumps_oob(obj: Any) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj``; large contiguous buffers are returned apart instead of copied in."""
    if not ENABLED:
        from .._core._pickling import dumps

        return dumps(obj), []
    buffers: list[memoryview] = []

    def keep_apart(buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:  # not contiguous: copied into the pickle
            return True
        if raw.nbytes < THRESHOLD:
            return True
        buffers.append(raw)
        return False

    try:
        return pickle.dumps(obj, protocol=5, buffer_callback=keep_apart), buffers
    except Exception:  # noqa: BLE001 - any refusal: cloudpickle raises the real error
        buffers.clear()
        import cloudpickle

        return bytes(cloudpickle.dumps(obj, protocol=5, buffer_callback=keep_apart)), buffers


def map_buffers(refs: list[BufferRef]) -> list[Any]:
    """Map each buffer privately (copy-on-write); ``OSError`` if its sender is gone.

    Pass the result as ``pickle.loads(data, buffers=...)``.  Each mapping is a
    ctypes array over memory mapped with libc's ``mmap`` and unmapped when the
    last object built over it is collected.  (Python's ``mmap.mmap`` would keep
    a duplicate descriptor open per mapping until 3.13: a caller holding a
    thousand returned arrays would run out of descriptors.)
    """
    maps = []
    for ref in refs:
        fd = os.open(f"/proc/{ref.pid}/fd/{ref.fd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_ino != ref.inode:
                raise FileNotFoundError(f"shared buffer {ref.id} of pid {ref.pid} is gone")
            maps.append(_map_private(fd, ref.nbytes))
        finally:
            os.close(fd)
    return maps


_libc: Any = None


def _map_private(fd: int, nbytes: int) -> Any:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc = libc
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    address = _libc.mmap(None, nbytes, prot, mmap.MAP_PRIVATE, fd, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mmap of a shared buffer failed: {os.strerror(errno)}")
    view = (ctypes.c_char * nbytes).from_address(address)
    weakref.finalize(view, _libc.munmap, address, nbytes)
    return view


class _Segment:
    __slots__ = ("fd", "id", "inode", "size")

    def __init__(self, fd: int, segment_id: int) -> None:
        self.fd, self.id = fd, segment_id
        self.inode = os.fstat(fd).st_ino
        self.size = 0


class Exporter:
    """The sending side: writes buffers into segments and keeps them until released.

    ``reuse``: keep released segments to rewrite (the caller's side, which sends
    many arrays); a worker returning results makes fresh ones.  Not thread-safe:
    one thread (the pool's master, or the worker) uses it.
    """

    def __init__(self, *, reuse: bool) -> None:
        self._reuse = reuse
        self._ids = itertools.count(1)
        self._lent: dict[int, _Segment] = {}
        self._free: OrderedDict[int, _Segment] = OrderedDict()
        self._free_bytes = 0
        self._pid = os.getpid()
        self._closed = False  # then released segments are closed, not kept

    def export(self, buffers: list[memoryview]) -> list[BufferRef]:
        """Write each buffer into a segment lent out until :meth:`release`.

        ``OSError`` (no memory, no descriptors) leaves nothing lent.
        """
        refs: list[BufferRef] = []
        lent: list[int] = []
        try:
            for raw in buffers:
                segment = self._segment_for(raw.nbytes)
                self._lent[segment.id] = segment
                lent.append(segment.id)
                written = 0
                while written < raw.nbytes:
                    written += os.pwrite(segment.fd, raw[written:], written)
                refs.append(BufferRef(self._pid, segment.fd, segment.inode, raw.nbytes, segment.id))
        except OSError:
            self.release(lent)
            raise
        return refs

    def _segment_for(self, nbytes: int) -> _Segment:
        # The smallest free segment that is large enough; else a new one.
        best = None
        for segment in self._free.values():
            if segment.size >= nbytes and (best is None or segment.size < best.size):
                best = segment
        if best is not None:
            del self._free[best.id]
            self._free_bytes -= best.size
            return best
        fd = os.memfd_create("workcrew-buffer", os.MFD_CLOEXEC)
        register_master_fd(fd)  # a worker forked later closes it (see _core/_fds.py)
        segment = _Segment(fd, next(self._ids))
        segment.size = nbytes
        return segment

    def release(self, ids: list[int]) -> None:
        """The receiver no longer maps these segments: reuse them, or close them."""
        for segment_id in ids:
            segment = self._lent.pop(segment_id, None)
            if segment is None:
                continue
            if not self._reuse or self._closed or segment.size > KEEP_BYTES:
                _close(segment)
                continue
            self._free[segment.id] = segment
            self._free_bytes += segment.size
            while self._free_bytes > KEEP_BYTES:
                _, old = self._free.popitem(last=False)
                self._free_bytes -= old.size
                _close(old)

    def close(self) -> None:
        """Close every segment: receivers keep only what they have mapped."""
        self._closed = True
        for segment in [*self._lent.values(), *self._free.values()]:
            _close(segment)
        self._lent.clear()
        self._free.clear()
        self._free_bytes = 0


def _close(segment: _Segment) -> None:
    unregister_master_fd(segment.fd)
    with contextlib.suppress(OSError):
        os.close(segment.fd)


class Imported:
    """The receiving side: segments mapped here, unmapped when nothing uses them."""

    def __init__(self) -> None:
        self._maps: dict[int, Any] = {}

    def map(self, refs: list[BufferRef]) -> list[Any]:
        """:func:`map_buffers`, remembering the mappings to release them later."""
        maps = map_buffers(refs)
        for ref, buf in zip(refs, maps):
            self._maps[ref.id] = buf
        return maps

    def release_unused(self) -> list[int]:
        """Unmap the segments no object uses any more; their ids (to tell the sender)."""
        released = []
        for segment_id in list(self._maps):
            # Every object built over the mapping holds a reference to it: unused
            # when only the dict's reference (and getrefcount's argument) remain.
            if sys.getrefcount(self._maps[segment_id]) > 2:
                continue
            del self._maps[segment_id]  # collected now: unmapped by its finalizer
            released.append(segment_id)
        return released
