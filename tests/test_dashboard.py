"""The live dashboard (docs/dashboard.md): what a person sees in a real browser, the
token, loopback only, and no cost without it.

Browser tests drive Debian's Chromium through Playwright (tests/browser.py).  Each
waits for what the page shows (Playwright's bounded waits), never for time.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

import workcrew
from browser import browser_page
from dashboard_helpers import fetch, pass_or_wait, state, wait_for
from helpers import TIMEOUT, fail_on, make_gates, release_fifo, segfault, signal_then_wait, square

SRC = str(Path(__file__).resolve().parent.parent / "src")


def test_the_page_shows_workers_progress_failures_and_a_crash(
    start_method: str, tmp_path: Path
) -> None:
    started, gate = make_gates(tmp_path)
    later = [str(tmp_path / f"item{i}") for i in range(3)]
    for path in later:
        os.mkfifo(path)
    # The browser first: the pool (and any worker it forks, which inherits the
    # browser driver's pipes under fork) ends before the browser is closed.
    with (
        browser_page() as page,
        workcrew.Pool(2, start_method=start_method, dashboard=True) as pool,
    ):
        assert pool.dashboard_url is not None
        page.goto(pool.dashboard_url)
        # A worker running a task, shown with the task's call.
        blocked = pool.apply_async(signal_then_wait, (started, gate))
        assert release_fifo_read(started) == "started"
        running = wait_for(page, 'tr.worker[data-state="running"] td.task')
        assert "signal_then_wait" in running.text_content()
        release_fifo(gate)
        assert blocked.get(TIMEOUT) == "go"
        # A map's bar advances: five items done, then all eight.
        items = [None] * 5 + later
        mapped = pool.map_async(pass_or_wait, items, chunksize=1)
        wait_for(page, '.map[data-done="5"][data-total="8"][data-finished="false"]')
        for path in later:
            release_fifo(path)
        assert mapped.get(TIMEOUT) == ["free"] * 5 + ["go"] * 3
        wait_for(page, '.map[data-done="8"][data-total="8"][data-finished="true"]')
        # A failure, with its traceback.
        with pytest.raises(ValueError, match="bad input 3"):
            pool.apply(fail_on, (3,))
        failure = wait_for(page, '.failure[data-crash="false"]')
        assert "ValueError: bad input 3" in failure.query_selector(".error").text_content()
        assert "fail_on" in failure.query_selector("pre.traceback").text_content()
        # A worker that crashes: its row says so, and the crash report is listed.
        with pytest.raises(workcrew.WorkerCrashed):
            pool.apply(segfault)
        wait_for(page, 'tr.worker[data-state="crashed"]')
        crash = wait_for(page, '.failure[data-crash="true"]')
        assert "segfault" in crash.text_content()
        # The picture a person sees: a real PNG of the window, not a blank one.
        shot = page.screenshot()
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(shot[16:20], "big") == 1280  # IHDR width
        assert pool.map(square, range(4)) == [0, 1, 4, 9]  # the pool works on


def release_fifo_read(path: str) -> str:
    """Read the FIFO a task writes to say it started."""
    with open(path) as fifo:
        return fifo.read()


def test_a_worker_killed_for_its_timeout_shows_as_killed(start_method: str, tmp_path: Path) -> None:
    never = str(tmp_path / "never")
    os.mkfifo(never)  # nobody writes it: the task waits until its timeout kills it
    with workcrew.Pool(1, start_method=start_method, task_timeout=1, dashboard=True) as pool:
        assert pool.dashboard_url is not None
        with pytest.raises(workcrew.TaskTimeout):
            pool.apply(pass_or_wait, (never,))
        [board] = state(pool.dashboard_url)["pools"]
        states = [w["state"] for w in board["workers"]]
        assert states[0] == "killed"
        [failure] = board["failures"]
        assert "TaskTimeout" in failure["error"] and "pass_or_wait" in failure["task"]
        assert pool.apply(square, (3,)) == 9  # a new worker took its place


def test_the_page_reports_a_lost_connection_when_the_pool_ends() -> None:
    with browser_page() as page:
        with workcrew.Pool(1, kind="thread", dashboard=True) as pool:
            assert pool.dashboard_url is not None
            page.goto(pool.dashboard_url)
            assert pool.map(square, range(3)) == [0, 1, 4]
            wait_for(page, '.map[data-done="3"][data-finished="true"]')
        wait_for(page, "#status.error")


def test_one_page_shows_every_pool_and_stops_with_the_last() -> None:
    with workcrew.Pool(2, kind="thread", dashboard=True) as first:
        executor = workcrew.Executor(2, kind="thread", dashboard=True)
        url = first.dashboard_url
        assert url is not None and executor.dashboard_url == url
        assert list(executor.map(square, range(5))) == [0, 1, 4, 9, 16]
        pools = state(url)["pools"]
        assert [p["name"] for p in pools] == ["Pool 1", "Executor 2"]
        [mapped] = pools[1]["maps"]
        assert (mapped["done"], mapped["total"], mapped["desc"]) == (5, 5, "helpers.square")
        executor.shutdown()
        assert executor.dashboard_url is None
        assert [p["name"] for p in state(url)["pools"]] == ["Pool 1"]
    assert first.dashboard_url is None
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        fetch(url)
    assert not [t for t in threading.enumerate() if t.name == "workcrew-dashboard"]


@pytest.mark.parametrize("path", ["/", "/api/state", "/favicon.ico", "/nothing"])
def test_a_request_without_the_right_token_gets_403_and_nothing_else(path: str) -> None:
    with workcrew.Pool(1, kind="thread", dashboard=True) as pool:
        url = pool.dashboard_url
        assert url is not None
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?token=([\w-]{40,})", url)
        assert match, url
        base = f"http://127.0.0.1:{match[1]}{path}"
        assert fetch(base) == (403, b"")
        assert fetch(f"{base}?token=wrong{match[2]}") == (403, b"")
        status, body = fetch(f"{base}?token={match[2]}")
        assert status == {"/": 200, "/api/state": 200}.get(path, 404)
        if path == "/":
            assert b"<html" in body and b"http://" not in body.replace(b"http://www.w3", b"")


@pytest.mark.parametrize("method", ["POST", "HEAD", "PUT", "DELETE", "OPTIONS", "BREW"])
def test_any_other_method_gets_403_and_nothing_else(method: str) -> None:
    with workcrew.Pool(1, kind="thread", dashboard=True) as pool:
        assert pool.dashboard_url is not None
        port = int(pool.dashboard_url.split(":")[2].split("/")[0])
        token = pool.dashboard_url.split("token=")[1]
        for path in ("/", f"/api/state?token={token}"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            try:
                connection.request(method, path)
                answer = connection.getresponse()
                assert (answer.status, answer.read()) == (403, b"")
            finally:
                connection.close()


def test_a_thread_stopped_for_its_timeout_shows_as_killed(tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    os.mkfifo(gate)
    with workcrew.Pool(1, kind="thread", task_timeout=0.5, dashboard=True) as pool:
        assert pool.dashboard_url is not None
        with pytest.raises(workcrew.TaskTimeout):
            pool.apply(pass_or_wait, (gate,))
        [board] = state(pool.dashboard_url)["pools"]
        assert [w["state"] for w in board["workers"]][:1] == ["killed"]
        assert all(w["task"] is None for w in board["workers"])
        [failure] = board["failures"]
        assert "TaskTimeout" in failure["error"] and "pass_or_wait" in failure["task"]
        release_fifo(gate)  # the stopped thread's call returns; its late result is dropped
        assert pool.apply(square, (4,)) == 16


def test_the_board_listens_on_loopback_only() -> None:
    with workcrew.Pool(1, kind="thread", dashboard=True) as pool:
        assert pool.dashboard_url is not None
        port = int(pool.dashboard_url.split(":")[2].split("/")[0])
        import psutil

        [listening] = [
            c
            for c in psutil.Process().net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert listening.laddr.ip == "127.0.0.1"


def test_a_pipeline_shows_one_bar_per_stage() -> None:
    more = threading.Event()

    def source() -> Iterator[int]:
        yield from range(3)
        assert more.wait(TIMEOUT)  # the rest once the test has looked
        yield from range(3, 6)

    pipe = workcrew.Pipeline(square, workcrew.Stage(square, workers=2), dashboard=True)
    with pipe.run(source()) as run:
        first = sorted(next(run) for _ in range(3))
        assert run.dashboard_url is not None
        board = state(run.dashboard_url)
        more.set()
        rest = sorted(run)
    assert (first, rest) == ([0, 1, 16], [81, 256, 625])
    assert run.dashboard_url is None
    names = [p["name"] for p in board["pools"]]
    assert names == ["Pipeline stage 1 of 2: square", "Pipeline stage 2 of 2: square"]
    for i, pool in enumerate(board["pools"], 1):
        [bar] = pool["maps"]
        assert (bar["desc"], bar["done"], bar["total"]) == (f"stage {i}: square", 3, None)


def test_without_a_dashboard_nothing_of_it_loads() -> None:
    code = (
        "import json, sys, threading, psutil, workcrew\n"
        "with workcrew.Pool(2, kind='thread') as pool:\n"
        "    pool.map(abs, range(10))\n"
        "    listening = [c for c in psutil.Process().net_connections('tcp')\n"
        "                 if c.status == psutil.CONN_LISTEN]\n"
        "    print(json.dumps([sorted(m for m in sys.modules if 'dashboard' in m\n"
        "                             or m in ('http.server', 'workcrew._core._live')),\n"
        "                      [t.name for t in threading.enumerate()\n"
        "                       if 'dashboard' in t.name], len(listening),\n"
        "                      pool.dashboard_url]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert json.loads(done.stdout) == [[], [], 0, None]


def test_workcrew_run_serves_the_dashboard_of_its_jobs(tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    os.mkfifo(gate)
    command = [sys.executable, "-m", "workcrew", "run", "--dashboard", "cat {}", ":::", gate]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        line = proc.stderr.readline().decode()
        [url] = re.findall(r"dashboard: (http://\S+)", line)
        board = state(url)
        [pool] = board["pools"]
        assert pool["kind"] == "thread"
        release_fifo(gate, "released\n")
        assert proc.stdout.read() == b"released\n"
        assert proc.wait(TIMEOUT) == 0


def test_the_demo_offers_the_dashboard_and_keeps_it_open_on_request() -> None:
    command = [sys.executable, "-m", "workcrew", "demo", "--lesson", "pool", "--dashboard"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        url = None
        while url is None:
            line = proc.stdout.readline().decode()
            assert line, "the demo ended without offering the dashboard"
            found = re.findall(r"^\s+(http://127\.0\.0\.1:\d+/\?token=\S+)$", line)
            url = found[0] if found else None
        prompt = b"Press Enter"
        seen = b""
        while prompt not in seen:
            chunk = proc.stdout.read1(4096)
            assert chunk, "the demo ended without waiting for Enter"
            seen += chunk
        [pool] = state(url)["pools"]
        assert pool["totals"]["done"] == 9  # four start-up calls, then the lesson's five
        proc.stdin.write(b"\n")
        proc.stdin.close()
        proc.stdout.read()
        assert proc.wait(TIMEOUT) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(url.split(":")[2].split("/")[0])), 1).close()
