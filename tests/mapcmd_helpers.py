"""Functions for ``workcrew map`` tests: importable by name from worker processes."""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any


def shout(line: str) -> str:
    """The line in capitals; refuses the line "bad"."""
    if line == "bad":
        raise ValueError(f"bad input {line!r}")
    return line.upper()


def double(value: Any) -> Any:
    return value * 2


def where(_: Any) -> dict[str, bool]:
    """Whether the call ran in a child process, and on its main thread."""
    return {
        "child": multiprocessing.parent_process() is not None,
        "main_thread": threading.current_thread() is threading.main_thread(),
    }


def a_set(_: Any) -> set[int]:
    return {1, 2}


def not_a_number(_: Any) -> float:
    return float("nan")


def block_on(path: str) -> str:
    """Block until someone writes to the FIFO at ``path``; for the timeout test."""
    with open(path) as fifo:
        return fifo.read()


def crash(code: int) -> str:
    """Ends the worker process with ``code`` (not 0) at once."""
    if code:
        os._exit(code)
    return "survived"


async def anap(value: Any) -> Any:
    return value


def chatty(line: str) -> str:
    """Prints, writes to fd 1 and starts a program that prints: none of it is a record."""
    import os
    import subprocess
    import sys

    print(f"printed {line}", flush=True)
    os.write(1, f"fd1 {line}\n".encode())
    subprocess.run([sys.executable, "-c", f"print('child {line}')"], check=True)
    return line.upper()
