"""What process workers print and log, delivered in the caller, whole lines tagged by worker.

Worker side (in the child, before the initializer runs):

* ``capture_stdio``: fd 1 and fd 2 become pipes to the master, and ``sys.stdout`` /
  ``sys.stderr`` line-buffered UTF-8 text over them, so every line leaves the
  worker when it ends.
* ``forward_logging``: the worker's loggers start with the caller's levels; the
  handlers a forked worker inherited are set aside (the caller's own handlers
  will write the record, once) and one handler sends each record, as a LOG
  frame on the result pipe, to the master.

Master side (on the master thread):

* ``LineForwarder`` reads one of those pipes without blocking and writes each
  complete line, with its tag, to the caller's *current* ``sys.stdout`` or
  ``sys.stderr`` in one ``write`` (captures, notebooks and redirections see it);
  a line without its newline waits for it, or for the worker's exit.
* ``load_record`` unpickles a record (on a decoder thread when its extras
  could run code, see ``_decoding.py``) and ``emit_record`` hands it to
  ``logging.getLogger(name).handle`` with ``worker_id`` and ``worker_pid``
  added: the caller's handlers, filters and formatters decide what is
  written, and where.

Both write in the master thread: a slow ``sys.stdout`` or handler slows the
pool down (workers wait on full pipes) but cannot deadlock it, as long as
neither waits for the pool's own results.  See docs/output.md.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import traceback
from collections import deque

from . import _wire

TYPE_CHECKING = False  # a worker imports this module: no typing at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = (
    "LogLevels",
    "LineForwarder",
    "caller_log_levels",
    "capture_stdio",
    "emit_record",
    "forward_logging",
    "line_prefix",
    "load_record",
)

#: A line longer than this (bytes) is forwarded in pieces of this size, so a
#: worker that never writes a newline cannot make the master hold unbounded data.
LINE_LIMIT = 1 << 20
#: Reads of a pipe per callback: a worker printing without pause must not keep
#: the master from its other pipes (the selector calls again while data is left).
READS_PER_CALL = 4
#: Read calls when a worker has exited: its pipe holds at most one pipe buffer
#: then, unless a process the worker started still writes to it.
FINAL_READS = 16

#: (explicit levels by logger name, "" for the root; ``logging.disable`` level)
LogLevels = tuple[dict[str, int], int]


def line_prefix(worker_id: int, worker_output: str) -> str:
    """The prefix of each line a worker writes: ``[worker 3] `` or nothing."""
    return f"[worker {worker_id}] " if worker_output == "tagged" else ""


# -- worker side ----------------------------------------------------------------------


def capture_stdio(stdout_fd: int, stderr_fd: int) -> None:
    """Point fd 1 and fd 2 at the master's pipes, with line-buffered text streams over them.

    New stream objects rather than the inherited ones: a forked child inherits
    the caller's ``sys.stdout``, which may not write to fd 1 at all (a test
    runner's capture, a notebook) or whose lock another thread held at the fork.
    """
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    sys.stdout = _line_stream(1)
    sys.stderr = _line_stream(2)


def _line_stream(fd: int) -> Any:
    # UTF-8 whatever the locale, so the master decodes what it reads the same way.
    return open(  # lives as long as the process
        fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )


#: Handlers a forked worker inherited from the caller, set aside but kept alive:
#: collecting them could close (and flush) files the caller still writes.
_SET_ASIDE: list[logging.Handler] = []


def forward_logging(result_fd: int, levels: LogLevels) -> None:
    """Send this process's log records to the master, filtered by the caller's levels.

    The sender sits on the root logger and on every logger that does not
    propagate, so each record is sent once, from the logger that would handle
    it; the caller handles it again from its own logger of that name.
    """
    sender = _RecordSender(result_fd)
    root = logging.getLogger()
    loggers = [root, *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        if not isinstance(logger, logging.Logger):
            continue  # a placeholder: no handlers, no level
        _SET_ASIDE.extend(logger.handlers)
        logger.handlers = []
        if not logger.propagate:
            logger.addHandler(sender)
    if sender not in root.handlers:
        root.addHandler(sender)
    named, disabled = levels
    for name, level in named.items():
        logging.getLogger(name).setLevel(level)
    logging.disable(disabled)


def caller_log_levels() -> LogLevels:
    """The caller's explicit logger levels and ``logging.disable`` level, for a new worker."""
    manager = logging.Logger.manager
    levels = {"": logging.getLogger().level}
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels, manager.disable


class _RecordSender(logging.Handler):
    """Writes each record as one LOG frame (under ``_wire``'s lock: threads never mix frames)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _wire.write_frame(self._fd, _wire.LOG, pickle_record(record))
        except Exception:  # noqa: BLE001 - logging's policy: report on stderr, never raise
            self.handleError(record)


_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def pickle_record(record: logging.LogRecord) -> bytes:
    """The record's attributes, pickled as ``QueueHandler.prepare`` would leave them.

    The message is merged (``msg`` is the final text, ``args`` None), an
    exception is formatted into ``exc_text`` (traceback objects do not pickle),
    and an ``extra`` value that does not pickle is sent as its ``repr``.
    """
    data = dict(record.__dict__)
    data["msg"] = record.getMessage()
    data["args"] = None
    if record.exc_info:
        if not data.get("exc_text"):
            data["exc_text"] = _FORMATTER.formatException(record.exc_info)
        data["exc_info"] = None
    data.pop("message", None)
    try:
        return pickle.dumps(data, protocol=5)
    except Exception:  # noqa: BLE001 - some extra attribute does not pickle: send its repr
        for key, value in data.items():
            if key not in _STANDARD and not _pickles(value):
                data[key] = repr(value)
        return pickle.dumps(data, protocol=5)


_FORMATTER = logging.Formatter()


def _pickles(value: object) -> bool:
    try:
        pickle.dumps(value, protocol=5)
    except Exception:  # noqa: BLE001 - any failure to pickle means: send it as text
        return False
    return True


# -- master side ----------------------------------------------------------------------


def load_record(payload: bytes, worker_id: int) -> dict[str, Any]:
    """A worker's record's attributes (any thread: unpickling may run code of its extras)."""
    try:
        data: dict[str, Any] = pickle.loads(payload)
    except BaseException as exc:  # noqa: BLE001 - e.g. an extra of a class the caller cannot import
        data = {
            "name": "workcrew",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": f"worker {worker_id} sent a log record that cannot be unpickled here: "
            f"{type(exc).__name__}: {exc}",
        }
    return data


def emit_record(data: dict[str, Any], worker_id: int, pid: int | None) -> None:
    """Handle a worker's record (see :func:`load_record`) with the caller's logger of its name."""
    record = logging.makeLogRecord(data)
    record.worker_id = worker_id
    record.worker_pid = pid
    try:
        logging.getLogger(record.name).handle(record)
    except BaseException:  # noqa: BLE001 - a handler of the caller's raised: report as logging does
        _report_handler_error()


def _report_handler_error() -> None:
    if logging.raiseExceptions and sys.stderr is not None:
        try:
            sys.stderr.write("--- Logging error in a record from a workcrew worker ---\n")
            traceback.print_exc(file=sys.stderr)
        except Exception:  # noqa: BLE001 - our stderr is gone too: nothing left to tell
            pass


class LineForwarder:
    """The master's end of a worker's stdout or stderr pipe (non-blocking).

    ``stream`` is ``"stdout"`` or ``"stderr"``: the attribute of :mod:`sys`
    looked up at every write.  With ``keep``, the last ``keep`` lines stay
    (untagged) for crash reports.
    """

    def __init__(self, fd: int, stream: str, prefix: str, keep: int = 0) -> None:
        self.fd = fd
        self.eof = False
        self.tail: deque[str] | None = deque(maxlen=keep) if keep else None
        self._stream = stream
        self._prefix = prefix
        self._partial = bytearray()

    def read(self, reads: int = READS_PER_CALL) -> int:
        """Forward the complete lines the pipe holds (at most ``reads`` reads); bytes read."""
        lines: list[bytes | bytearray] = []
        total = 0
        for _ in range(0 if self.eof else reads):
            try:
                data = os.read(self.fd, _wire.READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.eof = True
                break
            total += len(data)
            self._split(data, lines)
        if lines:
            self._forward(lines)
        return total

    def _split(self, data: bytes, lines: list[bytes | bytearray]) -> None:
        end = data.rfind(b"\n")
        if end < 0:
            self._partial += data
        else:
            self._partial += data[:end]
            lines.extend(self._partial.split(b"\n"))
            self._partial = bytearray(data[end + 1 :])
        while len(self._partial) > LINE_LIMIT:
            lines.append(bytes(self._partial[:LINE_LIMIT]))
            del self._partial[:LINE_LIMIT]

    def finish(self) -> None:
        """The worker is gone: forward what is left, an unfinished last line included."""
        for _ in range(FINAL_READS):
            if self.eof or not self.read():
                break  # all read (or a child of the worker holds the pipe and writes on)
        if self._partial:
            last, self._partial = bytes(self._partial), bytearray()
            self._forward([last])

    def partial(self, limit: int = 4096) -> str:
        """The end (``limit`` bytes) of the unfinished last line, if any."""
        return self._partial[-limit:].decode(errors="replace")

    def _forward(self, raw: list[bytes | bytearray]) -> None:
        lines = [line.decode(errors="replace") for line in raw]
        if self.tail is not None:
            self.tail.extend(lines)
        stream = getattr(sys, self._stream, None)
        if stream is None:
            return  # no stdout at all (pythonw, a daemon): nothing to write to
        try:
            for line in lines:
                _write_line(stream, f"{self._prefix}{line}\n")
            stream.flush()  # the caller sees worker lines as they come, even through a pipe
        except BaseException:  # noqa: BLE001 - the caller closed or broke its stream: the
            pass  # lines cannot be shown; the pool must go on (stderr's tail is still kept)


def _write_line(stream: Any, text: str) -> None:
    try:
        stream.write(text)
    except UnicodeEncodeError:  # the caller's stream cannot encode some character
        encoding = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
