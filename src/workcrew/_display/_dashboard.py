"""The live dashboard: one page on 127.0.0.1 showing every pool of this process
opened with ``dashboard=True`` (docs/dashboard.md).

A :class:`Board` is an HTTP server (the standard library's: two routes, a page
and its JSON, need no framework) on a free port of 127.0.0.1, serving in one
thread, ``workcrew-dashboard``; a request is answered in a short-lived thread
of its own.  It starts with the first pool that asks for it and stops when the
last one leaves (its ``join()`` or ``terminate()``), so a program without a
dashboard pays nothing, and one with it keeps no thread or socket after its
pools.

Safety: every request must carry the board's token (``?token=``, 32 random
bytes, compared in constant time); without it the answer is 403 with an empty
body.  The page is read-only: nothing it sends can change a pool.  What it
shows of tasks is their ``repr``, shortened (the same text as error
messages), never the objects.  Its content-security policy forbids loading
anything from elsewhere (the page's script and style are inline).

What the board reads of a pool, its *source* (the pool's engine, by duck typing:
this layer imports nothing of the engine): ``statistics()`` (a
``PoolStatistics``), ``live()`` (the live views by worker kind, see
``_core/_live.py``) and ``accepting``; and for each map its tally (``done``,
``failed``), its length, and whether it has finished.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ._dashboard_page import PAGE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("Board", "BoardEntry", "attach", "detach")

_log = logging.getLogger("workcrew")

#: History samples kept per pool (one a second), maps kept per pool.
HISTORY = 300
MAPS = 20
#: Seconds a request may stall before its thread gives up on it; connections open at once.
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 16
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:"
    ),
}


class _Map:
    __slots__ = ("desc", "finished", "finished_at", "id", "started", "tally", "total")

    def __init__(
        self, map_id: int, desc: str, tally: Any, total: int | None, finished: Callable[[], bool]
    ) -> None:
        self.id, self.desc, self.tally, self.total = map_id, desc, tally, total
        self.finished = finished  # must not keep the map's results alive (a weak method)
        self.started = time.monotonic()
        self.finished_at: float | None = None

    def finish(self) -> None:
        """The map ended (its future's done callback, any thread)."""
        if self.finished_at is None:
            self.finished_at = time.monotonic()

    def state(self, now: float) -> dict[str, Any]:
        done, failed = self.tally.done, self.tally.failed
        if self.finished_at is None and self.finished():
            self.finished_at = now
        elapsed = (self.finished_at or now) - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = None
        if self.total is not None and rate > 0 and self.finished_at is None:
            eta = max(0.0, (self.total - done) / rate)
        return {
            "id": self.id,
            "desc": self.desc,
            "done": done,
            "failed": failed,
            "total": self.total,
            "rate": rate,
            "eta": eta,
            "elapsed": elapsed,
            "finished": self.finished_at is not None,
        }


class BoardEntry:
    """One pool on the board: what it reads of the pool, and what it keeps of its past."""

    def __init__(self, entry_id: int, name: str, kind: str, source: Any) -> None:
        self.id, self.name, self.kind = entry_id, name, kind
        self._source = source  # the pool's engine (see the module doc)
        #: False for pools whose calls are parts of a larger job (a Pipeline's stages)
        self.show_calls = True
        self.history: deque[dict[str, float]] = deque(maxlen=HISTORY)
        self._maps: deque[_Map] = deque(maxlen=MAPS)  # under _lock: callers add, the board reads
        self._map_ids = 0
        self._lock = threading.Lock()
        self.board: Board | None = None

    def add_map(
        self, desc: str, tally: Any, total: int | None, finished: Callable[[], bool] = bool
    ) -> _Map:
        """Show a map's progress: ``tally`` counts its outcomes (``done``, ``failed``).

        ``finished()`` says whether it ended, unless the caller calls ``finish()`` on the
        returned record; it must not keep the map's results alive.
        """
        with self._lock:
            self._map_ids += 1
            record = _Map(self._map_ids, desc, tally, total, finished)
            self._maps.append(record)
        return record

    def sample(self) -> None:
        stats = self._source.statistics()
        self.history.append(
            {
                "t": stats.uptime_seconds,
                "done": stats.tasks_done,
                "queued": stats.queued,
                "in_flight": stats.in_flight,
            }
        )

    def state(self, now: float) -> dict[str, Any]:
        stats, views = self._source.statistics(), self._source.live()
        labelled = self.kind == "auto"  # several kinds: worker ids repeat, so name them

        def label(kind: str, worker_id: int) -> int | str:
            return f"{kind}-{worker_id}" if labelled else worker_id

        running: dict[tuple[str, int], dict[str, Any]] = {}
        ready: set[tuple[str, int]] = set()
        spans, failures, slowest = [], [], []
        # kind="auto": one engine per kind, each timing from its own start; the earliest is 0
        origin = min((view["origin"] for _, view in views), default=0.0)
        for kind, view in views:
            shift = view["origin"] - origin
            running.update({(kind, w): r for w, r in view["running"].items()})
            ready.update((kind, w) for w in view["ready"])
            for span in view["timeline"]["spans"]:
                placed = {"start": span["start"] + shift, "end": span["end"] + shift}
                spans.append({**span, "worker": label(kind, span["worker"]), **placed})
            failures += [
                {**f, "worker": label(kind, f["worker"]), "t": f["t"] + shift}
                for f in view["failures"]
            ]
            slowest += [{**s, "worker": label(kind, s["worker"])} for s in view["slowest"]]
        window = _window(views, origin, stats.uptime_seconds)
        with self._lock:
            maps = list(self._maps)
        workers = [self._worker(w, running, ready, label) for w in stats.workers]
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "state": "running" if self._source.accepting else "closing",
            "uptime": stats.uptime_seconds,
            "totals": {
                "done": stats.tasks_done,
                "failed": stats.tasks_failed,
                "queued": stats.queued,
                "in_flight": stats.in_flight,
                "throughput": stats.throughput,
                "workers_started": stats.workers_started,
                "restarts": stats.restarts,
                "crashes": stats.crashes,
            },
            "workers": workers,
            "maps": [m.state(now) for m in maps],
            "history": list(self.history),
            "timeline": {"start": window["start"], "end": window["end"], "spans": spans},
            "failures": sorted(failures, key=lambda f: f["t"]),
            "slowest": sorted(slowest, key=lambda s: -s["seconds"])[:10],
        }

    @staticmethod
    def _worker(
        w: Any,
        running: dict[tuple[str, int], dict[str, Any]],
        ready: set[tuple[str, int]],
        label: Callable[[str, int], int | str],
    ) -> dict[str, Any]:
        key = (w.kind, w.worker_id)
        task = running.get(key) if w.exit == "running" else None
        if w.exit != "running":
            state = w.exit  # stopped, crashed, killed
        elif task is not None:
            state = "running"
        else:
            state = "idle" if key in ready else "starting"
        return {
            "id": label(w.kind, w.worker_id),
            "kind": w.kind,
            "pid": w.pid,
            "state": state,
            "task": task["task"] if task else None,
            "running_for": task["for"] if task else None,
            "tasks": w.tasks,
            "failed": w.failed,
            "memory": w.peak_memory,
        }


def _window(
    views: list[tuple[str, dict[str, Any]]], origin: float, uptime: float
) -> dict[str, float]:
    """The timeline's window over every kind's views, in seconds since ``origin``."""
    ends = [view["timeline"]["end"] + view["origin"] - origin for _, view in views]
    end = max(ends, default=uptime)
    widths = [view["timeline"]["end"] - view["timeline"]["start"] for _, view in views]
    return {"start": max(0.0, end - max(widths, default=end)), "end": end}


class Board:
    """The HTTP server and the pools it shows (see the module doc)."""

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(32)
        self._lock = threading.Lock()
        self._entries: dict[int, BoardEntry] = {}
        self._ids = 0
        self._sampled = 0.0
        self._server = _Server(self)
        self.url = f"http://127.0.0.1:{self._server.server_port}/?token={self.token}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.25},
            name="workcrew-dashboard",
            daemon=True,  # a pool never closed must not keep the program alive
        )
        self._thread.start()

    def add(self, name: str, kind: str, source: Any) -> BoardEntry:
        """Show a pool, named ``name`` and its number on this board."""
        with self._lock:
            self._ids += 1
            entry = BoardEntry(self._ids, f"{name} {self._ids}", kind, source)
            self._entries[self._ids] = entry
            entry.board = self
        return entry

    def remove(self, entry: BoardEntry) -> bool:
        """Drop a pool; True when none is left."""
        with self._lock:
            self._entries.pop(entry.id, None)
            return not self._entries

    def entries(self) -> list[BoardEntry]:
        with self._lock:
            return list(self._entries.values())

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"version": 1, "pools": [entry.state(now) for entry in self.entries()]}

    def sample(self) -> None:
        """The server thread, between requests: one history sample per pool a second."""
        now = time.monotonic()
        if now - self._sampled >= 1.0:
            self._sampled = now
            for entry in self.entries():
                entry.sample()

    def authorized(self, path: str) -> bool:
        given = parse_qs(urlsplit(path).query).get("token", [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def stop(self) -> None:
        """Stop serving and end every open connection (any thread but the board's own)."""
        self._server.shutdown()  # returns once serve_forever has
        self._server.server_close()
        self._server.close_connections()  # their threads end at once (a stalled client too)
        self._thread.join()

    def forget_in_child(self) -> None:
        """A forked child: close the inherited listening socket (the parent serves)."""
        self._server.socket.close()


class _Server(ThreadingHTTPServer):
    """Request threads are daemons and never joined: a stalled client, or a task's
    ``__repr__`` that never returns, must not hold up a pool's ``join()``.  ``stop``
    shuts their connections instead; at most ``MAX_CONNECTIONS`` are open at once."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, board: Board) -> None:
        self.board = board
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._open_lock:
            if len(self._open) >= MAX_CONNECTIONS:
                return False  # closed unanswered
            self._open.add(request)
        return True

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            connections, self._open = list(self._open), set()
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its thread
                connection.shutdown(socket.SHUT_RDWR)

    def service_actions(self) -> None:
        _in_board.active = True  # see detach
        try:
            self.board.sample()
        except Exception:  # noqa: BLE001 - a pool's statistics failing must not stop the page
            _log.debug("dashboard: sampling failed", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Anything refused before the token is checked (a bad request, another method): 403."""
        self._send(403, b"", "text/plain")

    def do_GET(self) -> None:
        _in_board.active = True  # see detach
        board = self.server.board
        if not board.authorized(self.path):
            self._send(403, b"", "text/plain")
            return
        route = urlsplit(self.path).path
        if route == "/":
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        elif route == "/api/state":
            try:
                body = json.dumps(board.state(), default=str, allow_nan=False).encode()
            except BaseException:  # noqa: BLE001 - a pool's state failing must not kill the page
                _log.debug("dashboard: the state failed", exc_info=True)
                self._send(500, b"", "text/plain")
                return
            self._send(200, body, "application/json")
        else:
            self._send(404, b"", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (the page polls twice a second)."""


_board: Board | None = None
_board_lock = threading.Lock()
#: ``active`` is set in the board's own threads (the server's and the requests')
_in_board = threading.local()


def attach(name: str, kind: str, source: Any) -> BoardEntry:
    """Show a pool (``source``: its engine) on this process's board, starting the board
    (and logging its address)."""
    global _board
    with _board_lock:  # held while adding: detach must not stop the board in between
        started = _board is None
        if _board is None:
            _board = Board()
        board = _board
        entry = board.add(name, kind, source)
    if started:
        _log.warning("dashboard: %s", board.url)
    entry.sample()
    return entry


def detach(entry: BoardEntry) -> None:
    """Take a pool off its board; the board stops when it shows no pool."""
    global _board
    board = entry.board
    if board is None:
        return
    entry.board = None
    with _board_lock:
        if not board.remove(entry) or _board is not board:
            return
        _board = None
    if getattr(_in_board, "active", False):
        # A pool collected by the garbage collector in one of the board's own
        # threads: stop() waits for those threads, so it runs in another.
        threading.Thread(target=board.stop, name="workcrew-dashboard-stop", daemon=True).start()
    else:
        board.stop()


def _after_fork_in_child() -> None:
    global _board, _board_lock
    _board_lock = threading.Lock()
    if _board is not None:
        _board.forget_in_child()
        _board = None


os.register_at_fork(after_in_child=_after_fork_in_child)
