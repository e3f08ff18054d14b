"""Length-framed messages over a pipe, and the serialization rules of process workers.

Frame: an 8-byte little-endian payload length, a 1-byte tag, the payload.
The worker side reads and writes blocking; the master side never blocks:
:class:`FrameReader` assembles frames from whatever a non-blocking read gives,
:class:`FrameWriter` keeps what the pipe would not take yet.

Serialization (``_core/_pickling.py``): the standard pickle (protocol 5)
first, because it is the fastest; cloudpickle only when pickle refuses
(lambdas, closures, functions defined in ``__main__`` under spawn).  Functions
go through ``dumps_function``: importable functions by reference and the rest
by value, as cloudpickle pickles them (cloudpickle itself only where needed).
Large buffers (NumPy arrays) leave the pickle and go through shared memory,
named in the payload's sidecar (``_sharing/_buffers.py``).
"""

from __future__ import annotations

import errno
import itertools
import os
import pickle
import struct
import threading
from collections import deque

from .._core._pickling import dumps

TYPE_CHECKING = False  # a worker imports this module: no typing at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = ("FrameReader", "FrameWriter", "dumps", "read_frame", "write_frame")

HEADER = struct.Struct("<QB")
#: Most buffers one ``writev`` takes (far below any IOV_MAX); past it, one at a time.
WRITEV_BUFFERS = 64
#: A CHUNK payload starts with its sequence number, outside the pickle.
SEQ = struct.Struct("<Q")
#: A RESULT payload starts with the seconds the worker spent on the chunk,
#: from receiving it to having pickled its results (so the cost of moving
#: large arguments counts when chunks are sized).
DURATION = struct.Struct("<d")

#: CHUNK and RESULT payloads continue with a sidecar: its length, then (if
#: not 0) a pickled ``(released segment ids, out-of-band buffer refs)``; see
#: ``_sharing/_buffers.py``.  The pickle body follows.
SIDECAR = struct.Struct("<I")

# Tags, master -> worker
CHUNK, STOP, RELEASE = 1, 2, 3
# Tags, worker -> master (LOG: a log record, from any thread, at any time; see _output.py)
READY, RESULT, INIT_FAILED, LOAD_FAILED, LOG = 11, 12, 13, 14, 15

#: Bytes read from a pipe per system call on the master side.
READ_SIZE = 1 << 20


def pack_sidecar(released: list[int], refs: list[Any]) -> bytes:
    """The sidecar for a payload: segments the sender released, buffers it sends."""
    if not released and not refs:
        return SIDECAR.pack(0)
    blob = pickle.dumps((released, refs), protocol=5)
    return SIDECAR.pack(len(blob)) + blob


def unpack_sidecar(payload: Any, at: int) -> tuple[list[int], list[Any], int]:
    """(released ids, buffer refs, offset of the body) from a payload's sidecar at ``at``."""
    (length,) = SIDECAR.unpack_from(payload, at)
    at += SIDECAR.size
    if not length:
        return [], [], at
    released, refs = pickle.loads(memoryview(payload)[at : at + length])
    return released, refs, at + length


#: Held while a frame is written (worker side): threads of a task log while the
#: main thread writes results, and frames must never mix.  One lock per process
#: (only a worker writes frames), made anew in a forked child, where the thread
#: that held it does not exist.
_write_lock = threading.Lock()


def _new_write_lock() -> None:
    global _write_lock
    _write_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_write_lock)


def write_frame(fd: int, tag: int, *parts: bytes) -> None:
    """Write one whole frame, whose payload is ``parts`` joined, to a blocking fd.

    Header and parts go in one ``writev`` where the pipe takes them: the
    master, woken by the first byte, then finds the whole frame, where a
    header written alone would wake it for a read that finds half of one.
    """
    pending = deque(memoryview(p).cast("B") for p in parts)  # lengths in bytes
    pending.appendleft(memoryview(HEADER.pack(sum(v.nbytes for v in pending), tag)))
    with _write_lock:
        while pending:
            _writev_some(fd, pending)


def _writev_some(fd: int, pending: deque[memoryview]) -> None:
    """One ``writev`` of ``pending``'s first buffers; drops what it wrote from ``pending``.

    Whole buffers go (empty ones too), then the written part of one.  A
    non-blocking fd's BlockingIOError leaves ``pending`` as it was.
    """
    n = os.writev(fd, list(itertools.islice(pending, WRITEV_BUFFERS)))
    while pending and n >= pending[0].nbytes:
        n -= pending.popleft().nbytes
    if n:
        pending[0] = pending[0][n:]


def read_frame(fd: int) -> tuple[int, bytearray] | None:
    """Read one whole frame from a blocking fd; None on end of file."""
    header = _read_exact(fd, HEADER.size)
    if header is None:
        return None
    length, tag = HEADER.unpack(header)
    payload = _read_exact(fd, length)
    if payload is None:
        return None
    return tag, payload


def _read_exact(fd: int, n: int) -> bytearray | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        count = os.readv(fd, [view[got:]])
        if count == 0:
            return None
        got += count
    return buf


class FrameReader:
    """Assembles frames from a non-blocking fd (master side)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()

    def read(self) -> tuple[list[tuple[int, bytes]], bool]:
        """Every complete frame available now, and whether the writer closed the pipe."""
        eof = False
        while True:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:  # the worker is gone and so is its end
                if exc.errno in (errno.EBADF, errno.ECONNRESET):
                    eof = True
                    break
                raise
            if not data:
                eof = True
                break
            self._buf += data
            if len(data) < READ_SIZE:
                break
        return self._frames(), eof

    def _frames(self) -> list[tuple[int, bytes]]:
        frames = []
        buf, pos, size = self._buf, 0, HEADER.size
        while len(buf) - pos >= size:
            length, tag = HEADER.unpack_from(buf, pos)
            end = pos + size + length
            if len(buf) < end:
                break
            frames.append((tag, bytes(buf[pos + size : end])))
            pos = end
        if pos:
            del buf[:pos]
        return frames


class FrameWriter:
    """Queues frames for a non-blocking fd; writes as much as the pipe takes (master side)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending: deque[memoryview] = deque()

    @property
    def pending(self) -> bool:
        """True while some bytes wait for the pipe to drain."""
        return bool(self._pending)

    def send(self, tag: int, payload: bytes) -> None:
        """Queue a frame and write what fits now."""
        body = memoryview(payload).cast("B")
        self._pending.append(memoryview(HEADER.pack(body.nbytes, tag)))
        self._pending.append(body)
        self.flush()

    def flush(self) -> None:
        """Write queued bytes until the pipe is full; BrokenPipeError if the reader is gone.

        One ``writev`` takes a frame's header and payload together: every
        system call lets go of the GIL, and getting it back may wait for a
        busy thread of the caller's (up to the switch interval).
        """
        while self._pending:
            try:
                _writev_some(self.fd, self._pending)
            except BlockingIOError:
                return
