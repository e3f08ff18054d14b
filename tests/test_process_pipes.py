"""The pipes a process worker gets: its task and result pipes are widened, within a budget."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest

import workcrew
from helpers import TIMEOUT
from workcrew._backends import _process_start
from workcrew._backends._process_start import (
    DEFAULT_PIPE_CAPACITY,
    PIPE_BUDGET,
    PIPE_CAPACITY,
    pipe_capacity,
    widen_pipe,
)


def wide_pipe_ends() -> list[tuple[str, int]]:
    """In a worker: (access mode, capacity) of each of its pipe descriptors wider than default."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                continue
            capacity = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        except OSError:  # the descriptor listdir itself used, closed by now
            continue
        if capacity > DEFAULT_PIPE_CAPACITY:
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
            found.append(("read" if mode == os.O_RDONLY else "write", capacity))
    return sorted(found)


def test_a_worker_reads_chunks_and_writes_results_through_widened_pipes(
    start_method: str,
) -> None:
    with workcrew.Pool(2, start_method=start_method) as pool:
        seen = pool.apply_async(wide_pipe_ends).get(TIMEOUT)
        # the task pipe's read end and the result pipe's write end; its stdout,
        # stderr and lifeline pipes keep the default
        assert seen == [("read", PIPE_CAPACITY), ("write", PIPE_CAPACITY)]
        # and the pool still moves chunks larger than the old capacity
        items = list(range(100_000))
        assert pool.map(abs, items, chunksize=50_000) == items


def test_a_pool_s_widened_pipes_stay_within_the_budget() -> None:
    assert pipe_capacity(1) == PIPE_CAPACITY == 256 * 1024
    assert pipe_capacity(32) == PIPE_CAPACITY
    assert pipe_capacity(33) == PIPE_CAPACITY // 2
    assert pipe_capacity(64) == PIPE_CAPACITY // 2
    assert pipe_capacity(65) is None  # the default: widening would pass the budget
    assert pipe_capacity(10_000) is None
    for workers in range(1, 200):
        capacity = pipe_capacity(workers)
        if capacity is not None:
            assert capacity > DEFAULT_PIPE_CAPACITY
            assert 2 * workers * capacity <= PIPE_BUDGET


def test_widening_sets_a_pipe_s_capacity_and_a_refusal_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read, write = os.pipe()
    try:
        assert widen_pipe(write, PIPE_CAPACITY)
        assert fcntl.fcntl(read, fcntl.F_GETPIPE_SZ) == PIPE_CAPACITY
        with open(tmp_path / "plain", "wb") as plain:  # not a pipe: the system refuses
            assert not widen_pipe(plain.fileno(), PIPE_CAPACITY)
        monkeypatch.delattr(fcntl, "F_SETPIPE_SZ")  # a system without it (macOS)
        assert not widen_pipe(write, 2 * PIPE_CAPACITY)
        assert fcntl.fcntl(read, fcntl.F_GETPIPE_SZ) == PIPE_CAPACITY
    finally:
        os.close(read)
        os.close(write)


def test_a_pool_too_large_for_the_budget_keeps_default_pipes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a budget that 2 workers' widened pipes (4 pipes) would pass even at twice the
    # default: their pipes stay as the system makes them
    monkeypatch.setattr(_process_start, "PIPE_BUDGET", 4 * DEFAULT_PIPE_CAPACITY)
    with workcrew.Pool(2, start_method="fork") as pool:
        assert pool.apply_async(wide_pipe_ends).get(TIMEOUT) == []
