"""workcrew's fork server: workers see what a forkserver child of multiprocessing sees.

Programs run in fresh interpreters (each starts its own server); the pool's
answers come back as one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import workcrew
from helpers import TIMEOUT
from workcrew._backends._forkserver import server_pid

SRC = str(Path(workcrew.__file__).resolve().parent.parent)


def run_program(
    tmp_path: Path,
    text: str,
    *args: str,
    name: str = "program.py",
    options: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``text`` as the script ``name`` in ``tmp_path`` (``python [options] name``, there)."""
    (tmp_path / name).write_text(text)
    done = subprocess.run(
        [sys.executable, *options, name, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
        env={"PYTHONPATH": f"{SRC}:{tmp_path}", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def last_line(done: subprocess.CompletedProcess[str]) -> object:
    """A program's last line of output, as JSON."""
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_script(tmp_path: Path, text: str, *args: str) -> object:
    """Run ``text`` as a script in a fresh interpreter; its last line, as JSON."""
    return last_line(run_program(tmp_path, text, *args))


MAIN_NAMES = """
import json, multiprocessing, os
import workcrew

class Point:
    def __init__(self, x):
        self.x = x

def describe(point):
    me = multiprocessing.current_process()
    return [
        type(point).__module__,
        point.x,
        me.name,
        multiprocessing.parent_process().pid,
        bytes(me.authkey).hex(),
    ]

if __name__ == "__main__":
    with workcrew.Pool(2) as pool:
        rows = pool.map(describe, [Point(1), Point(2)])
    me = multiprocessing.current_process()
    print(json.dumps([rows, os.getpid(), bytes(me.authkey).hex()]))
"""


def test_workers_find_the_main_module_s_names_and_their_caller(tmp_path: Path) -> None:
    rows, caller, authkey = run_script(tmp_path, MAIN_NAMES)  # type: ignore[misc]
    for module, _, name, parent, key in rows:
        # the script ran in the server as __mp_main__, so its classes load in workers
        assert module == "__mp_main__"  # as multiprocessing names it there
        assert name.startswith("workcrew-worker-")
        assert parent == caller  # the caller is the parent, not the server
        assert key == authkey  # manager proxies authenticate with it
    assert sorted(row[1] for row in rows) == [1, 2]


MAIN_AS_RUN = """
import json, multiprocessing, sys
import workcrew

ARGV0 = sys.argv[0]  # at the top level: what the script saw as the server ran it


def how_main_ran(_: int) -> list:
    main = sys.modules["__main__"]
    # the copy the server ran (this function came by value): its annotations are
    # objects, not strings, under the script's own future flags, not the server's
    annotations = [type(v).__name__ for v in main.how_main_ran.__annotations__.values()]
    return [main.__name__, main.__file__, main.ARGV0, sys.modules["__mp_main__"] is main,
            annotations]


if __name__ == "__main__":
    method = sys.argv[1]
    if method == "workcrew":
        with workcrew.Pool(1) as pool:
            print(json.dumps(pool.apply(how_main_ran, (0,))))
    else:
        with multiprocessing.get_context("forkserver").Pool(1) as pool:
            print(json.dumps(pool.apply(how_main_ran, (0,))))
"""


@pytest.mark.parametrize("name", ["program.py", "program"])
def test_the_main_script_runs_in_the_server_as_multiprocessing_runs_it(
    tmp_path: Path, name: str
) -> None:
    # program.py runs in workcrew's own runner (no runpy); a script without
    # the suffix goes through multiprocessing's.  Run by a relative path, as
    # ``python program.py`` is: both see what multiprocessing's server sees.
    seen = {
        method: last_line(run_program(tmp_path, MAIN_AS_RUN, method, name=name))
        for method in ("workcrew", "multiprocessing")
    }
    assert seen["workcrew"] == seen["multiprocessing"]
    path = str(tmp_path / name)
    assert seen["workcrew"] == ["__mp_main__", path, path, True, ["type", "type"]]


FAILING_MAIN = """
import json, sys
import workcrew

if __name__ == "__mp_main__":
    raise RuntimeError("this script refuses to run in the fork server")


def twice(x):
    return [2 * x, "__mp_main__" in sys.modules]


if __name__ == "__main__":
    with workcrew.Pool(1) as pool:
        print(json.dumps(pool.map(twice, [1, 2])))
"""


def test_a_main_script_that_fails_in_the_server_is_reported_and_skipped(
    tmp_path: Path,
) -> None:
    done = run_program(tmp_path, FAILING_MAIN)
    assert "the forkserver could not run the main module" in done.stderr
    assert "this script refuses to run in the fork server" in done.stderr
    # functions travel by value; no half-run __mp_main__ stays behind
    assert last_line(done) == [[2, False], [4, False]]


UNGUARDED = """
import json, sys
import workcrew

with open(sys.argv[1], "a") as log:
    log.write(__name__ + "\\n")


def square(x):
    return x * x


with workcrew.Pool(1) as pool:  # no __main__ guard: the server runs this too
    print(json.dumps(pool.map(square, [1, 2, 3])))

with open(sys.argv[1], "a") as log:
    log.write("mapped in " + __name__ + "\\n")
"""


def test_an_unguarded_main_module_does_not_run_its_work_again_in_the_server(
    tmp_path: Path,
) -> None:
    log = tmp_path / "runs.log"
    done = run_program(tmp_path, UNGUARDED, str(log))
    assert done.stdout.strip().splitlines() == ["[1, 4, 9]"]
    # the server ran the top level and stopped at the pool, as multiprocessing's does
    assert log.read_text().splitlines() == ["__main__", "__mp_main__", "mapped in __main__"]
    assert "bootstrapping phase" in done.stderr
    assert "could not run the main module" in done.stderr


SERVER_EXIT = """
import atexit, json, os, sys
import workcrew
from workcrew._backends._forkserver import server_pid

LOG = sys.argv[1]


def note():
    with open(LOG, "a") as log:
        log.write(f"{os.getpid()} {server_pid()}\\n")


atexit.register(note)  # at the top level: the server runs it too, as __mp_main__


def pid(_):
    return os.getpid()


if __name__ == "__main__":
    with workcrew.Pool(1) as pool:
        pool.apply(pid, (0,))
    print(json.dumps([os.getpid(), server_pid()]))
"""


def test_the_server_is_let_go_as_the_program_exits_and_runs_its_exit_hooks(
    tmp_path: Path,
) -> None:
    log = tmp_path / "exits.log"
    caller, server = run_script(tmp_path, SERVER_EXIT, str(log))  # type: ignore[misc]
    # run_script returned: the server closed the stderr it shares with the
    # program, so it has ended, after its exit hooks.  The program's own hook,
    # registered before the first pool, ran after workcrew's, which had
    # already let the server go; the server's copy of the hook ran in it.
    lines = sorted(log.read_text().split("\n")[:-1])
    assert server is not None and lines == sorted([f"{caller} None", f"{server} None"])


PRELOAD = """
import json, multiprocessing, os, sys
import workcrew

def where(_):
    import probe_module
    return probe_module.LOADED_IN, os.getpid()

if __name__ == "__main__":
    multiprocessing.set_forkserver_preload(["probe_module"])
    with workcrew.Pool(1) as pool:
        loaded_in, worker = pool.apply(where, (0,))
    print(json.dumps([loaded_in, worker, os.getpid(), "probe_module" in sys.modules]))
"""


def test_set_forkserver_preload_applies_to_the_server(tmp_path: Path) -> None:
    (tmp_path / "probe_module.py").write_text("import os\nLOADED_IN = os.getpid()\n")
    loaded_in, worker, caller, in_caller = run_script(tmp_path, PRELOAD)  # type: ignore[misc]
    assert loaded_in not in (worker, caller)  # imported once, by the server
    assert not in_caller


KILLED_SERVER = """
import json, os, signal
import workcrew
from workcrew._backends._forkserver import server_pid

def pid(_):
    return os.getpid()

if __name__ == "__main__":
    pool = workcrew.Pool(2)
    before = set(pool.map(pid, range(20), chunksize=1))
    first = server_pid()
    os.kill(first, signal.SIGKILL)
    os.waitpid(first, 0)
    during = set(pool.map(pid, range(20), chunksize=1))  # its workers live on
    pool.terminate()
    pool.join()
    with workcrew.Pool(1) as again:  # a new pool starts a new server
        after = again.apply(pid, (0,))
    print(json.dumps([sorted(before), sorted(during), first, server_pid(), after]))
"""


def test_a_killed_server_leaves_its_workers_running_and_is_started_again(
    tmp_path: Path,
) -> None:
    before, during, first, second, after = run_script(tmp_path, KILLED_SERVER)  # type: ignore[misc]
    assert during == before
    assert second not in (None, first)
    assert after not in before


FORKED_CALLER = """
import json, os
import workcrew
from workcrew._backends._forkserver import server_pid

def pid(_):
    return os.getpid()

if __name__ == "__main__":
    with workcrew.Pool(1) as pool:
        pool.apply(pid, (0,))
    parent_server = server_pid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        with workcrew.Pool(1) as pool:
            worker = pool.apply(pid, (0,))
        os.write(write, json.dumps([server_pid(), worker]).encode())
        os._exit(0)
    os.close(write)
    answer = json.loads(os.read(read, 1000))
    os.waitpid(child, 0)
    print(json.dumps([parent_server, *answer]))
"""


def test_a_forked_caller_starts_a_server_of_its_own(tmp_path: Path) -> None:
    parent_server, child_server, worker = run_script(tmp_path, FORKED_CALLER)  # type: ignore[misc]
    assert child_server not in (None, parent_server)
    assert worker != child_server


def test_a_worker_killed_at_birth_is_reported_with_its_signal() -> None:
    from workcrew._backends import _forkserver

    # Drive the server directly: ask for a worker whose start-up data is a
    # pickle that never comes, kill it, and read its status.
    with workcrew.Pool(1) as pool:  # the server runs
        assert pool.apply(abs, (-3,)) == 3
    popen = _forkserver._ServerPopen.__new__(_forkserver._ServerPopen)
    popen.returncode = None
    status_ours, status_theirs = socket.socketpair()
    data_r, data_w = os.pipe()
    _forkserver._server.request([status_theirs.fileno(), data_r])
    status_theirs.close()
    os.close(data_r)
    popen.sentinel = status_ours.detach()
    try:
        pid = popen._read_status(TIMEOUT)
        assert pid is not None and pid > 0
        os.kill(pid, signal.SIGKILL)
        assert popen.wait(TIMEOUT) == -signal.SIGKILL
    finally:
        os.close(data_w)
        os.close(popen.sentinel)


@pytest.mark.parametrize("count", [70])
def test_too_many_descriptors_for_one_worker_is_a_clear_error(count: int) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    pipes = [ctx.Pipe(duplex=False) for _ in range(count // 2)]
    try:
        with (
            pytest.raises(workcrew.BrokenPoolError, match="descriptors"),
            workcrew.Pool(1, initializer=len, initargs=(pipes,)) as pool,
        ):
            pool.apply(abs, (1,))
    finally:
        for reader, writer in pipes:
            reader.close()
            writer.close()
    assert server_pid() is not None


def test_a_worker_sees_the_caller_s_environment_as_it_starts(
    start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fork server started with some earlier environment (another test's
    # pool, or this one's first); a worker started later sees the caller's now.
    with workcrew.Pool(1, start_method=start_method) as pool:
        assert pool.apply(os.getenv, ("WORKCREW_TEST_ENV",)) is None
    monkeypatch.setenv("WORKCREW_TEST_ENV", "set after the server started")
    monkeypatch.delenv("HOME", raising=False)
    with workcrew.Pool(1, start_method=start_method) as pool:
        assert pool.apply(os.getenv, ("WORKCREW_TEST_ENV",)) == "set after the server started"
        assert pool.apply(os.getenv, ("HOME",)) is None


# Options as a user gives them to ``python``; ``-P`` exists from Python 3.11.
INTERPRETER_OPTIONS = [
    [],
    ["-B"],
    ["-O"],
    ["-OO", "-B"],
    ["-E"],
    ["-s"],
    ["-I"],
    ["-S"],
    ["-q"],
    ["-b"],
    ["-bb"],
    ["-W", "error::DeprecationWarning"],
    ["-X", "dev"],
    ["-X", "utf8"],
    ["-X", "faulthandler"],
    *([["-P"]] if sys.version_info >= (3, 11) else []),
]

# -E and -I ignore PYTHONPATH: the source tree goes on sys.path by hand.
COMPARE_OPTIONS = f"""
import json, subprocess, sys
sys.path.insert(0, {SRC!r})
from workcrew._backends._forkserver import _interpreter_args
print(json.dumps([_interpreter_args(), subprocess._args_from_interpreter_flags()]))
"""


@pytest.mark.parametrize("options", INTERPRETER_OPTIONS, ids=" ".join)
def test_the_server_s_options_are_those_multiprocessing_would_give_it(
    options: list[str],
) -> None:
    # The launch computes the options without importing subprocess where it can.
    done = subprocess.run(
        [sys.executable, *options, "-c", COMPARE_OPTIONS],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ours, stdlib = last_line(done)  # type: ignore[misc]  # a JSON list of two
    assert ours == stdlib


WORKER_FLAGS = """
import json, sys
import workcrew

def flags(_):
    return [sys.flags.optimize, sys.flags.dont_write_bytecode, sys.warnoptions]

if __name__ == "__main__":
    with workcrew.Pool(1) as pool:
        print(json.dumps(pool.apply(flags, (0,))))
"""


def test_a_worker_runs_with_the_caller_s_interpreter_options(tmp_path: Path) -> None:
    options = ("-O", "-B", "-W", "error::DeprecationWarning")
    done = run_program(tmp_path, WORKER_FLAGS, options=options)
    assert last_line(done) == [1, 1, ["error::DeprecationWarning"]]


SERVER_DESCRIPTORS = """
import json, os
import workcrew
from workcrew._backends._forkserver import server_pid

def inode(fd):
    return os.fstat(fd).st_ino

if __name__ == "__main__":
    read, write = os.pipe()
    os.set_inheritable(write, True)  # as a program preparing a child of its own would
    with workcrew.Pool(1) as pool:
        pool.apply(abs, (1,))
        where = f"/proc/{server_pid()}/fd"
        held = {os.stat(os.path.join(where, name)).st_ino for name in os.listdir(where)}
        print(json.dumps([
            inode(write) in held,
            os.readlink(f"{where}/0"),
            os.readlink(f"{where}/1"),
            os.get_inheritable(write),
        ]))
"""


def test_the_server_holds_no_inheritable_descriptor_of_the_caller(tmp_path: Path) -> None:
    # As subprocess's close_fds=True: a pipe the program left inheritable does
    # not stay open in the server (its reader would never see end of file).
    answer = run_script(tmp_path, SERVER_DESCRIPTORS)
    held, stdin, stdout, still_inheritable = answer  # type: ignore[misc]  # a JSON list of four
    assert held is False
    assert stdin == stdout == os.devnull
    assert still_inheritable is True  # the caller's own descriptor is left as it was


CLOSED_STDIO = """
import json, os, sys
import workcrew

def pid(_):
    return os.getpid()

if __name__ == "__main__":
    out = os.dup(1)
    for fd in {closed}:
        os.close(fd)  # the server's channel now takes these numbers in this process
    with workcrew.Pool(1) as pool:
        worker = pool.apply(pid, (0,))
    os.write(out, json.dumps(worker).encode() + b"\\n")
"""


@pytest.mark.parametrize(
    "closed",
    [(0, 1), (0,)],
    ids=["stdin and stdout: the channel on fd 1", "stdin: the channel on the server's fd 3"],
)
def test_a_program_that_closed_stdin_or_stdout_starts_its_server(
    tmp_path: Path, closed: tuple[int, ...]
) -> None:
    # The channel is copied to the server's descriptor before /dev/null takes 0 and
    # 1, and to the next one when it is on the server's number already.
    worker = run_script(tmp_path, CLOSED_STDIO.replace("{closed}", repr(closed)))
    assert isinstance(worker, int) and worker > 0


def test_waiting_for_a_status_sees_data_end_of_file_and_the_timeout() -> None:
    from workcrew._backends._forkserver import _readable

    read, write = os.pipe()
    try:
        assert not _readable(read, 0)  # nothing yet, no wait
        assert not _readable(read, 0.001)  # nothing within the timeout
        os.write(write, b"x")
        assert _readable(read, None)  # data: at once, even without a timeout
        os.read(read, 1)
        os.close(write)
        write = -1
        assert _readable(read, 0)  # end of file is readable: the server is gone
    finally:
        os.close(read)
        if write != -1:
            os.close(write)
