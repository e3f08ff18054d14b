"""Large arrays to process workers: reused segments, kept mappings, and workcrew.shared_array.

See docs/arrays.md.  The copies path's basic tests (values arrive, copies both ways,
nothing leaks after a crash) are in test_sharing.py.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import arrays_helpers as ah
import workcrew
from helpers import TIMEOUT
from workcrew._sharing import _buffers
from workcrew._sharing._buffers import Exporter, Imported, dumps_oob

# -- workcrew.shared_array --------------------------------------------------------------


def test_a_shared_array_is_a_zeroed_numpy_array_of_the_shape_asked() -> None:
    a = workcrew.shared_array((3, 4), np.int32)
    assert type(a) is np.ndarray
    assert a.shape == (3, 4) and a.dtype == np.int32
    assert (a == 0).all() and a.flags.c_contiguous and a.flags.writeable
    f = workcrew.shared_array([2, 5], order="F")
    assert f.dtype == np.float64 and f.flags.f_contiguous
    assert workcrew.shared_array(np.int64(7)).shape == (7,)
    assert workcrew.shared_array(0).size == 0
    assert workcrew.shared_array.__module__ == "workcrew"


def test_bad_arguments_get_clear_errors() -> None:
    with pytest.raises(TypeError, match="cannot hold dtype object"):
        workcrew.shared_array(3, object)
    with pytest.raises(ValueError, match="negative dimension"):
        workcrew.shared_array((2, -1))
    with pytest.raises(ValueError, match="order must be 'C' or 'F'"):
        workcrew.shared_array(3, order="K")  # type: ignore[arg-type]  # the wrong value on purpose


def test_pickled_any_other_way_it_is_an_ordinary_copy() -> None:
    a = workcrew.shared_array(1 << 16)
    a[:] = 1.0
    for protocol in (4, 5):
        copy = pickle.loads(pickle.dumps(a, protocol=protocol))
        assert (copy == a).all() and not np.shares_memory(copy, a)


def test_tasks_write_into_the_callers_array(pool_kw: dict[str, Any]) -> None:
    rows = workcrew.shared_array((4, 100_000))
    with workcrew.Pool(2, **pool_kw) as pool:
        sums = pool.starmap(ah.fill, [(rows[i], i + 1) for i in range(4)])
    assert sums == [100_000.0 * (i + 1) for i in range(4)]
    assert (rows == np.arange(1, 5)[:, None]).all()


def test_process_workers_map_the_callers_pages(start_method: str) -> None:
    small = workcrew.shared_array(10)  # far below the out-of-band threshold: shared all the same
    big = workcrew.shared_array((512, 512))
    with workcrew.Pool(1, start_method=start_method) as pool:
        assert pool.apply(ah.maps_shared_memory, (small,)) is True
        assert pool.apply(ah.fill, (small, 7)) == 70.0
        assert (small == 7).all()
        assert pool.apply(ah.overlap, (big, big[10:])) is True  # two views of one mapping
        back = pool.apply(ah.slice_back, (big,))
        assert np.shares_memory(back, big)  # a returned view is the caller's memory again
        back[:] = 5
        assert (big[1:3] == 5).all()
        # A non-contiguous view is pickled as usual: the task writes its own copy.
        assert pool.apply(ah.maps_shared_memory, (big[:, 0],)) is False
        assert pool.apply(ah.fill, (big[:, 0], 9)) == 9 * 512
    assert (big[:, 0] != 9).all()


def test_an_array_made_in_a_worker_comes_back_shared(start_method: str) -> None:
    with workcrew.Pool(1, start_method=start_method) as pool:
        made = pool.apply(ah.make_shared, (100_000,))
        assert (made == np.arange(100_000)).all() and made.flags.writeable
        # The worker let go of it; the caller's mapping keeps it, and sends it back shared.
        assert pool.apply(ah.fill, (made, 3)) == 300_000.0
    assert (made == 3).all()


def test_the_caller_may_drop_a_shared_array_once_submitted(start_method: str) -> None:
    gate: workcrew.Queue[str] = workcrew.Queue()
    with workcrew.Pool(1, start_method=start_method) as pool:
        blocked = pool.apply_async(ah.wait_for, (gate,))
        a = workcrew.shared_array(1 << 18)
        a[:] = 2.0
        result = pool.apply_async(ah.total, (a,))
        del a  # the worker has not mapped it yet: it runs after wait_for
        gc.collect()
        gate.put("go")
        assert blocked.get(TIMEOUT) == "go"
        assert result.get(TIMEOUT) == 2.0 * (1 << 18)


def test_shared_memory_is_freed_whoever_held_it(start_method: str) -> None:
    gc.collect()
    shm_before = set(os.listdir("/dev/shm"))
    mine_before = ah.shared_segments()
    with workcrew.Pool(1, start_method=start_method) as pool:
        # Made once the worker runs: a forked worker inherits, like all memory,
        # the shared arrays that exist when it is forked.
        assert pool.apply(ah.shared_segments) == (0, 0)
        a = workcrew.shared_array(1 << 18)
        assert pool.apply(ah.fill, (a, 1)) == float(1 << 18)
        assert pool.apply(ah.shared_segments) == (0, 0)  # the worker's mapping went with the task
        pool.apply(ah.keep, (a[:100],))
        assert pool.apply(ah.shared_segments) == (1, 1)
        del a
        gc.collect()
        assert pool.apply(ah.kept_sum) == 100.0  # the worker's mapping keeps the memory
        pool.apply(ah.drop_kept)
        assert pool.apply(ah.shared_segments) == (0, 0)
        b = workcrew.shared_array(1 << 18)
        with pytest.raises(workcrew.WorkerCrashed):
            pool.apply(ah.crash_holding, (b,))
        assert b[0] == 1.0  # written before the crash, into the caller's memory
        del b
    assert ah.shared_segments() == mine_before
    assert set(os.listdir("/dev/shm")) == shm_before


# -- the copies path: reused segments and kept mappings ---------------------------------


@pytest.mark.parametrize("task", [ah.scale_and_sum, ah.mark_some_pages])
def test_a_tasks_writes_never_reach_the_next_array(start_method: str, task: Any) -> None:
    # One worker, one array at a time: each array reuses the same segment, which
    # the worker keeps mapped; its private copies of written pages must go.
    arrays = [np.full(1 << 18, float(i + 1)) for i in range(4)]
    with workcrew.Pool(1, start_method=start_method) as pool:
        for a in arrays:
            expected = a.copy()
            task(expected)
            assert pool.apply(task, (a,)) == expected.sum()
            assert pool.apply(ah.total, (a,)) == a.sum()
        assert pool.apply(ah.buffer_segments)[0] == 1  # kept mapped, and only that one
    assert all((a == i + 1).all() for i, a in enumerate(arrays))


def test_a_worker_forked_later_does_not_inherit_the_callers_segments() -> None:
    big = np.ones(1 << 18)
    with workcrew.Pool(1, start_method="fork", maxtasksperchild=1) as pool:
        assert pool.apply(ah.total, (big,)) == big.sum()  # the caller now maps a segment
        assert pool.apply(ah.buffer_segments) == (0, 0)  # a new worker, forked after it


def _round_trip(exporter: Exporter, imported: Imported, array: Any) -> tuple[Any, Any]:
    body, buffers = dumps_oob(array)
    refs = exporter.export(buffers)
    return pickle.loads(body, buffers=imported.map(refs)), refs


def test_a_receiver_drops_its_private_pages_before_reporting_a_release() -> None:
    exporter, imported = Exporter(reuse=True), Imported()
    try:
        first, refs = _round_trip(exporter, imported, np.full(1 << 16, 1.0))
        first[::700] = -5.0  # private copies of some pages of the kept mapping
        del first
        released = imported.release_unused()
        assert released == [refs[0].id]
        exporter.release(released)
        second, again = _round_trip(exporter, imported, np.full(1 << 16, 2.0))
        assert again[0].inode == refs[0].inode  # the same segment, rewritten
        assert len(imported._kept) == 1  # and the same mapping
        assert (second == 2.0).all()
        held = second
        del second
        assert imported.release_unused() == []  # an array still uses it: not released
        del held
        assert imported.release_unused() == [again[0].id]
    finally:
        exporter.close()


def test_kept_mappings_of_closed_segments_are_dropped() -> None:
    exporter, imported = Exporter(reuse=True), Imported()
    array, _ = _round_trip(exporter, imported, np.ones(1 << 16))
    del array
    exporter.release(imported.release_unused())
    assert len(imported._kept) == 1
    exporter.close()
    imported._sweep()
    assert not imported._kept


def test_without_a_readable_page_table_mappings_are_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_buffers, "_pagemap_ok", False)
    exporter, imported = Exporter(reuse=True), Imported()
    try:
        for value in (1.0, 2.0):
            array, _ = _round_trip(exporter, imported, np.full(1 << 16, value))
            assert (array == value).all()
            array *= 3
            del array
            exporter.release(imported.release_unused())
            assert not imported._kept
    finally:
        exporter.close()


def test_the_page_table_check_works_here() -> None:
    assert _buffers._pagemap_works() is True


# -- what a worker imports ----------------------------------------------------------------


def test_the_modules_a_worker_imports_load_nothing_heavy() -> None:
    heavy = [
        "ctypes",
        "dataclasses",
        "typing",
        "inspect",
        "logging",
        "multiprocessing",
        "concurrent.futures",
        "cloudpickle",
        "numpy",
        "contextlib",
    ]
    code = (
        "import sys\n"
        "import workcrew._sharing._buffers, workcrew._sharing._locks\n"
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=TIMEOUT
    )
    assert out.stdout.split() == []
