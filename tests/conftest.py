"""Shared fixtures: worker kinds x start methods, and the leak check every test runs under."""

from __future__ import annotations

import faulthandler
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import no_leaks_around

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


@pytest.fixture(scope="session", autouse=True)
def process_wide_singletons() -> None:
    """Make, before any test, what a library keeps for the rest of the process.

    libuv (under uvloop, the async kind's loop when installed) opens a signal
    pipe with its first event loop and keeps it; multiprocessing keeps the
    first arena of its heap (where ``Value`` and ``Array`` live) open in
    /dev/shm.  Made here, they are open before every test, so the leak check
    does not blame whichever test first needs them.
    """
    import multiprocessing

    multiprocessing.get_context("fork").Value("i", 0)
    try:
        import uvloop
    except ImportError:
        return
    uvloop.new_event_loop().close()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process, a thread, a descriptor or shared memory behind."""
    with no_leaks_around():
        yield


@pytest.fixture(autouse=True)
def hang_dump_before_the_test_s_own_timeout(request: pytest.FixtureRequest) -> None:
    """Dump every stack shortly before a long test's own timeout, not at the default's.

    pytest's ``faulthandler_timeout`` (pyproject.toml) applies to every test: a test
    marked with a longer ``timeout`` (joblib's own suite, a cluster) would print a
    dump of a run that is not hung.  A process has one dump timer: this replaces the
    one pytest armed for the test, and pytest cancels it after the test.  The dump
    goes to the test's captured stderr, reported with the test if it then times out.
    """
    marker = request.node.get_closest_marker("timeout")
    default = float(request.config.getini("faulthandler_timeout") or 0)
    if marker is None or not marker.args or not default:
        return
    seconds = float(marker.args[0])
    if seconds - 10 > default:
        faulthandler.dump_traceback_later(seconds - 10, file=sys.stderr)


#: Test modules that open pages in a real browser (tests/browser.py).
BROWSER_MODULES = {"test_dashboard.py", "test_timeline_page.py"}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Install Chromium before any test runs, if a browser test will (outside test timeouts)."""
    if any(Path(str(item.fspath)).name in BROWSER_MODULES for item in session.items):
        from browser import chromium_path

        chromium_path()
