"""``workcrew run``, driven as a user would: a subprocess, bytes in and out.

No test sleeps to synchronise: jobs that must wait block on a FIFO that
another job (or the test) opens, and ordering claims rest on the job slots
(with ``-j 2`` a third job starts only once one of the first two has ended).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE

import psutil
import pytest

from helpers import TIMEOUT

SRC = str(Path(__file__).resolve().parents[1] / "src")

#: Inputs that a careless tool would hand to the shell as code, or mangle.
HOSTILE = [
    b"it's",
    b'say "hi"',
    b"$(echo pwned)",
    b"`echo pwned`",
    b"a; echo pwned",
    b"x | cat",
    b"a && b || c",
    b"multi\nline",
    b"-n",
    b"--",
    b"*",
    b"~",
    b"$HOME",
    b"two  spaces\ttab",
    b"",
    b"back\\slash",
    b"{} {.} {#}",
    b"\xff\xfe non-UTF-8 \x80",
    b"caf\xc3\xa9",
    b"> out.txt",
]


RUN = [sys.executable, "-m", "workcrew", "run"]
ENV = {**os.environ, "PYTHONPATH": SRC}


def _workcrew(
    *args: str | bytes, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*RUN, *args],
        input=stdin,
        capture_output=True,
        env=ENV,
        cwd=cwd,
        timeout=TIMEOUT,
        check=False,
    )


def _lines(out: bytes) -> list[str]:
    return out.decode().splitlines()


def _joblog(path: Path) -> list[list[str]]:
    header, *rows = path.read_bytes().decode().splitlines()
    assert header == "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
    return [row.split("\t", 8) for row in rows]


# -- inputs arrive literally --------------------------------------------------------------

PRINT_NUL = "printf '%s\\0' {}"  # each input back, NUL-terminated (inputs may hold newlines)


def test_hostile_inputs_after_colons_arrive_literally(tmp_path: Path) -> None:
    proc = _workcrew("-k", PRINT_NUL, ":::", *HOSTILE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(b"\0")[:-1] == HOSTILE
    assert list(tmp_path.iterdir()) == []  # nothing ran "> out.txt"


def test_hostile_inputs_from_stdin_with_nul_separators_arrive_literally(tmp_path: Path) -> None:
    proc = _workcrew("-0", "-k", PRINT_NUL, stdin=b"\0".join(HOSTILE) + b"\0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(b"\0")[:-1] == HOSTILE


def test_lines_of_stdin_and_of_an_arg_file_arrive_literally(tmp_path: Path) -> None:
    lines = [line for line in HOSTILE if b"\n" not in line]
    data = b"\n".join(lines) + b"\n"
    proc = _workcrew("-k", PRINT_NUL, stdin=data, cwd=tmp_path)
    assert proc.stdout.split(b"\0")[:-1] == lines
    (tmp_path / "inputs").write_bytes(data)
    proc = _workcrew("-k", "-a", "inputs", PRINT_NUL, cwd=tmp_path)
    assert proc.stdout.split(b"\0")[:-1] == lines
    proc = _workcrew("-k", PRINT_NUL, "::::", "inputs", cwd=tmp_path)
    assert proc.stdout.split(b"\0")[:-1] == lines


def test_without_a_placeholder_the_quoted_input_is_appended(tmp_path: Path) -> None:
    proc = _workcrew("-k", "printf", "'[%s]'", ":::", "a b", "$(id)", cwd=tmp_path)
    assert proc.stdout == b"[a b][$(id)]"


def test_without_a_command_each_input_is_a_command() -> None:
    proc = _workcrew("-k", ":::", "echo one", "echo two | tr a-z A-Z")
    assert _lines(proc.stdout) == ["one", "TWO"]


def test_placeholders_follow_gnu_parallel() -> None:
    template = "echo '<'{}'|'{.}'|'{/}'|'{//}'|'{/.}'>'"
    inputs = ["a/b.c/d", "a.b/c.tar.gz", "foo", "/", "a/b/"]
    proc = _workcrew("-k", template, ":::", *inputs)
    assert _lines(proc.stdout) == [  # as GNU parallel 20221122 prints them
        "<a/b.c/d|a/b.c/d|d|a/b.c|d>",
        "<a.b/c.tar.gz|a.b/c.tar|c.tar.gz|a.b|c.tar>",
        "<foo|foo|foo|.|foo>",
        "</|/||/|>",
        "<a/b/|a/b/||a|>",
    ]


def test_several_sources_give_every_combination_with_numbered_placeholders() -> None:
    proc = _workcrew("-k", "-j", "2", "echo {#} {2}{1} {}", ":::", "a", "b", ":::", "1", "2")
    assert _lines(proc.stdout) == ["1 1a a 1", "2 2a a 2", "3 1b b 1", "4 2b b 2"]


def test_job_slots_stay_within_the_job_count() -> None:
    proc = _workcrew("-j", "3", "echo {%}", ":::", *map(str, range(30)))
    assert proc.returncode == 0, proc.stderr
    assert set(_lines(proc.stdout)) <= {"1", "2", "3"}
    assert len(_lines(proc.stdout)) == 30


def test_colsep_splits_each_input_into_columns() -> None:
    proc = _workcrew("-k", "--colsep", ",", "echo {2}-{1}", stdin=b"a,1\nb,2\n")
    assert _lines(proc.stdout) == ["1-a", "2-b"]


def test_dry_run_prints_commands_and_runs_nothing(tmp_path: Path) -> None:
    proc = _workcrew("--dry-run", "-j", "2", "touch {%}{}", ":::", "x y", "z", cwd=tmp_path)
    assert proc.returncode == 0
    assert _lines(proc.stdout) == ["touch 1'x y'", "touch 2z"]
    assert list(tmp_path.iterdir()) == []


# -- output, order, exit status ----------------------------------------------------------------


def test_each_jobs_output_is_kept_whole() -> None:
    # 20 jobs writing 200 lines each, to stdout and stderr, 4 at a time
    job = "for i in $(seq 200); do echo {}-$i; echo {}-$i >&2; done"
    proc = _workcrew("-j", "4", job, ":::", *map(str, range(20)))
    assert proc.returncode == 0
    for stream in (proc.stdout, proc.stderr):
        lines = _lines(stream)
        assert len(lines) == 20 * 200
        blocks = [lines[i : i + 200] for i in range(0, len(lines), 200)]
        for block in blocks:
            name = block[0].split("-")[0]
            assert block == [f"{name}-{i}" for i in range(1, 201)]


def _fifo(tmp_path: Path) -> str:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


# Job 1 waits until job 3 starts, and with -j 2 job 3 starts only once job 2 has ended:
# job 2 always ends first, job 1 and job 3 in any order.
def _ordering_inputs(fifo: str) -> list[str]:
    return [f"read x < {fifo}; echo 1", "echo 2", f"echo go > {fifo}; echo 3"]


def test_keep_order_writes_outputs_in_input_order(tmp_path: Path) -> None:
    proc = _workcrew("-k", "-j", "2", ":::", *_ordering_inputs(_fifo(tmp_path)))
    assert _lines(proc.stdout) == ["1", "2", "3"]


def test_without_keep_order_outputs_come_as_jobs_end(tmp_path: Path) -> None:
    proc = _workcrew("-j", "2", ":::", *_ordering_inputs(_fifo(tmp_path)))
    lines = _lines(proc.stdout)
    assert lines[0] == "2"
    assert sorted(lines) == ["1", "2", "3"]


def test_exit_status_counts_failed_jobs() -> None:
    proc = _workcrew("exit", ":::", "0", "3", "0", "1", "255")
    assert proc.returncode == 3
    assert _workcrew("true", ":::", "a", "b").returncode == 0


def test_exit_status_is_capped_at_101() -> None:
    proc = _workcrew("-j", "4", "false", ":::", *map(str, range(102)))
    assert proc.returncode == 101


def test_a_job_that_cannot_start_fails_alone() -> None:
    # a NUL byte cannot be part of a command line (without -0, NUL is inside a line)
    proc = _workcrew("-k", "echo", stdin=b"a\0b\nc\n")
    assert (proc.returncode, proc.stdout) == (1, b"c\n")
    assert b"job 1 could not start: embedded null byte" in proc.stderr


def test_no_input_runs_nothing() -> None:
    proc = _workcrew("echo", "x")
    assert (proc.returncode, proc.stdout) == (0, b"")


# -- joblog, resume, halt -----------------------------------------------------------------------


def test_joblog_has_gnu_parallels_format(tmp_path: Path) -> None:
    log = tmp_path / "log"
    commands = ["exit 3", "kill -9 $$", "echo hi; echo err >&2", "echo 'multi\nline'"]
    proc = _workcrew("-k", "--joblog", str(log), ":::", *commands)
    assert proc.returncode == 2
    rows = _joblog(log)
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    for row in rows:
        assert row[1] == ":"
        assert re.fullmatch(r"\d{10}\.\d{3}", row[2])
        assert re.fullmatch(r" *\d+\.\d{3}", row[3]) and len(row[3]) >= 10
        assert row[4] == "0"
    assert [row[5:8] for row in rows] == [
        ["0", "3", "0"],
        ["0", "0", "9"],
        ["3", "0", "0"],
        ["11", "0", "0"],
    ]
    assert [row[8] for row in rows] == ["exit 3", "kill -9 $$", commands[2], "echo 'multi\0line'"]


def test_halt_now_stops_at_the_first_failure_and_resume_runs_exactly_the_rest(
    tmp_path: Path,
) -> None:
    log = str(tmp_path / "log")
    os.mkfifo(tmp_path / "started")
    os.mkfifo(tmp_path / "never")
    # -j 2.  Job 2 hands its pid to job 3 (which runs in job 1's slot) and blocks on a FIFO
    # no one opens, until the halt kills it; job 3 fails.  No other job can start before:
    # both slots are busy.
    job = (
        "case {} in 2) echo $$ > started; read x < never;; "
        "3) cat started > pid; exit 7;; esac; echo {}"
    )
    args = ("-j", "2", "--joblog", log, "--halt", "now,fail=1", job, ":::", *"123456")
    proc = _workcrew(*args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # job 2 was killed by the halt: not a failure
    assert _lines(proc.stdout) == ["1"]
    assert b"halting (--halt now,fail=1) after job 3: case 3 in" in proc.stderr
    assert [(row[0], row[6]) for row in _joblog(Path(log))] == [("1", "0"), ("3", "7")]
    assert not _alive(int((tmp_path / "pid").read_text()))
    # --resume: every job the log does not show, and only those
    proc = _workcrew("-j", "2", "--joblog", log, "--resume", "echo {}", ":::", *"123456")
    assert (proc.returncode, sorted(_lines(proc.stdout))) == (0, ["2", "4", "5", "6"])
    # --resume-failed: now only job 3 is left; its new line is appended
    proc = _workcrew("--joblog", log, "--resume-failed", "echo {}", ":::", *"123456")
    assert (proc.returncode, _lines(proc.stdout)) == (0, ["3"])
    rows = _joblog(Path(log))
    assert sorted(row[0] for row in rows) == ["1", "2", "3", "3", "4", "5", "6"]
    assert rows[-1][0] == "3" and rows[-1][6] == "0"
    proc = _workcrew("--joblog", log, "--resume", "echo {}", ":::", *"123456")
    assert (proc.returncode, proc.stdout) == (0, b"")


def test_halt_soon_starts_no_more_jobs(tmp_path: Path) -> None:
    proc = _workcrew("-j", "1", "--halt", "soon,fail=1", "echo {}; exit {}", ":::", *"0500")
    assert (proc.returncode, _lines(proc.stdout)) == (1, ["0", "5"])
    proc = _workcrew("-j", "1", "--halt-on-error", "exit", ":::", "0", "5", "0")
    assert proc.returncode == 1
    assert b"after job 2" in proc.stderr


def test_halt_soon_lets_running_jobs_finish(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "go")
    # Job 1 waits until the test has seen the halt message; job 2 fails.
    cmd = [*RUN, "-j", "2", "--halt", "soon,fail=1", ":::", "read x < go; echo 1", "exit 4"]
    with subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=PIPE, stderr=PIPE) as proc:
        assert proc.stderr is not None
        assert b"halting (--halt soon,fail=1) after job 2" in proc.stderr.readline()
        (tmp_path / "go").write_text("go\n")
        out, _ = proc.communicate(timeout=TIMEOUT)
    assert (proc.returncode, _lines(out)) == (1, ["1"])


def test_halt_on_successes() -> None:
    proc = _workcrew("-j", "1", "--halt", "now,success=2", "echo", ":::", *"abcd")
    assert (proc.returncode, _lines(proc.stdout)) == (0, ["a", "b"])


# -- timeouts and retries ------------------------------------------------------------------------


def test_timeout_kills_the_jobs_whole_process_group(tmp_path: Path) -> None:
    pids, log = tmp_path / "pids", tmp_path / "log"
    job = f"sleep 60 & echo $! >> {pids}; sleep 60; exit 0"
    started = time.monotonic()
    proc = _workcrew("--timeout", "0.5", "--joblog", str(log), ":::", job, "echo fine")
    assert time.monotonic() - started < TIMEOUT / 2
    assert proc.returncode == 1
    assert b"job 1 timed out after 0.5 s and was killed" in proc.stderr
    assert _lines(proc.stdout) == ["fine"]
    rows = sorted(_joblog(log))
    assert [row[6:8] for row in rows] == [["-1", "15"], ["0", "0"]]
    [child] = [int(pid) for pid in pids.read_text().split()]
    assert not _alive(child)  # the background child went with its group


def _alive(pid: int) -> bool:
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return False
    return bool(status != psutil.STATUS_ZOMBIE)


def test_retries_rerun_a_failing_job(tmp_path: Path) -> None:
    # fails on its first try only
    job = "[ -e {} ] || { touch {}; echo first; exit 1; }; echo second"
    proc = _workcrew("--retries", "1", "--joblog", "log", job, ":::", "marker", cwd=tmp_path)
    assert (proc.returncode, _lines(proc.stdout)) == (0, ["second"])  # failed tries: no output
    assert len(_joblog(tmp_path / "log")) == 1
    proc = _workcrew("--retries", "2", "echo x >> tries; exit 1", ":::", "a", cwd=tmp_path)
    assert proc.returncode == 1
    assert (tmp_path / "tries").read_text().count("x") == 3  # the first try and 2 retries


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--halt", "now,fail=x", "true"], "expected now|soon,fail|success|done=N"),
        (["--halt", "now,fail=10%", "true"], "percentages are not supported"),
        (["echo {3}", ":::", "a", ":::", "b"], "uses {3} but there are 2 input sources"),
        (["--resume", "true", ":::", "a"], "need --joblog FILE"),
        (["-j", "many", "true"], "expected N, +N, -N or N%"),
        (["--jobs=-100", "true"], "leaves no job slot"),
        (["--timeout", "0", "true"], "must be more than 0"),
        (["-a", "/no/such/file", "true"], "No such file or directory"),
        (["--colsep", "(", "true"], "--colsep"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args: list[str], message: str) -> None:
    proc = _workcrew(*args)
    assert proc.returncode == 2
    assert message in proc.stderr.decode()


def test_help_shows_examples_and_the_placeholders() -> None:
    proc = _workcrew("--help")
    assert proc.returncode == 0
    out = proc.stdout.decode()
    assert "workcrew run gzip -9 ::: *.log" in out
    assert "{/.}" in out and "--joblog" in out and "--halt" in out


def test_bar_reports_progress_on_stderr() -> None:
    proc = _workcrew("--bar", "true", ":::", "a", "b", "c")
    assert proc.returncode == 0
    assert re.search(rb"workcrew run: 3/3 tasks", proc.stderr), proc.stderr


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_kills_the_running_jobs(tmp_path: Path, signum: int, status: int) -> None:
    os.mkfifo(tmp_path / "started")
    os.mkfifo(tmp_path / "never")
    job = "echo $$ > started; read x < never"
    cmd = [*RUN, "--joblog", "log", ":::", job]
    with subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stderr=PIPE) as proc:
        with open(tmp_path / "started") as started:  # returns once the job runs
            job_pid = int(started.read())
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == status
    assert b"interrupted; running jobs killed" in err
    assert not _alive(job_pid)
    assert _joblog(tmp_path / "log") == []  # a killed job did not run: --resume reruns it


@pytest.mark.parametrize(
    ("joblog", "why"),
    [
        ("/nonexistent/x.tsv", "No such file or directory"),
        ("/dev/full", "No space left on device"),
        (".", "Is a directory"),
    ],
)
def test_an_unusable_joblog_is_a_one_line_usage_error(joblog: str, why: str) -> None:
    proc = _workcrew("--joblog", joblog, "echo", ":::", "1")
    assert proc.returncode == 2  # a usage error, not "one job failed"
    assert proc.stdout == b""  # no job ran
    err = proc.stderr.decode()
    assert "Traceback" not in err
    assert f"error: --joblog {joblog}: cannot write it: {why}" in err
