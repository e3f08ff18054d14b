"""backend="dask": the same Pool and Executor calls on a Dask cluster (a LocalCluster here).

The cluster binds to 127.0.0.1 only, with its dashboard on a free port; it is
started once for the module and closed at its end, leaving no process behind.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

import dask_helpers as dh
import workcrew
from helpers import (
    TIMEOUT,
    check_descriptors,
    forget_tblib_pickling,
    no_leaks_around,
    open_fds,
    shared_memory,
)

distributed = pytest.importorskip("distributed")  # the test extra installs it: never skipped in CI


#: Clusters alive now: their worker processes (restarted by their nannies when
#: a test kills one) belong to them, not to the test that caused the restart.
_clusters: list[Any] = []
#: Threads Dask runs for a cluster or client, or keeps for the whole process.
DASK_THREADS = ("Dask-", "IO loop", "AsyncProcess Dask", "QueueFeederThread", "TCP-Executor")


def _cluster(**config: Any) -> Any:
    import dask

    with dask.config.set(config):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
    _clusters.append(cluster)
    return cluster


def _close(cluster: Any) -> None:
    """Close ``cluster`` and check that every process it started is gone."""
    me = psutil.Process()
    workers = [p for p in me.children(recursive=True) if p.pid in _cluster_pids(cluster)]
    _clusters.remove(cluster)
    cluster.close()
    _, still = psutil.wait_procs(workers, timeout=TIMEOUT)
    assert not still, f"Dask worker processes outlived their cluster: {still}"


def _cluster_pids(*clusters: Any) -> set[int]:
    return {
        nanny.process.pid
        for cluster in clusters or _clusters
        for nanny in list(cluster.workers.values())
        if getattr(nanny, "process", None) is not None and nanny.process.pid
    }


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """conftest's leak check, leaving a live cluster's own threads and workers to the cluster.

    (They are checked when the cluster closes: see ``_close``.)  So are
    descriptors and shared memory, once the module's cluster has closed: the
    scheduler runs in this process and opens connections and files as it serves.
    """
    with no_leaks_around(DASK_THREADS, _cluster_pids, descriptors=False):
        yield


@pytest.fixture(scope="module", autouse=True)
def _give_back_exception_pickling() -> Iterator[None]:
    """Dask makes exception classes pickle through tblib, process-wide: undo it after."""
    yield
    forget_tblib_pickling()


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    fds_before, memory_before = open_fds(), shared_memory()
    cluster = _cluster()
    client = distributed.Client(cluster)
    # Dask starts process-wide helper threads on first use (done callbacks,
    # offloaded serialisation) and keeps them: start them here, before the
    # leak check of the first test looks.
    called = threading.Event()
    future = client.submit(dh.square, 2, pure=False)
    future.add_done_callback(lambda _: called.set())
    assert called.wait(TIMEOUT) and future.result() == 4
    client.scatter(np.zeros(1 << 18), hash=False).result()
    yield client
    client.close()
    _close(cluster)
    check_descriptors(fds_before, memory_before)


def test_every_call_shape_gives_the_local_results(client: Any) -> None:
    with workcrew.Pool(2, backend="dask", client=client) as pool:
        assert pool.map(dh.square, range(50)) == [x * x for x in range(50)]
        assert pool.starmap(dh.add, [(1, 2), (3, 4)]) == [3, 7]
        assert list(pool.imap(dh.square, iter(range(20)))) == [x * x for x in range(20)]
        assert sorted(pool.imap_unordered(dh.square, range(20))) == [x * x for x in range(20)]
        assert pool.apply_async(dh.add, (2, 3)).get(TIMEOUT) == 5
        assert pool.submit(dh.square, 9).result(TIMEOUT) == 81
    with workcrew.Executor(2, backend="dask", client=client) as ex:
        assert list(ex.map(dh.add, [1, 2], [10, 20])) == [11, 22]
        assert ex.submit(dh.square, 4).result(TIMEOUT) == 16


def test_a_task_error_keeps_its_type_and_remote_traceback(client: Any) -> None:
    with workcrew.Pool(2, backend="dask", client=client) as pool:
        results = pool.imap(dh.fail_on_three, range(6), chunksize=6)
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="bad input 3") as caught:
            next(results)
        assert [next(results) for _ in range(2)] == [4, 5]  # only that item failed
        assert pool.map(dh.square, [5]) == [25]  # the pool goes on
    cause = caught.value.__cause__
    assert isinstance(cause, workcrew.RemoteTraceback)
    assert "on a Dask worker" in str(cause) and "fail_on_three" in str(cause)


def test_retries_and_repeated_calls_really_run(client: Any, tmp_path: Path) -> None:
    with workcrew.Pool(2, backend="dask", client=client, retries=2) as pool:
        assert pool.apply(dh.flaky, (str(tmp_path / "n"), 2)) == 3
        first, second = pool.map(dh.token, [None, None], chunksize=1)
        assert first != second  # pure=False: the same call is not answered from a cache


def test_a_timeout_fails_the_task_and_the_pool_goes_on(client: Any) -> None:
    with workcrew.Pool(2, backend="dask", client=client) as pool:
        with pytest.raises(workcrew.TaskTimeout):
            pool.apply_async(dh.sleep_for, (1.5,), task_timeout=0.2).get(TIMEOUT)
        assert pool.map(dh.square, range(4)) == [0, 1, 4, 9]


def test_progress_statistics_and_a_bounded_window(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    def endless() -> Iterator[int]:
        n = 0
        while True:
            yield n
            n += 1

    with workcrew.Pool(2, backend="dask", client=client) as pool:
        assert len(pool.map(dh.square, range(40), progress="plain")) == 40
        results = pool.imap(dh.square, endless())
        assert [next(results) for _ in range(30)] == [x * x for x in range(30)]
        results.close()
        stats = pool.statistics()
    assert "40/40 tasks (100%)" in capsys.readouterr().err
    assert stats.kind == "dask" and stats.tasks_done >= 70


def test_a_large_argument_is_scattered_once(client: Any) -> None:
    array = np.arange(1 << 18, dtype=np.float64)  # 2 MiB
    before = _array_keys(client)
    with workcrew.Pool(2, backend="dask", client=client) as pool:
        assert pool.map(dh.total, [array] * 6, chunksize=1) == [float(array.sum())] * 6
        new = _array_keys(client) - before
    assert len(new) == 1  # one copy of the data on the cluster (maybe held by several workers)


def _array_keys(client: Any) -> set[str]:
    return {str(k) for keys in client.has_what().values() for k in keys if "ndarray" in str(k)}


def test_a_worker_killed_mid_task_is_rerun_by_dask(client: Any, tmp_path: Path) -> None:
    with workcrew.Pool(1, backend="dask", client=client) as pool:
        pid = pool.apply(dh.kill_my_worker_once, (str(tmp_path / "marker"),))
    assert (tmp_path / "marker").exists() and isinstance(pid, int)


def test_a_task_that_keeps_killing_workers_fails_as_worker_crashed() -> None:
    cluster = _cluster(**{"distributed.scheduler.allowed-failures": 0})
    try:
        with (
            distributed.Client(cluster) as client,
            workcrew.Pool(2, backend="dask", client=client) as pool,
        ):
            with pytest.raises(workcrew.WorkerCrashed, match="Dask workers running this task died"):
                pool.apply(dh.kill_my_worker)
            assert pool.map(dh.square, [3]) == [9]
    finally:
        _close(cluster)


def test_a_pool_without_address_runs_its_own_local_cluster() -> None:
    with workcrew.Pool(2, backend="dask") as pool:
        assert pool.map(dh.square, range(10)) == [x * x for x in range(10)]


def test_bad_combinations_and_a_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="no per-worker initializer"):
        workcrew.Pool(2, backend="dask", initializer=print)
    with pytest.raises(ValueError, match=re.escape("kind='thread' does not apply")):
        workcrew.Pool(2, backend="dask", kind="thread")
    with pytest.raises(ValueError, match="need backend='dask'"):
        workcrew.Pool(2, address="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="backend='cluster' is invalid"):
        workcrew.Pool(2, backend="cluster")
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'workcrew[dask]'")):
        workcrew.Pool(2, backend="dask")
