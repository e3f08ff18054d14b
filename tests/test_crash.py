"""A worker that dies fails its own task alone; the pool replaces it and goes on."""

from __future__ import annotations

import pytest

import helpers
import workcrew
from helpers import TIMEOUT
from workcrew import Pool


def test_os_exit_fails_only_that_task(start_method: str) -> None:
    with Pool(2, start_method=start_method) as pool:
        crashed = pool.submit(helpers.hard_exit, 7)
        with pytest.raises(workcrew.WorkerCrashed, match="exited with status 7") as info:
            crashed.result(TIMEOUT)
        assert info.value.exitcode == 7
        assert "helpers.hard_exit(7)" in str(info.value)
        assert pool.map(helpers.square, range(50)) == [x * x for x in range(50)]


def test_crash_inside_a_chunk_blames_only_the_culprit(start_method: str) -> None:
    def maybe_exit(x: int) -> int:
        if x == 5:
            helpers.hard_exit(1)
        return x

    with Pool(2, start_method=start_method) as pool:
        it = pool.imap(maybe_exit, range(10), chunksize=10)
        got = []
        for _ in range(10):
            try:
                got.append(next(it))
            except workcrew.WorkerCrashed as exc:
                got.append(type(exc).__name__)
        assert got == [0, 1, 2, 3, 4, "WorkerCrashed", 6, 7, 8, 9]
