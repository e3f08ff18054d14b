"""Task functions for tests/test_worker_state.py: module level, so every start method imports them.

Worker state is counted through a log file in the test's tmp_path: every
initializer call appends ``init <token>``, every worker_exit call ``exit
<token>`` (appends of one short line are atomic, from any process).  The
token names the process, the thread and the call, so a state built twice is
seen twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import workcrew

#: Context variables as applications define them: at module level.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="anonymous")

UNSET = "unset"


def _append(log: str, line: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_log(log: Path) -> tuple[list[str], list[str]]:
    """The tokens of every ``init`` and every ``exit`` line, in order."""
    lines = log.read_text().splitlines() if log.exists() else []
    inits = [line.split()[1] for line in lines if line.startswith("init ")]
    exits = [line.split()[1] for line in lines if line.startswith("exit ")]
    return inits, exits


# -- worker state ----------------------------------------------------------------------


def open_state(log: str) -> dict[str, Any]:
    """An initializer: builds this worker's state (think: opens a connection)."""
    token = f"{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"
    _append(log, f"init {token}")
    return {"log": log, "token": token}


def close_state(state: dict[str, Any]) -> None:
    """A worker_exit: tears the state down (think: closes the connection)."""
    _append(state["log"], f"exit {state['token']}")


def close_state_then_fail(state: dict[str, Any]) -> None:
    close_state(state)
    raise RuntimeError(f"worker_exit refuses for {state['token']}")


async def aopen_state(log: str) -> dict[str, Any]:
    """An async initializer: awaited on the worker's event loop."""
    await asyncio.sleep(0)
    state = open_state(log)
    state["loop"] = id(asyncio.get_running_loop())
    return state


async def aclose_state(state: dict[str, Any]) -> None:
    """An async worker_exit: awaited on the loop the state was built on."""
    await asyncio.sleep(0)
    assert id(asyncio.get_running_loop()) == state["loop"], "worker_exit ran on another loop"
    close_state(state)


def token(_: object = None) -> tuple[str, str]:
    """(this worker's thread/process identity, the token of the state it sees)."""
    where = f"{os.getpid()}:{threading.get_ident()}"
    return where, workcrew.worker_state()["token"]


def process_token(_: object = None) -> tuple[int, str]:
    """(pid, token): the state of a hybrid worker is the process's."""
    return os.getpid(), workcrew.worker_state()["token"]


async def atoken(_: object = None) -> tuple[str, str]:
    await asyncio.sleep(0)
    return f"{os.getpid()}:{threading.get_ident()}", workcrew.worker_state()["token"]


def state_or_error(_: object = None) -> str:
    """worker_state(), or the message of the RuntimeError it raised."""
    try:
        return str(workcrew.worker_state())
    except RuntimeError as exc:
        return f"RuntimeError: {exc}"


async def astate_or_error(_: object = None) -> str:
    return state_or_error()


def die(_: object = None) -> None:
    os._exit(3)


# -- context variables --------------------------------------------------------------------


def read_request_id(_: object = None) -> str:
    return request_id.get(UNSET)


def read_both(_: object = None) -> tuple[str, str]:
    return request_id.get(UNSET), user.get()


async def aread_request_id(_: object = None) -> str:
    before = request_id.get(UNSET)
    await asyncio.sleep(0)  # still visible after the coroutine was suspended
    after = request_id.get(UNSET)
    assert before == after, (before, after)
    return after


def read_then_set(i: int) -> str:
    """The value this task was given, then a value of its own (which must not leak)."""
    seen = request_id.get(UNSET)
    request_id.set(f"set by task {i}")
    user.set(f"user of task {i}")
    return seen


async def aread_then_set(i: int) -> str:
    seen = request_id.get(UNSET)
    request_id.set(f"set by task {i}")
    await asyncio.sleep(0)
    return seen


def read_var(var: Any) -> Any:
    """The value of ``var`` (a context variable passed by a thread pool's caller)."""
    return var.get(UNSET)


def fail_with_request_id(_: object = None) -> None:
    raise ValueError(f"failed in request {request_id.get(UNSET)}")


#: A module-level variable whose values in the tests do not pickle (a lock).
handle: contextvars.ContextVar[object] = contextvars.ContextVar("handle")

#: What remember_exit saw (thread kind: the same process as the test).
EXITS: list[object] = []


def remember_exit(state: object) -> None:
    EXITS.append(state)


def read_handle(_: object = None) -> str:
    value = handle.get(UNSET)
    return value if isinstance(value, str) else type(value).__name__


async def await_forever(_: object = None) -> None:
    await asyncio.Event().wait()


def decimal_precision(_: object = None) -> int:
    import decimal

    return decimal.getcontext().prec
