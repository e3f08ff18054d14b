"""Large buffers between the caller and process workers through shared memory.

Pickle protocol 5 hands every buffer of an object that supports it (NumPy
arrays, ``bytearray``, ``pickle.PickleBuffer``) to a callback instead of
copying it into the pickle.  Buffers of at least :data:`THRESHOLD` bytes go
*out of band*: the sender copies each into a memfd segment, the message
carries only a :class:`BufferRef`, and the receiver maps the segment privately
(copy-on-write: the task may modify its array without touching the sender's)
and unpickles over the mapping.  A buffer that lies in a
:func:`workcrew.shared_array` (any size) is not copied at all: its ref names
the array's own segment, which the receiver maps shared (see ``_arrays``).

Where the time goes, and what this module does about it (16 MiB buffers):

* Writing into a fresh segment costs the kernel's page allocation and zeroing
  (about 4 GB/s here); rewriting one whose pages exist runs at memory-copy
  speed.  So the caller's :class:`Exporter` keeps segments for reuse, each
  mapped once, pre-faulted (``MADV_POPULATE_WRITE``) and kept out of forked
  children (``MADV_DONTFORK``), and copies into the mapping (``memcpy``, with
  the GIL released when NumPy is loaded: faster than ``pwrite``, which goes
  page by page through the page cache).
* Mapping a segment and faulting its pages in costs the receiver as much as
  reading them.  So a worker's :class:`Imported` keeps its mapping of each
  reused segment: the caller rewrites the same pages, which the mapping
  already shows.  A task that wrote to its array made private copies of the
  pages it wrote; those would hide the next contents, so on release the
  worker reads its page table (``/proc/self/pagemap``) and drops any private
  page (``MADV_DONTNEED``: the next read maps the segment's page again).  If
  the page table cannot be read, mappings are not kept.

A segment is rewritten only after its receiver reported it *released*: the
worker releases a chunk's segments when the chunk is done and no array still
uses them (a task that kept one keeps its segment until it lets go), or the
worker process has ended.  Results go the other way in fresh segments (the
caller's result arrays map them for as long as they live).

Nothing is ever named in ``/dev/shm``: a segment lives while a descriptor or
a mapping of it does, so no crash of any process can leak one.
"""

from __future__ import annotations

import itertools
import mmap
import os
import pickle
import sys
import time
import weakref
from collections import OrderedDict, namedtuple

from .._core._fds import register_master_fd, unregister_master_fd
from ._arrays import SharedMap, attach, shared_span
from ._memory import require_support

# Every process worker imports this module: ctypes (for mappings without a
# descriptor each), typing and NumPy are imported where they are needed.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple

__all__ = ("THRESHOLD", "BufferRef", "Exporter", "Imported", "dumps_oob", "map_buffers")

#: Buffers this large or larger travel through shared memory, smaller ones in the pickle.
THRESHOLD = 256 * 1024
#: Bytes of idle segments an exporter keeps for reuse.
KEEP_BYTES = 512 << 20
#: Bytes of segments a worker keeps mapped: they count in its resident memory
#: (the pages it read are mapped in it), which max_memory_per_worker watches.
KEEP_MAPPED_BYTES = 256 << 20
#: Idle segments kept, on each side (one descriptor each on the caller's side).
KEEP_SEGMENTS = 64
#: Seconds between two looks for kept mappings whose segment the caller closed.
SWEEP_EVERY = 1.0
PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4
MADV_DONTFORK = 10
MADV_POPULATE_READ = 22  # Linux 5.14+ (both): older kernels refuse them, and pages
MADV_POPULATE_WRITE = 23  # fault in as they are first touched instead

try:
    require_support("shared buffers")
    ENABLED = True
except NotImplementedError:  # pragma: no cover - other platforms pickle buffers in band
    ENABLED = False

if TYPE_CHECKING:

    class BufferRef(NamedTuple):
        """One out-of-band buffer: where the receiver finds it, and its id for release."""

        pid: int  # the sender, whose descriptor ``fd`` names the segment
        fd: int
        inode: int
        size: int  # the segment's length (it may hold a shorter buffer)
        id: int
        offset: int  # where the buffer starts in the segment
        nbytes: int
        shared: bool  # a shared array's own segment: map shared, never copy

else:  # the same record without importing typing (a tuple: small in the sidecar)
    BufferRef = namedtuple(
        "BufferRef", "pid fd inode size id offset nbytes shared", module=__name__
    )


def dumps_oob(obj: Any) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj``; large contiguous buffers and shared arrays are returned apart."""
    if not ENABLED:
        from .._core._pickling import dumps

        return dumps(obj), []
    buffers: list[memoryview] = []

    def keep_apart(buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:  # not contiguous: copied into the pickle
            return True
        if raw.nbytes < THRESHOLD and shared_span(raw) is None:
            return True
        buffers.append(raw)
        return False

    try:
        return pickle.dumps(obj, protocol=5, buffer_callback=keep_apart), buffers
    except Exception:  # noqa: BLE001 - any refusal: cloudpickle raises the real error
        buffers.clear()
        import cloudpickle

        return bytes(cloudpickle.dumps(obj, protocol=5, buffer_callback=keep_apart)), buffers


# -- mappings (libc's mmap through ctypes: no descriptor per mapping) ---------------------

_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        import ctypes

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
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc = libc
    return _libc


def _map(fd: int, size: int, flags: int, *, dontfork: bool = False) -> tuple[Any, int]:
    """``fd`` mapped read-write: (a ctypes array over it, its address).

    The mapping is unmapped when the array is collected, and every object
    built over it (``from_buffer``, NumPy) holds a reference to it.  (Python's
    ``mmap.mmap`` would keep a duplicate descriptor open per mapping until
    3.13: a caller holding a thousand returned arrays would run out of them.)
    ``dontfork``: a child forked later does not inherit the mapping (it would
    keep the segment's memory after we close it); nor does it unmap, where
    something else of its own may be mapped by then.
    """
    import ctypes

    libc = _c()
    address = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, flags, fd, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mmap of a shared buffer failed: {os.strerror(errno)}")
    base = (ctypes.c_char * size).from_address(address)
    if dontfork and _advise(address, size, MADV_DONTFORK):
        weakref.finalize(base, _unmap_in, os.getpid(), address, size)
    else:
        weakref.finalize(base, libc.munmap, address, size)
    return base, address


def _unmap_in(pid: int, address: int, size: int) -> None:
    if os.getpid() == pid:
        _c().munmap(address, size)


def _advise(address: int, size: int, advice: int) -> bool:
    return bool(_c().madvise(address, size, advice) == 0)


def _view(base: Any, nbytes: int) -> Any:
    """A new buffer object over the first ``nbytes`` of ``base`` (keeps ``base`` alive)."""
    import ctypes

    return (ctypes.c_char * nbytes).from_buffer(base)


def map_buffers(refs: list[BufferRef]) -> list[Any]:
    """Map each buffer (copies privately, shared arrays shared); ``OSError`` if its sender is gone.

    Pass the result as ``pickle.loads(data, buffers=...)``.  The caller maps
    results this way: each array it gets owns its mapping for as long as it lives.
    """
    maps = []
    for ref in refs:
        if ref.shared:
            maps.append(_shared_view(ref))
            continue
        fd = _open(ref)
        try:
            maps.append(_view(_map(fd, ref.size, mmap.MAP_PRIVATE)[0], ref.nbytes))
        finally:
            os.close(fd)
    return maps


def _shared_view(ref: BufferRef) -> memoryview:
    segment = attach(ref.pid, ref.fd, ref.inode, ref.size)
    if ref.nbytes >= THRESHOLD:
        # The task reads what it was sent: one call maps those pages, instead
        # of a page fault every few pages (about 15% of reading them, here).
        start = ref.offset // PAGE * PAGE
        try:
            segment.madvise(MADV_POPULATE_READ, start, ref.offset + ref.nbytes - start)
        except OSError:  # a kernel before 5.14: the pages fault in as they are read
            pass
    return memoryview(segment)[ref.offset : ref.offset + ref.nbytes]


def _open(ref: BufferRef) -> int:
    fd = os.open(f"/proc/{ref.pid}/fd/{ref.fd}", os.O_RDONLY | os.O_CLOEXEC)
    if os.fstat(fd).st_ino != ref.inode:
        os.close(fd)
        raise FileNotFoundError(f"shared buffer {ref.id} of pid {ref.pid} is gone")
    return fd


# -- the sending side -------------------------------------------------------------------


class _Segment:
    __slots__ = ("base", "fd", "id", "inode", "size", "view")

    def __init__(self, fd: int, segment_id: int, size: int) -> None:
        self.fd, self.id, self.size = fd, segment_id, size
        self.inode = os.fstat(fd).st_ino
        self.base: Any = None  # the mapping, when kept mapped for reuse
        self.view: memoryview | None = None  # its bytes


class Exporter:
    """The sending side: writes buffers into segments and keeps them until released.

    ``reuse``: keep released segments mapped, to rewrite (the caller's side,
    which sends many arrays); a worker returning results makes fresh ones.
    Shared arrays are lent, not copied: the exporter holds their segment until
    the receiver has mapped it.  Not thread-safe: one thread (the pool's
    master, or the worker) uses it.
    """

    def __init__(self, *, reuse: bool) -> None:
        self._reuse = reuse
        self._ids = itertools.count(1)
        self._lent: dict[int, _Segment] = {}
        self._held: dict[int, SharedMap] = {}  # shared arrays, by the id of their ref
        self._free: OrderedDict[int, _Segment] = OrderedDict()
        self._free_bytes = 0
        self._pid = os.getpid()
        self._closed = False  # then released segments are closed, not kept

    def export(self, buffers: list[memoryview]) -> list[BufferRef]:
        """Write (or lend) each buffer; lent out until :meth:`release`.

        ``OSError`` (no memory, no descriptors) leaves nothing lent.
        """
        refs: list[BufferRef] = []
        try:
            for raw in buffers:
                refs.append(self._export_one(raw))
        except OSError:
            self.release([ref.id for ref in refs])
            raise
        return refs

    def _export_one(self, raw: memoryview) -> BufferRef:
        span = shared_span(raw)
        if span is not None:
            shared, offset = span
            ref_id = next(self._ids)
            self._held[ref_id] = shared  # its descriptor stays open until the receiver maps it
            return BufferRef(
                self._pid, shared.fd, shared.inode, shared.length, ref_id, offset, raw.nbytes, True
            )
        segment = self._segment_for(raw.nbytes)
        self._lent[segment.id] = segment
        try:
            _fill(segment, raw)
        except OSError:
            self.release([segment.id])
            raise
        return BufferRef(
            self._pid, segment.fd, segment.inode, segment.size, segment.id, 0, raw.nbytes, False
        )

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
        if not self._reuse:  # written once with pwrite, the fastest way to fill new pages
            return _Segment(fd, next(self._ids), nbytes)
        segment = _Segment(fd, next(self._ids), -(-nbytes // PAGE) * PAGE)
        try:
            os.ftruncate(fd, segment.size)
            segment.base, address = _map(fd, segment.size, mmap.MAP_SHARED, dontfork=True)
            # Pre-faulting costs one call instead of a page fault per page
            # during the first copy.
            _advise(address, segment.size, MADV_POPULATE_WRITE)
            segment.view = memoryview(segment.base).cast("B")
        except BaseException:
            _close(segment)
            raise
        return segment

    def release(self, ids: list[int]) -> None:
        """The receiver no longer maps these segments: reuse them, or close them."""
        for segment_id in ids:
            if self._held.pop(segment_id, None) is not None:
                continue
            segment = self._lent.pop(segment_id, None)
            if segment is None:
                continue
            if not self._reuse or self._closed or segment.size > KEEP_BYTES:
                _close(segment)
                continue
            self._free[segment.id] = segment
            self._free_bytes += segment.size
            while self._free_bytes > KEEP_BYTES or len(self._free) > KEEP_SEGMENTS:
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
        self._held.clear()
        self._free_bytes = 0


def _fill(segment: _Segment, raw: memoryview) -> None:
    """Copy ``raw`` to the start of ``segment``."""
    if segment.view is None:
        written = 0
        while written < raw.nbytes:
            written += os.pwrite(segment.fd, raw[written:], written)
        return
    target = segment.view[: raw.nbytes]
    np = sys.modules.get("numpy")
    if np is not None:  # the same memcpy, with the GIL released while it runs
        np.copyto(np.frombuffer(target, dtype=np.uint8), np.frombuffer(raw, dtype=np.uint8))
    else:
        target[:] = raw


def _close(segment: _Segment) -> None:
    unregister_master_fd(segment.fd)
    if segment.view is not None:
        segment.view.release()
    segment.view = segment.base = None  # unmapped by the base's finalizer
    try:
        os.close(segment.fd)
    except OSError:  # already closed: nothing left to free
        pass


# -- the receiving side -----------------------------------------------------------------


class _Mapping:
    """A worker's private mapping of one of the caller's reused segments."""

    __slots__ = ("address", "base", "fd", "key", "size", "users")

    def __init__(self, base: Any, address: int, ref: BufferRef) -> None:
        self.base, self.address, self.size = base, address, ref.size
        self.fd, self.key = ref.fd, (ref.pid, ref.inode)
        self.users = 0  # buffers lent out over it (0 or 1: a segment is lent once at a time)


class Imported:
    """The receiving side: segments mapped here, released when nothing uses them.

    Mappings of reused segments are kept (see the module docstring), up to
    :data:`KEEP_MAPPED_BYTES`; a kept mapping whose segment the sender has closed
    is dropped within :data:`SWEEP_EVERY` seconds of the next release.
    """

    def __init__(self) -> None:
        self._lent: dict[int, tuple[Any, _Mapping]] = {}  # id -> (the buffer given out, mapping)
        self._shared: list[int] = []  # shared arrays mapped: released after their chunk
        self._kept: OrderedDict[tuple[int, int], _Mapping] = OrderedDict()
        self._kept_bytes = 0
        self._swept = time.monotonic()

    def map(self, refs: list[BufferRef]) -> list[Any]:
        """Map each buffer, remembering the mappings to release them later."""
        maps: list[Any] = []
        for ref in refs:
            if ref.shared:
                # This process now holds its own descriptor and mapping of the
                # array: the sender may let go as soon as this chunk is done.
                self._shared.append(ref.id)
                maps.append(_shared_view(ref))
                continue
            mapping = self._mapping(ref)
            view = _view(mapping.base, ref.nbytes)
            mapping.users += 1
            self._lent[ref.id] = (view, mapping)
            maps.append(view)
        return maps

    def _mapping(self, ref: BufferRef) -> _Mapping:
        kept = self._kept.get((ref.pid, ref.inode))
        if kept is not None and kept.size == ref.size:
            self._kept.move_to_end(kept.key)
            return kept
        if kept is not None:
            self._forget(kept)
        fd = _open(ref)
        try:
            mapping = _Mapping(*_map(fd, ref.size, mmap.MAP_PRIVATE), ref)
        finally:
            os.close(fd)
        if _pagemap_works():  # else used once, unmapped when released
            self._kept[mapping.key] = mapping
            self._kept_bytes += mapping.size
            self._trim()
        return mapping

    def release_unused(self) -> list[int]:
        """Release the segments no object uses any more; their ids (to tell the sender)."""
        released, self._shared = self._shared, []
        for segment_id in list(self._lent):
            # Every object built over a buffer holds a reference to it: unused
            # when only the dict's tuple (and getrefcount's argument) refer to it.
            if sys.getrefcount(self._lent[segment_id][0]) > 2:
                continue
            view, mapping = self._lent.pop(segment_id)
            nbytes = len(view)
            del view
            mapping.users -= 1
            if self._kept.get(mapping.key) is mapping and not _drop_private_pages(
                mapping.address, nbytes
            ):
                self._forget(mapping)
            released.append(segment_id)
        if self._kept and time.monotonic() - self._swept > SWEEP_EVERY:
            self._sweep()
        return released

    def _trim(self) -> None:
        for mapping in list(self._kept.values()):  # oldest first
            if self._kept_bytes <= KEEP_MAPPED_BYTES and len(self._kept) <= KEEP_SEGMENTS:
                return
            if not mapping.users:
                self._forget(mapping)

    def _sweep(self) -> None:
        """Drop kept mappings of segments the sender closed: they would pin its memory."""
        self._swept = time.monotonic()
        for mapping in list(self._kept.values()):
            if mapping.users:
                continue
            pid, inode = mapping.key
            try:
                alive = os.stat(f"/proc/{pid}/fd/{mapping.fd}").st_ino == inode
            except OSError:
                alive = False
            if not alive:
                self._forget(mapping)

    def _forget(self, mapping: _Mapping) -> None:
        # Unmapped once no buffer over it is left (each holds the base).
        if self._kept.get(mapping.key) is mapping:
            del self._kept[mapping.key]
            self._kept_bytes -= mapping.size


#: For each top byte of a pagemap entry (bits 56-63): 1 if the page is this
#: process's own copy, i.e. present but not a file page (bit 63 set, 61 clear),
#: or swapped out (bit 62: only anonymous pages are swapped from a page table).
_PRIVATE = bytes(1 if (b & 0xA0) == 0x80 or b & 0x40 else 0 for b in range(256))
_pagemap_ok: bool | None = None


def _private_pages(address: int, nbytes: int) -> bool:
    """Whether any page of ``[address, address + nbytes)`` is a private copy."""
    count = -(-nbytes // PAGE)
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        entries = os.pread(fd, count * 8, address // PAGE * 8)
    finally:
        os.close(fd)
    if len(entries) != count * 8:
        raise OSError(f"short read of /proc/self/pagemap: {len(entries)} of {count * 8} bytes")
    return b"\x01" in entries[7::8].translate(_PRIVATE)


def _drop_private_pages(address: int, nbytes: int) -> bool:
    """Drop the private copies a task made in a kept mapping; False if that cannot be done."""
    try:
        if _private_pages(address, nbytes):
            return _advise(address, -(-nbytes // PAGE) * PAGE, MADV_DONTNEED)
    except OSError:
        return False
    return True


def _pagemap_works() -> bool:
    """Whether this process can tell its private pages from shared ones (checked once).

    A kernel may hide pagemap or its flags; then a kept mapping could show a
    task's stale writes to the next task, so mappings are not kept at all.
    """
    global _pagemap_ok
    if _pagemap_ok is None:
        _pagemap_ok = False
        try:
            fd = os.memfd_create("workcrew-probe", os.MFD_CLOEXEC)
            try:
                os.pwrite(fd, b"\0" * PAGE, 0)
                base, address = _map(fd, PAGE, mmap.MAP_PRIVATE)
            finally:
                os.close(fd)
            _ = base[0]  # a read maps the file's page: shared
            shared_seen = not _private_pages(address, PAGE)
            base[0] = b"x"  # a write makes a private copy
            _pagemap_ok = shared_seen and _private_pages(address, PAGE)
        except OSError:
            pass
    return _pagemap_ok
