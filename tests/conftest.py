"""Shared fixtures: worker kinds x start methods, and the leak check every test runs under."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import TIMEOUT, helper_pids

#: (kind, start method) pairs every contract test runs under.
KINDS = [
    pytest.param(("thread", None), id="thread"),
    pytest.param(("process", "fork"), id="process-fork"),
    pytest.param(("process", "spawn"), id="process-spawn"),
    pytest.param(("process", "forkserver"), id="process-forkserver"),
]


@pytest.fixture(params=KINDS)
def pool_kw(request: pytest.FixtureRequest) -> dict[str, object]:
    """Keyword arguments selecting a worker kind and start method for Pool/Executor."""
    kind, method = request.param
    kw: dict[str, object] = {"kind": kind}
    if method is not None:
        kw["start_method"] = method
    return kw


@pytest.fixture(params=[*KINDS, pytest.param(("async", None), id="async")])
def any_kind_kw(request: pytest.FixtureRequest) -> dict[str, object]:
    """``pool_kw``'s kinds and start methods, plus ``kind="async"``.

    For contract tests whose work can be coroutines.  The async kind runs only
    coroutine functions, and the thread kind refuses them (process kinds run
    both), so such a test picks its task by kind, e.g.
    ``fn = helpers.async_square if kw["kind"] == "async" else helpers.square``.
    """
    kind, method = request.param
    kw: dict[str, object] = {"kind": kind}
    if method is not None:
        kw["start_method"] = method
    return kw


@pytest.fixture(params=["fork", "spawn", "forkserver"])
def start_method(request: pytest.FixtureRequest) -> str:
    """A process start method."""
    return str(request.param)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process or a thread behind."""
    me = psutil.Process()
    threads_before = set(threading.enumerate())
    children_before = {p.pid for p in me.children(recursive=True)}
    yield
    # Joining (not sleeping) gives a thread that is returning its last frame
    # the moment it needs; a real leak still fails after TIMEOUT.
    stray = [t for t in threading.enumerate() if t not in threads_before]
    for thread in stray:
        thread.join(TIMEOUT)
    alive = [t.name for t in stray if t.is_alive()]
    assert not alive, f"threads outlived the test: {alive}"
    helpers = helper_pids()
    children = [
        p
        for p in me.children(recursive=True)
        if p.pid not in children_before and p.pid not in helpers
    ]
    _, still = psutil.wait_procs(children, timeout=TIMEOUT)
    assert not still, f"child processes outlived the test: {[p.pid for p in still]}"
