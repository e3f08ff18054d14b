"""``workcrew map``, driven as a user would: a subprocess reading lines or JSON, writing JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import TIMEOUT

TESTS = Path(__file__).resolve().parent
SRC = str(TESTS.parent / "src")


def _workcrew(
    *args: str, stdin: bytes = b"", cwd: Path | None = None, path: tuple[str, ...] = (str(TESTS),)
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *path])}
    return subprocess.run(
        [sys.executable, "-m", "workcrew", "map", *args],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=TIMEOUT,
        check=False,
    )


def _records(out: bytes) -> list[Any]:
    return [json.loads(line) for line in out.decode().splitlines()]


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_lines_in_json_records_out_in_order_with_a_failing_item(kind: str) -> None:
    lines = ["a", "bad", 'it\'s "quoted"', "", "c"]
    stdin = "\n".join(lines).encode() + b"\n"
    proc = _workcrew("--kind", kind, "-j", "2", "mapcmd_helpers:shout", stdin=stdin)
    assert proc.returncode == 1, proc.stderr
    assert _records(proc.stdout) == [
        {"input": "a", "output": "A"},
        {"input": "bad", "error": {"type": "ValueError", "message": "bad input 'bad'"}},
        {"input": 'it\'s "quoted"', "output": 'IT\'S "QUOTED"'},
        {"input": "", "output": ""},
        {"input": "c", "output": "C"},
    ]


@pytest.mark.parametrize(("kind", "in_worker_process"), [("process", True), ("thread", False)])
def test_kind_chooses_processes_or_threads(kind: str, in_worker_process: bool) -> None:
    proc = _workcrew("--kind", kind, "-j", "2", "mapcmd_helpers:where", stdin=b"1\n2\n3\n")
    assert proc.returncode == 0, proc.stderr
    outputs = [record["output"] for record in _records(proc.stdout)]
    expected = {"child": in_worker_process, "main_thread": in_worker_process}
    assert all(output == expected for output in outputs)


def test_json_records_from_a_file_with_a_bad_line(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('1\n[1, 2]\n{bad\n\n"x"\n{"a": 1}\n')
    proc = _workcrew("--json", "--kind", "thread", "mapcmd_helpers:double", str(data))
    assert proc.returncode == 2  # the bad line and the dict (dict * 2 fails)
    records = _records(proc.stdout)
    assert records[:2] == [{"input": 1, "output": 2}, {"input": [1, 2], "output": [1, 2, 1, 2]}]
    assert records[2]["input"] == "{bad"
    assert records[2]["error"]["type"] == "json.decoder.JSONDecodeError"
    assert records[3] == {"input": "x", "output": "xx"}
    assert records[4]["input"] == {"a": 1}
    assert records[4]["error"]["type"] == "TypeError"
    assert len(records) == 5  # the blank line is skipped


def test_a_bad_json_line_at_the_end_is_reported_too() -> None:
    proc = _workcrew("--json", "--kind", "thread", "mapcmd_helpers:double", stdin=b"1\nnope\n")
    assert proc.returncode == 1
    assert [r.get("output") for r in _records(proc.stdout)] == [2, None]


def test_results_json_cannot_hold_fail_their_item() -> None:
    for fn, error in (("a_set", "TypeError"), ("not_a_number", "ValueError")):
        proc = _workcrew("--kind", "thread", f"mapcmd_helpers:{fn}", stdin=b"x\n")
        assert proc.returncode == 1
        [record] = _records(proc.stdout)
        assert record["error"]["type"] == error


def test_utf8_stays_text_and_undecodable_bytes_survive_as_escapes() -> None:
    proc = _workcrew("--kind", "thread", "mapcmd_helpers:double", stdin=b"caf\xc3\xa9\n")
    assert proc.stdout.decode() == '{"input": "café", "output": "cafécafé"}\n'
    proc = _workcrew("--kind", "thread", "mapcmd_helpers:double", stdin=b"caf\xc3\xa9 \xff\n")
    assert proc.returncode == 0
    [record] = _records(proc.stdout)  # valid JSON: the byte 0xff as the escape \udcff
    assert record == {"input": "café \udcff", "output": "café \udcffcafé \udcff"}
    assert os.fsencode(record["input"]) == b"caf\xc3\xa9 \xff"


def test_timeout_fails_only_its_item(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stdin = json.dumps(str(fifo)).encode() + b"\n" + b'"x"\n'
    proc = _workcrew("--json", "--timeout", "0.5", "mapcmd_helpers:block_on", stdin=stdin)
    assert proc.returncode == 2  # two failed items
    timed_out, other = _records(proc.stdout)
    assert timed_out["error"]["type"] == "workcrew.TaskTimeout"
    assert "task_timeout of 0.5 s" in timed_out["error"]["message"]
    assert other["error"]["type"] == "FileNotFoundError"  # it ran: "x" is no file


def test_a_crash_fails_only_its_item() -> None:
    proc = _workcrew("--json", "--retries", "1", "mapcmd_helpers:crash", stdin=b"3\n0\n")
    assert proc.returncode == 1
    crashed, survived = _records(proc.stdout)
    assert crashed["error"]["type"] == "workcrew.WorkerCrashed"
    assert "status 3" in crashed["error"]["message"]
    assert survived == {"input": 0, "output": "survived"}


def test_async_kind_runs_coroutine_functions() -> None:
    proc = _workcrew("--json", "--kind", "async", "mapcmd_helpers:anap", stdin=b"1\n2\n")
    assert proc.returncode == 0, proc.stderr
    assert [r["output"] for r in _records(proc.stdout)] == [1, 2]


def test_the_module_is_imported_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("def twice(s):\n    return s + s\n")
    proc = _workcrew("--kind", "process", "mine:twice", "-", stdin=b"ab\n", cwd=tmp_path, path=())
    assert proc.returncode == 0, proc.stderr
    assert _records(proc.stdout) == [{"input": "ab", "output": "abab"}]


def test_exit_status_is_capped_at_101() -> None:
    proc = _workcrew("--kind", "thread", "mapcmd_helpers:shout", stdin=b"bad\n" * 102)
    assert proc.returncode == 101


def test_bar_reports_progress_on_stderr() -> None:
    proc = _workcrew("--bar", "--kind", "thread", "mapcmd_helpers:shout", stdin=b"a\nb\nbad\n")
    assert proc.returncode == 1
    assert b"mapcmd_helpers.shout: 3 tasks, 1 failed" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_colon"], "expected MODULE:FUNCTION"),
        (["no_such_module_here:f"], "No module named 'no_such_module_here'"),
        (["mapcmd_helpers:missing"], "has no function 'missing'"),
        (["mapcmd_helpers:shout", "/no/such/file"], "No such file or directory"),
        (["--kind", "fibre", "mapcmd_helpers:shout"], "invalid choice: 'fibre'"),
        (["-j", "0", "mapcmd_helpers:shout"], "must be 1 or more"),
        (["--timeout", "-1", "mapcmd_helpers:shout"], "must be more than 0"),
        (["mapcmd_helpers:shout", ":::", "a"], "::: and :::: are for `workcrew run`"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args: list[str], message: str) -> None:
    proc = _workcrew(*args)
    assert proc.returncode == 2
    assert message in proc.stderr.decode()


def test_help_shows_examples() -> None:
    proc = _workcrew("--help")
    assert proc.returncode == 0
    assert b"workcrew map --json jobs:resize paths.jsonl" in proc.stdout


def test_version() -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, "-m", "workcrew", "--version"],
        capture_output=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout.decode().startswith("workcrew ")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (".:x", "absolute module name"),
        (".x:y", "absolute module name"),
        ("nosuchmod:f", "nosuchmod"),
    ],
)
def test_an_unusable_function_is_a_one_line_usage_error(spec: str, says: str) -> None:
    proc = _workcrew(spec, stdin=b"1\n")
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "Traceback" not in err
    assert says in err.splitlines()[-1]


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_stdout_carries_only_the_records_what_the_function_prints_goes_to_stderr(
    kind: str,
) -> None:
    # one worker: two threads printing to one sys.stdout may mix their lines (print writes
    # the text and the newline separately); that is Python's, not what is tested here
    proc = _workcrew("--kind", kind, "-j", "1", "mapcmd_helpers:chatty", stdin=b"a\nb\n")
    assert proc.returncode == 0, proc.stderr
    assert _records(proc.stdout) == [{"input": "a", "output": "A"}, {"input": "b", "output": "B"}]
    err = sorted(proc.stderr.decode().splitlines())
    assert err == ["child a", "child b", "fd1 a", "fd1 b", "printed a", "printed b"]
