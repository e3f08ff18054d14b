"""Shutdown leaves nothing behind: Ctrl-C, interpreter exit, __main__ code under spawn."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from helpers import TIMEOUT

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return path


def _run(path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(
        [sys.executable, str(path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _assert_gone(pids: list[int]) -> None:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=TIMEOUT)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], "orphaned workers"


def test_ctrl_c_during_map_raises_and_leaves_no_orphans(tmp_path: Path, start_method: str) -> None:
    path = _script(
        tmp_path,
        """
        import os, sys, time
        from workcrew import Pool

        def slow(x):
            os.write(1, f"running {os.getpid()}\\n".encode())  # one write: lines never mix
            while True:          # a task that would never end by itself
                time.sleep(0.05)

        if __name__ == "__main__":
            try:
                with Pool(2, start_method=sys.argv[1], worker_output="tagged") as pool:
                    pool.map(slow, range(4), chunksize=1)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(3)
        """,
    )
    proc = _run(path, start_method)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # a task is running: map is in progress
    assert re.fullmatch(r"\[worker \d+\] running \d+\n", line), line  # tagged by the master
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 3, err
    assert "interrupted" in out
    pids = [int(w.split()[-1]) for w in (line + out).splitlines() if "] running " in w]
    _assert_gone(pids)


@pytest.mark.parametrize("api", ["Pool", "Executor"])
def test_interpreter_exit_with_open_pool_leaves_no_orphans(
    tmp_path: Path, start_method: str, api: str
) -> None:
    path = _script(
        tmp_path,
        """
        import os, sys
        from workcrew import Executor, Pool

        def pid(_):
            return os.getpid()

        if __name__ == "__main__":
            cls = Pool if sys.argv[2] == "Pool" else Executor
            pool = cls(2, start_method=sys.argv[1])
            fut = pool.submit(pid, 0)
            print("worker", fut.result(), flush=True)
            late = pool.submit(pid, 1)   # never waited for
            # no close(), no shutdown(): the interpreter exits with the pool open
        """,
    )
    proc = _run(path, start_method, api)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    _assert_gone([int(line.split()[1]) for line in out.splitlines()])


def test_main_module_functions_and_lambdas_under_spawn(tmp_path: Path) -> None:
    path = _script(
        tmp_path,
        """
        from workcrew import Pool

        def cube(x):
            return x ** 3

        if __name__ == "__main__":
            scale = 2
            with Pool(2, start_method="spawn") as pool:
                print(pool.map(cube, [1, 2, 3]), pool.map(lambda x: x * scale, [1, 2]))
        """,
    )
    proc = _run(path)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert out.strip() == "[1, 8, 27] [2, 4]"


def test_code_from_command_line_runs_under_spawn() -> None:
    # With -c, __main__ has no file the worker could import: cloudpickle sends
    # the function by value.
    code = textwrap.dedent("""
        from workcrew import Pool
        def double(x):
            return 2 * x
        if __name__ == "__main__":
            with Pool(1, start_method="spawn") as pool:
                print(pool.map(double, [1, 2]))
        """)
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[2, 4]"


def test_a_forked_worker_never_closes_a_reused_descriptor_number() -> None:
    # The master descriptors are listed before a fork; another pool may close one
    # and the number be reused (by the fork's own sentinel pipe) before the child
    # closes the list.  Only a number that still names the registered file closes.
    from workcrew._core._fds import (
        close_inherited,
        master_fds,
        register_master_fd,
        unregister_master_fd,
    )

    old_r, old_w = os.pipe()
    register_master_fd(old_r)
    snapshot = [entry for entry in master_fds() if entry[0] == old_r]
    unregister_master_fd(old_r)
    os.close(old_r)
    new_r, new_w = os.pipe()  # the lowest free number: the one just closed
    try:
        assert new_r == old_r
        close_inherited(snapshot, keep=set())
        os.fstat(new_r)  # still open: it names another pipe than the one registered
        register_master_fd(new_r)
        close_inherited([e for e in master_fds() if e[0] == new_r], keep=set())
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(new_r)  # the registered file itself is closed
    finally:
        unregister_master_fd(new_r)
        for fd in (old_w, new_r, new_w):
            try:
                os.close(fd)
            except OSError:
                pass


def test_a_task_that_left_an_executor_open_does_not_stop_its_worker_exiting(
    start_method: str,
) -> None:
    # The executor shuts down in threading's exit hooks, which the worker runs
    # as it ends; without them the worker would join the executor's process
    # forever, and so would join().
    import threading

    import workcrew
    from helpers import leave_an_executor_open

    pool = workcrew.Pool(1, start_method=start_method)
    assert pool.map(leave_an_executor_open, [3]) == [9]
    pool.close()
    joiner = threading.Thread(target=pool.join)
    joiner.start()
    joiner.join(TIMEOUT)
    assert not joiner.is_alive(), "join() waited on a worker that could not exit"
