"""backend="dask" across hosts: a cluster of network namespaces, started with the real CLI.

Each cluster (tests/netns_cluster.py) is a scheduler host and two worker hosts
of one thread each, joined by a bridge to this process, the caller.  Tests
that kill nothing share one cluster per module (a TLS one for the TLS tests);
a test that kills a host or the scheduler gets a cluster of its own.  Nothing
here sleeps to synchronise: tasks write their worker's address to a file and
wait at a gate (a file) the test opens, and the test polls the cluster's files
with a deadline.

Skipped only where network namespaces cannot be made (not root, no ``ip``,
no netns support); CI runs as root and installs iproute2 (.ci/run).
"""

from __future__ import annotations

import functools
import gc
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

import netns_cluster as nc
import workcrew
from helpers import TIMEOUT, forget_tblib_pickling, no_leaks_around

distributed = pytest.importorskip("distributed")  # the test extra installs it: never skipped in CI
dask = pytest.importorskip("dask")

T = TypeVar("T")

#: Threads Dask starts once per process and keeps (future callbacks, offloaded
#: (de)serialisation, name resolution): not a leak of the test that started them.
DASK_PROCESS_THREADS = ("Dask-Callback-Thread", "Dask-Offload", "TCP-Executor")
#: Bound for what must be prompt: an error, a pool's end (the Dask timeouts are 3 s here).
PROMPT = 10.0
#: A map's tasks from this item on wait at the gate (the test opens it).
GATE = 1000
#: Keeps every failure to connect short (Dask's default is 30 s).
SHORT_CONNECT = {"distributed.comm.timeouts.connect": "3s"}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """conftest's leak check, except Dask's per-process helper threads.

    The clusters' processes are gone before it looks: a cluster fixture kills
    and reaps them in its teardown (or, for the module's clusters, they were
    there before the test).
    """
    with no_leaks_around(DASK_PROCESS_THREADS):
        yield


@pytest.fixture(scope="module", autouse=True)
def _give_back_exception_pickling() -> Iterator[None]:
    """Dask makes exception classes pickle through tblib, process-wide: undo it after."""
    yield
    forget_tblib_pickling()


def _cluster(directory: Path, *, tls: bool = False) -> Iterator[nc.NetnsCluster]:
    reason = nc.unavailable()
    if reason is not None:
        pytest.skip(reason)
    with nc.netns_cluster(directory, tls=tls) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nc.NetnsCluster]:
    """The module's cluster, for tests that kill nothing."""
    yield from _cluster(tmp_path_factory.mktemp("hosts"))


@pytest.fixture(scope="module")
def tls_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nc.NetnsCluster]:
    """The module's cluster that speaks only TLS (certificates made for it)."""
    yield from _cluster(tmp_path_factory.mktemp("tls-hosts"), tls=True)


@pytest.fixture
def own_hosts(tmp_path: Path) -> Iterator[nc.NetnsCluster]:
    """A cluster for one test, which may kill parts of it."""
    yield from _cluster(tmp_path / "cluster")


def wait_until(condition: Callable[[], T | None], what: str, timeout: float = TIMEOUT) -> T:
    """Poll ``condition`` until it is true; its value.  Fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.01)  # the state lives in other hosts' processes: nothing to wait on here
    return value


def gated_squares(directory: Path) -> tuple[Any, Path, Path]:
    """The task for a map to interrupt; the log it writes; the gate the test opens."""
    log, gate = directory / "log", directory / "gate"
    task = functools.partial(nc.square_logged, log=str(log), gate=str(gate), gate_from=GATE)
    return task, log, gate


def scheduler_view(address: str) -> object:
    """The scheduler's workers and its tasks' states, for a failure message (bounded)."""

    def states(dask_scheduler: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state in dask_scheduler.tasks.values():
            counts[state.state] = counts.get(state.state, 0) + 1
        return counts

    try:
        with distributed.Client(address, timeout=5, set_as_default=False) as client:
            workers = sorted(client.scheduler_info()["workers"])
            return {"workers": workers, "tasks": client.run_on_scheduler(states)}
    except Exception as exc:  # noqa: BLE001 - a diagnostic: report what failed instead
        return f"unreachable ({type(exc).__name__}: {exc})"


def waiting_at_gate(cluster: nc.NetnsCluster, log: Path) -> dict[str, set[int]] | None:
    """host -> the gated items it started, once every worker host has started one."""
    started: dict[str, set[int]] = {host: set() for host in nc.WORKER_HOSTS}
    for address, x in nc.read_log(log):
        for host in nc.WORKER_HOSTS:
            if address in cluster.worker_addresses[host] and x >= GATE:
                started[host].add(x)
    return started if all(started.values()) else None


def all_workers(cluster: nc.NetnsCluster) -> set[str]:
    return {a for host in nc.WORKER_HOSTS for a in cluster.worker_addresses[host]}


# -- tests on the module's clusters ----------------------------------------------------


def test_a_map_runs_on_both_worker_hosts(hosts: nc.NetnsCluster) -> None:
    with workcrew.Pool(backend="dask", address=hosts.scheduler_address) as pool:
        results = pool.map(nc.square_where, range(200))
    assert [square for square, _ in results] == [x * x for x in range(200)]
    used = {address for _, address in results}
    assert used == all_workers(hosts)
    assert {urlsplit(a).hostname for a in used} == {hosts.address(h) for h in nc.WORKER_HOSTS}


def test_the_default_pool_size_follows_the_cluster(tmp_path: Path) -> None:
    # 2 hosts x 3 threads: the pool keeps 4 chunks per cluster thread in flight (24
    # slots), whatever this machine's CPU count (which gave 4 x CPUs before).
    with (
        nc.netns_cluster(tmp_path, nthreads=3) as cluster,
        workcrew.Pool(backend="dask", address=cluster.scheduler_address) as pool,
    ):
        used = pool.map(nc.spin_where, [5.0] * 200)
        slots = len(pool.statistics().workers)
    assert set(used) == all_workers(cluster)
    assert slots == 4 * 2 * 3


def test_an_unreachable_scheduler_fails_the_pool_promptly(hosts: nc.NetnsCluster) -> None:
    address = hosts.unreachable_address  # in the bridge's subnet: stays on this machine
    started = time.monotonic()
    try:
        with (
            dask.config.set(SHORT_CONNECT),
            pytest.raises(workcrew.BrokenPoolError, match=re.escape(address)),
        ):
            workcrew.Pool(backend="dask", address=address)
    finally:
        # workcrew collects the failed Client it can reach; tornado's timed-out connection
        # attempts may outlive it a little (Python 3.10: they are freed with the loop's
        # last references) and would warn in whichever test collects next: collect them
        # here, where they come from (the sockets were never workcrew's).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    assert time.monotonic() - started < PROMPT


def test_a_map_over_tls(tls_hosts: nc.NetnsCluster) -> None:
    with workcrew.Pool(
        backend="dask", address=tls_hosts.scheduler_address, security=tls_hosts.security
    ) as pool:
        results = pool.map(nc.square_where, range(100))
    assert [square for square, _ in results] == [x * x for x in range(100)]
    used = {address for _, address in results}
    assert used <= all_workers(tls_hosts)
    assert all(address.startswith("tls://") for address in used)


@pytest.mark.parametrize("credentials", ["none", "another CA", "plain TCP"])
def test_tls_refuses_a_client_without_the_certificates(
    tls_hosts: nc.NetnsCluster, credentials: str
) -> None:
    from distributed.security import Security

    address, security = tls_hosts.scheduler_address, None
    if credentials == "another CA":
        security = Security.temporary()  # a valid certificate the cluster does not trust
    elif credentials == "plain TCP":
        address = address.replace("tls://", "tcp://")
    started = time.monotonic()
    try:
        with (
            dask.config.set(SHORT_CONNECT),
            pytest.raises((OSError, ValueError, workcrew.WorkcrewError)),
        ):
            workcrew.Pool(backend="dask", address=address, security=security)
    finally:
        with warnings.catch_warnings():  # as in test_an_unreachable_scheduler_fails_...
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    assert time.monotonic() - started < PROMPT


# -- tests that kill part of their own cluster -------------------------------------------


@pytest.mark.timeout(150)  # a cluster's start, then two waits of TIMEOUT that report why
def test_a_worker_host_lost_mid_map_loses_nothing(
    own_hosts: nc.NetnsCluster, tmp_path: Path
) -> None:
    task, log, gate = gated_squares(tmp_path)
    lost = own_hosts.worker_addresses["a"]
    with workcrew.Pool(backend="dask", address=own_hosts.scheduler_address) as pool:
        result = pool.map_async(task, range(2000))
        # Wait until each host runs an item that waits at the gate: host a dies mid-task.
        at_gate = wait_until(lambda: waiting_at_gate(own_hosts, log), "both hosts at the gate")
        own_hosts.kill_host("a")  # every process of host a
        gate.touch()
        try:
            values = result.get(TIMEOUT)
        except workcrew.TimeoutError:  # seen once in CI: say what the scheduler knew then
            raise AssertionError(
                f"the map did not end after host a was lost; the scheduler: "
                f"{scheduler_view(own_hosts.scheduler_address)}; the pool: {pool.statistics()}"
            ) from None
        assert values == [x * x for x in range(2000)]  # each once, in order
        # The scheduler's news reaches the pool's client on its own time: poll, bounded.
        seen = wait_until(lambda: pool.statistics().lost_workers, "lost_workers", PROMPT)
        assert sorted(seen) == sorted(lost)
    on_b = {x for a, x in nc.read_log(log) if a in own_hosts.worker_addresses["b"]}
    assert at_gate["a"] <= on_b  # what host a was running when it died ran again on b


def test_a_scheduler_lost_mid_map_fails_the_map_promptly(
    own_hosts: nc.NetnsCluster, tmp_path: Path
) -> None:
    task, log, gate = gated_squares(tmp_path)
    with dask.config.set(SHORT_CONNECT):  # the client's attempts to reconnect
        pool = workcrew.Pool(backend="dask", address=own_hosts.scheduler_address)
        try:
            result = pool.map_async(task, range(2000))
            wait_until(lambda: waiting_at_gate(own_hosts, log), "both hosts at the gate")
            own_hosts.kill_scheduler()
            killed = time.monotonic()
            with pytest.raises(workcrew.BrokenPoolError, match=r"(?i)scheduler"):
                result.get(TIMEOUT)
            assert time.monotonic() - killed < PROMPT
        finally:
            gate.touch()
            stopping = time.monotonic()
            pool.terminate()
            pool.join()
            stopped = time.monotonic() - stopping
    assert stopped < PROMPT
