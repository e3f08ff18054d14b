"""Unpickling what process workers send, off the master thread when it may be slow.

Unpickling runs code of the task's own types (``__reduce__``, ``__setstate__``,
an exception's constructor), which may take any time.  On the master thread
such a result would hold back every other worker's results, every timeout and
all new work.  So a message is unpickled on a *decoder thread* unless it is proved cheap: a
small pickle that names no global can call no code (the unpickler builds only
built-in objects), and costs well under a millisecond.  A result is first
unpickled on the master thread by :func:`loads_plain`, whose unpickler stops
at the first global it meets (before anything of it runs) and hands the
message to a decoder; other messages are judged by :func:`needs_decoder`'s
byte scan.  Results of plain numbers, strings, lists and dicts stay on the
fast path; instances of classes, exceptions and large payloads move.

Order: each worker's messages are handed to the master in the order the worker
wrote them (:class:`InOrder`), because the master matches results to chunks
by order and a worker's exit must be reported after its last result.  While
one message of a worker is being decoded, its later messages wait for it (they
are already read off the pipe, so the worker is never blocked); other workers'
messages do not.

Limit: the C unpickler holds the GIL while it builds built-in objects, so a
result of hundreds of megabytes of small objects still slows the whole caller
while it is rebuilt; large arrays avoid that (they travel as shared memory).
"""

from __future__ import annotations

import copyreg
import io
import pickle
import threading
from collections import deque
from collections.abc import Callable
from functools import partial

from .._core._backend import Loop

TYPE_CHECKING = False  # typing's names for checkers only (no typing at run time)
if TYPE_CHECKING:
    from typing import Any

__all__ = ("INLINE_LIMIT", "Decoders", "InOrder", "NeedsDecoder", "loads_plain", "needs_decoder")

#: Pickles up to this size that call no code are unpickled on the master thread.
INLINE_LIMIT = 64 * 1024

# Opcodes through which a pickle reaches a callable or a class: STACK_GLOBAL
# and the copyreg extension codes EXT1, EXT2, EXT4.  Without one of them the
# unpickler can build only built-in objects.  (GLOBAL, INST and OBJ exist only
# in protocols 0 to 3; workers pickle with protocol 5 or 4.)  A byte equal to
# one of these inside data is a false alarm, never a miss.
_CODE_OPCODES = (b"\x93", b"\x82", b"\x83", b"\x84")

#: Work for the master thread, made by a decoder: reports a decoded message.
Delivery = Callable[[], None]
#: Decodes one message (on any thread) and says how to report it.
Decode = Callable[[], Delivery]


def needs_decoder(payload: bytes, at: int) -> bool:
    """Whether the pickle in ``payload[at:]`` may run code or is large (so: decode elsewhere)."""
    if len(payload) - at > INLINE_LIMIT:
        return True
    return any(payload.find(opcode, at) >= 0 for opcode in _CODE_OPCODES)


class NeedsDecoder(Exception):
    """Raised by a first try on the master thread: this message goes to a decoder thread."""


class _PlainUnpickler(pickle.Unpickler):
    """Builds built-in objects only: the first global (class, function) stops it."""

    def find_class(self, module: str, name: str, /) -> Any:
        raise NeedsDecoder(f"{module}.{name}")


def loads_plain(data: Any, buffers: list[Any] | None = None) -> Any:
    """``pickle.loads(data)`` if that runs no code, else NeedsDecoder, having run none.

    Code is reached through a global only: ``find_class`` is called for each
    before it is used, and here it refuses.  (Byte scans cannot tell: the
    opcode of a global is a common byte in the data of numbers.)  copyreg's
    extension codes reach objects without it once resolved: while any is
    registered, every pickle goes to a decoder.
    """
    if copyreg._extension_registry:  # type: ignore[attr-defined]  # copyreg's registry, public in all but name
        raise NeedsDecoder("copyreg extension codes are registered")
    return _PlainUnpickler(io.BytesIO(data), buffers=buffers).load()


class Decoders:
    """Daemon threads that run decodes; a decode never waits for another one.

    A thread is started whenever no idle one is left, so there are at most as
    many as decodes ever ran at once (at most one per worker, see
    :class:`InOrder`).  They are daemons: a task's ``__setstate__`` that never
    returns cannot keep the interpreter from exiting.
    """

    #: Seconds :meth:`close` waits for each idle thread to end.
    JOIN_TIMEOUT = 5.0

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._work: deque[Callable[[], None]] = deque()
        # Threads waiting for work that no submit has claimed yet.  A submit
        # claims one (decrements) before notifying, so two submits never
        # count on the same idle thread.
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on a decoder thread now (``fn`` must not raise)."""
        with self._cond:
            self._work.append(fn)
            if self._idle:
                self._idle -= 1
                self._cond.notify()
                return
            thread = threading.Thread(
                target=self._run, name=f"workcrew-decoder-{len(self._threads) + 1}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._work:
                    if self._closed:
                        return
                    self._idle += 1
                    self._cond.wait()
                    # Whoever woke us took us off the idle count; if another
                    # thread took the work meanwhile, we count ourselves again.
                fn = self._work.popleft()
            fn()
            del fn  # nothing of a finished decode is kept while waiting

    def close(self) -> None:
        """Let every thread end once the work queued so far is done, and join them."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(self.JOIN_TIMEOUT)


class InOrder:
    """One worker's messages, decoded wherever fits and reported in the order they came.

    Master thread only, except the decode itself.  Invariant: at most one of
    this worker's messages is on a decoder thread (``_away``), and every
    message behind it waits in ``_queue``, even one cheap enough to decode here.
    """

    def __init__(self, loop: Loop, decoders: Decoders) -> None:
        self._loop = loop
        self._decoders = decoders
        self._queue: deque[tuple[Decode, bool, bool, Decode | None]] = deque()
        self._away = False
        #: answers to chunks (results, load failures) received and not yet reported
        self.answers = 0
        self._then: Callable[[], None] | None = None

    @property
    def idle(self) -> bool:
        """True when every message received so far has been reported."""
        return not self._away and not self._queue

    def add(
        self, decode: Decode, *, offload: bool, answer: bool = False, plain: Decode | None = None
    ) -> None:
        """Report a message after those before it; decode it on a decoder thread if ``offload``.

        ``plain``, if given, is tried first on the master thread: it raises
        :class:`NeedsDecoder` (having run no code of the message) when the
        message must go to a decoder thread after all.
        """
        if answer:
            self.answers += 1
        if not offload and self.idle:  # the common case: nothing to wait for
            delivery = _here(decode, plain)
            if delivery is not None:
                self._deliver(delivery, answer)
                return
            offload = True
        self._queue.append((decode, offload, answer, plain))
        if not self._away:
            self._drain()

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (master thread) once every message so far has been reported."""
        if self.idle:
            callback()
        else:
            self._then = callback

    def _deliver(self, delivery: Delivery, answer: bool) -> None:
        if answer:
            self.answers -= 1
        delivery()

    def _drain(self) -> None:
        while self._queue and not self._away:
            decode, offload, answer, plain = self._queue.popleft()
            delivery = None if offload else _here(decode, plain)
            if delivery is None:
                self._away = True
                self._decoders.submit(partial(self._decode_away, [decode], answer))
                return
            self._deliver(delivery, answer)
        if self._then is not None and self.idle:
            then, self._then = self._then, None
            then()

    def _decode_away(self, box: list[Decode], answer: bool) -> None:
        # Decoder thread.  A decode reports its own errors as a delivery; one
        # that escapes anyway is raised on the master thread, as it would
        # have been had the message been decoded there.  The message comes in
        # a box emptied here, and this thread lets go of the payload and the
        # result before the master sees them: once the caller drops a result
        # (it may be hundreds of megabytes), nothing here keeps it alive.
        decode = box.pop()
        try:
            delivery = decode()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the master thread
            delivery = partial(_reraise, exc)
        del decode
        self._loop.call_soon_threadsafe(partial(self._back, delivery, answer))
        del delivery

    def _back(self, delivery: Delivery, answer: bool) -> None:
        self._away = False
        try:
            self._deliver(delivery, answer)
        finally:  # a delivery that raises must not strand the messages behind it
            self._drain()


def _here(decode: Decode, plain: Decode | None) -> Delivery | None:
    """Decode on this (the master) thread; None if ``plain`` finds it needs a decoder.

    (A delivery is always a callable, never None.)
    """
    if plain is None:
        return decode()
    try:
        return plain()
    except NeedsDecoder:
        return None


def _reraise(exc: BaseException) -> None:
    raise exc
