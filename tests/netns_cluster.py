"""A Dask cluster of separate hosts on one machine, for tests: network namespaces on a bridge.

Every cluster gets names and a subnet of its own, so the clusters of one test
run, and test runs side by side, cannot collide (``<pid>`` is the test
process's, ``<k>`` counts its clusters, ``N`` is a free /24)::

    root namespace: the caller, bridge wc<pid>n<k>br     10.77.N.1
      veth v<ns> -- eth0 of namespace wc<pid>n<k>s       10.77.N.2   dask scheduler
      veth v<ns> -- eth0 of namespace wc<pid>n<k>a       10.77.N.3   dask worker (nanny + worker)
      veth v<ns> -- eth0 of namespace wc<pid>n<k>b       10.77.N.4   dask worker

The processes are the real command line (``<venv>/bin/dask scheduler|worker``),
each bound to its own namespace's address.  The namespaces have no route
beyond the bridge's subnet.

Nothing leaves the machine: before anything is built, an ``unreachable`` route
claims 10.77.N.0/24 (the bridge's own route wins while the bridge exists, and
the claim stays until the bridge is gone), and the subnet must route to the
bridge before any process starts.

Teardown (:meth:`NetnsCluster.close`, also after a failed start) kills every
process of every namespace until none is left, reaps them, then deletes the
veth pairs (before their namespaces: ``ip netns del`` frees a veth
asynchronously, and a quick rebuild would then find the name taken), the
namespaces, the bridge and the claim.  A test run that died leaves its names
behind with its pid in them: the next cluster built removes them.

The last section holds the tasks the tests send to the cluster (the workers
import this module: the tests directory is on their ``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers import TIMEOUT, named_segments

DASK = Path(sys.executable).parent / "dask"
#: The ip command (iproute2); a PATH without the sbin directories still finds it.
IP = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin") or "ip"
#: Test clusters take a /24 of this /16.
SUBNET_PREFIX = "10.77"
#: The metric that marks our claim routes (``unreachable 10.77.N.0/24 metric ...``).
CLAIM_METRIC = 7717
#: host -> (namespace suffix, last byte of its address).
HOSTS = {"scheduler": ("s", 2), "a": ("a", 3), "b": ("b", 4)}
WORKER_HOSTS = ("a", "b")
PORT = 8786
#: Bound for a cluster to start: every process up, both workers registered.
READY_TIMEOUT = 20.0

#: Our namespace, veth and bridge names; group 1 is the pid of the test process.
_OUR_NAME = re.compile(r"^v?(wc(\d+)n\d+)(?:[sab]|br)$")
_clusters = itertools.count()
#: Tags of the clusters this process has built and not yet torn down.
_live: set[str] = set()


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; its output (its error, as RuntimeError, when ``check``)."""
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=TIMEOUT)
    if check and done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which(IP) is None:
        return "network namespaces need the ip command (iproute2 is not installed)"
    probe = f"wc{os.getpid()}probe"
    ip("netns", "del", probe, check=False)  # left by a run that died here
    made = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if made.returncode:
        return f"this kernel or container cannot make network namespaces: {made.stderr.strip()}"
    ip("netns", "del", probe)
    return None


def _remove_orphans(names: set[str]) -> None:
    """Unlink those of ``names`` (in /dev/shm) that no live process has mapped.

    Dask's processes make named semaphores (multiprocessing's, under spawn)
    that their resource tracker unlinks when they exit; killed with their
    host, they leave them behind.  A segment still mapped somewhere is not
    ours to remove.
    """
    mapped = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as maps:
                mapped.update(
                    line.split("/dev/shm/", 1)[1].split()[0] for line in maps if "/dev/shm/" in line
                )
        except OSError:  # the process ended meanwhile, or hides its maps
            continue
    for name in names - mapped:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/{name}")


@contextlib.contextmanager
def netns_cluster(
    directory: Path, *, tls: bool = False, nthreads: int = 1
) -> Iterator[NetnsCluster]:
    """A started cluster, torn down at the end whatever happened (logs go to ``directory``)."""
    cluster = NetnsCluster(directory, tls=tls, nthreads=nthreads)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


class NetnsCluster:
    """A scheduler host and two worker hosts (``a``, ``b``) of ``nthreads`` threads each.

    ``scheduler_address``, ``worker_addresses`` (host -> its Dask workers'
    addresses, read once the cluster is ready), ``security`` (the caller's
    side of TLS, or None), ``unreachable_address`` (in the subnet, where
    nothing listens and no host answers).
    """

    def __init__(self, directory: Path, *, tls: bool = False, nthreads: int = 1) -> None:
        self.directory = directory
        self.nthreads = nthreads
        self.tag = f"wc{os.getpid()}n{next(_clusters) % 100}"
        self.bridge = f"{self.tag}br"
        self.subnet = ""  # "10.77.N", once claimed
        self.protocol = "tls" if tls else "tcp"
        self.security: Any = None
        self.worker_addresses: dict[str, tuple[str, ...]] = {}
        self._tls_options: list[str] = []
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._segments_before = named_segments()  # see _remove_orphans

    def namespace(self, host: str) -> str:
        return self.tag + HOSTS[host][0]

    def address(self, host: str) -> str:
        return f"{self.subnet}.{HOSTS[host][1]}"

    @property
    def scheduler_address(self) -> str:
        return f"{self.protocol}://{self.address('scheduler')}:{PORT}"

    @property
    def unreachable_address(self) -> str:
        return f"tcp://{self.subnet}.9:{PORT}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _live.add(self.tag)
        sweep_leftovers()
        self._claim_subnet()
        self._build_network()
        if self.protocol == "tls":
            self._make_certificates()
        self._launch()
        self._wait_ready()

    def kill_host(self, host: str) -> None:
        """SIGKILL every process of ``host``'s namespace, again until none is left."""
        process = self._processes.get(host)
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: nanny and children
        kill_namespace(self.namespace(host))

    def kill_scheduler(self) -> None:
        self.kill_host("scheduler")

    def close(self) -> None:
        """Kill every process, then delete every link, namespace and route (even half-built)."""
        try:
            for host in HOSTS:
                self.kill_host(host)
            for process in self._processes.values():
                process.wait(TIMEOUT)
        finally:
            for host in HOSTS:
                ip("link", "del", f"v{self.namespace(host)}", check=False)
                ip("netns", "del", self.namespace(host), check=False)
            ip("link", "del", self.bridge, check=False)
            if self.subnet:
                _release(self.subnet)
            _live.discard(self.tag)
            _remove_orphans(named_segments() - self._segments_before)
        left = [name for name in _our_names() if name.startswith(self.tag)]
        assert not left, f"teardown left {left} behind"

    def logs(self) -> str:
        """The end of every process's output (for a cluster that would not start)."""
        tails = []
        for host in HOSTS:
            path = self.directory / f"{host}.log"
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            tails.append(f"--- {host} ---\n" + "\n".join(text.splitlines()[-30:]))
        return "\n".join(tails)

    # -- building ----------------------------------------------------------------------

    def _claim_subnet(self) -> None:
        """Take a /24 nobody routes, with an unreachable route: nothing for it leaves the host."""
        first = os.getpid() + int(self.tag.rsplit("n", 1)[1])
        for offset in range(256):
            subnet = f"{SUBNET_PREFIX}.{(first + offset) % 256}"
            if ip("route", "show", f"{subnet}.0/24").strip():
                continue  # in use: another cluster's, another run's, or not ours at all
            claim = ["route", "add", "unreachable", f"{subnet}.0/24", "metric", str(CLAIM_METRIC)]
            if not _succeeds(*claim):
                continue  # another run claimed it just now
            if not _succeeds("route", "get", f"{subnet}.9"):
                self.subnet = subnet  # unreachable, as claimed: no route more specific than ours
                return
            _release(subnet)
        raise RuntimeError(f"no free /24 in {SUBNET_PREFIX}.0.0/16 for a test cluster")

    def _build_network(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for host in HOSTS:
            namespace, veth = self.namespace(host), f"v{self.namespace(host)}"
            ip("netns", "add", namespace)
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("link", "set", veth, "master", self.bridge, "up")
            ip("-n", namespace, "link", "set", "lo", "up")
            ip("-n", namespace, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
        route = ip("route", "get", f"{self.subnet}.9").split()
        if route[1:3] != ["dev", self.bridge]:
            raise RuntimeError(f"{self.subnet}.0/24 must route to {self.bridge}, not {route}")

    def _make_certificates(self) -> None:
        """One self-signed certificate (its own CA) for every host and the caller."""
        from distributed.security import Security

        temporary = Security.temporary()  # PEM text in place of file names
        cert, key = self.directory / "tls-cert.pem", self.directory / "tls-key.pem"
        cert.write_text(temporary.tls_ca_file)
        key.touch(mode=0o600)
        key.write_text(temporary.tls_client_key)
        self._tls_options = ["--tls-ca-file", str(cert), "--tls-cert", str(cert)]
        self._tls_options += ["--tls-key", str(key)]
        self.security = Security(
            tls_ca_file=str(cert),
            tls_client_cert=str(cert),
            tls_client_key=str(key),
            require_encryption=True,
        )

    def _launch(self) -> None:
        """Start the scheduler and both workers at once (the workers wait for the scheduler)."""
        here = self.address("scheduler")
        self._spawn("scheduler", "scheduler", "--host", here, "--port", str(PORT))
        for host in WORKER_HOSTS:
            here = self.address(host)
            threads = str(self.nthreads)
            options = ["--host", here, "--name", host, "--nthreads", threads, "--nworkers", "1"]
            options += ["--local-directory", str(self.directory / host)]
            self._spawn(host, "worker", self.scheduler_address, *options)

    def _spawn(self, host: str, command: str, *args: str) -> None:
        """``dask COMMAND ARGS`` in ``host``'s namespace, its HTTP server on its own address."""
        pythonpath = os.environ.get("PYTHONPATH", "")
        env = {
            **os.environ,
            # The workers import this module (its tasks); workcrew is installed in the venv.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), pythonpath])),
            "PYTHONDONTWRITEBYTECODE": "1",
            "DASK_TEMPORARY_DIRECTORY": str(self.directory),  # not /tmp/dask-scratch-space
        }
        http = f"{self.address(host)}:{8787 if command == 'scheduler' else 0}"
        argv = [str(DASK), command, *args, "--no-dashboard", "--dashboard-address", http]
        with open(self.directory / f"{host}.log", "wb") as log:
            self._processes[host] = subprocess.Popen(
                [IP, "netns", "exec", self.namespace(host), *argv, *self._tls_options],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.directory,
                start_new_session=True,  # one process group per host: killpg reaches all of it
            )

    def _wait_ready(self) -> None:
        """Connect (the Client retries until the scheduler listens) and wait for both workers."""
        import distributed

        try:
            with distributed.Client(
                self.scheduler_address, timeout=READY_TIMEOUT, security=self.security
            ) as client:
                client.wait_for_workers(len(WORKER_HOSTS), timeout=READY_TIMEOUT)
                workers = list(client.scheduler_info(n_workers=-1)["workers"])
        except Exception as exc:
            raise RuntimeError(f"the cluster did not start: {exc!r}\n{self.logs()}") from exc
        for host in WORKER_HOSTS:
            prefix = f"{self.protocol}://{self.address(host)}:"
            self.worker_addresses[host] = tuple(a for a in workers if a.startswith(prefix))
        assert all(self.worker_addresses.values()), (workers, self.logs())


def kill_namespace(namespace: str) -> None:
    """SIGKILL the processes in ``namespace`` until none is left (one may start meanwhile)."""
    deadline = time.monotonic() + TIMEOUT
    while pids := [int(pid) for pid in ip("netns", "pids", namespace, check=False).split()]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of {namespace} survive SIGKILL: {pids}")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def sweep_leftovers() -> None:
    """Remove what test runs that died left behind: names whose pid is gone (or reused by us)."""
    for name in _our_names():
        match = _OUR_NAME.match(name)
        assert match is not None
        tag, pid = match.group(1), int(match.group(2))
        if tag in _live or (pid != os.getpid() and _alive(pid)):
            continue
        if name.endswith("br"):
            address = ip("-4", "-o", "addr", "show", "dev", name, check=False).split()
            if "inet" in address:
                _release(address[address.index("inet") + 1].rsplit(".", 1)[0])
            ip("link", "del", name, check=False)
        elif name.startswith("v"):
            ip("link", "del", name, check=False)  # usually gone with its namespace already
        else:
            kill_namespace(name)
            ip("link", "del", f"v{name}", check=False)
            ip("netns", "del", name, check=False)


def _our_names() -> list[str]:
    """Our namespaces (first), then our bridges and veths, of every test run."""
    namespaces = [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]
    links = re.findall(r"^\d+: ([^:@\s]+)", ip("-o", "link", "show"), re.MULTILINE)
    return [name for name in namespaces + links if _OUR_NAME.match(name)]


def _succeeds(*args: str) -> bool:
    return subprocess.run([IP, *args], capture_output=True, timeout=TIMEOUT).returncode == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release(subnet: str) -> None:
    claim = ["route", "del", "unreachable", f"{subnet}.0/24", "metric", str(CLAIM_METRIC)]
    ip(*claim, check=False)


# -- tasks the workers run -----------------------------------------------------------------


def worker_address() -> str:
    """The address of the Dask worker running this task (it listens on its host's address)."""
    import distributed

    return str(distributed.get_worker().address)


def square_where(x: int) -> tuple[int, str]:
    return x * x, worker_address()


def spin_where(milliseconds: float) -> str:
    """About ``milliseconds`` of pure-Python CPU work; the worker's address."""
    end = time.thread_time() + milliseconds / 1000
    while time.thread_time() < end:
        sum(i * i for i in range(200))
    return worker_address()


def square_logged(x: int, log: str, gate: str, gate_from: int) -> int:
    """``x * x``, after appending ``"<worker address> <x>"`` to the file ``log``.

    Items from ``gate_from`` on then wait until the file ``gate`` exists (at
    most TIMEOUT): the test decides when they may finish.
    """
    with open(log, "a") as out:
        out.write(f"{worker_address()} {x}\n")  # one short write: appends do not interleave
    if x >= gate_from:
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nobody opened the gate {gate}")
            time.sleep(0.005)  # polling a file: the test opens the gate from another process
    return x * x


def read_log(log: Path) -> list[tuple[str, int]]:
    """The (worker address, x) lines :func:`square_logged` wrote."""
    if not log.exists():
        return []
    lines = log.read_text().split("\n")[:-1]  # the last one may be half written
    return [(address, int(x)) for address, x in (line.split() for line in lines)]
