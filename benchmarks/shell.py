"""Benchmark of ``workcrew run`` against ``xargs -P`` and GNU parallel: many short commands.

Registered in ``run.py`` as ``"run": kinds_workload("run", "shell")``; also runs alone::

    .venv/bin/python benchmarks/shell.py [--quick]

Each tool reads the same inputs on stdin and runs one short command per input,
2 at a time, its output sent to /dev/null.  The figure is jobs/s over the whole
run (start-up included); the note gives the tool's start-up (the run of one
job) and the marginal cost of one more job, (T(n) - T(1)) / (n - 1): what the
issue's "per-job overhead within 1.5x of xargs -P" is about.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Result, progress

JOBS = 2_000
SLOTS = 2


def _commands() -> list[tuple[str, list[str], bool, str]]:
    """(name, argv, is workcrew, note when missing) of every contender."""
    slots = str(SLOTS)
    return [
        (
            f"workcrew run -j {slots} echo {{}}",
            [sys.executable, "-m", "workcrew", "run", "-j", slots, "echo", "{}"],
            True,
            "",
        ),
        (
            f"xargs -P {slots} -n 1 echo (no shell: execs /bin/echo)",
            ["xargs", "-P", slots, "-n", "1", "echo"],
            False,
            "",
        ),
        (
            f"xargs -P {slots} -n 1 sh -c 'echo \"$1\"' sh (a shell per job, as workcrew)",
            ["xargs", "-P", slots, "-n", "1", "sh", "-c", 'echo "$1"', "sh"],
            False,
            "",
        ),
        (
            f"GNU parallel -j {slots} echo {{}}",
            ["parallel", "--will-cite", "-j", slots, "echo", "{}"],
            False,
            "not installed (apt-get install parallel)",
        ),
    ]


def _best_time(argv: list[str], inputs: Path, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        with inputs.open("rb") as stdin:
            start = time.perf_counter()
            subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, check=True)
            best = min(best, time.perf_counter() - start)
    return best


def bench_run(repeats: int, quick: bool) -> tuple[str, list[str], list[Result], list[str]]:
    """jobs/s of each tool on ``JOBS`` short commands; notes give start-up and per-job cost."""
    n = 300 if quick else JOBS
    rows: list[Result] = []
    missing: list[str] = []
    per_job: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        many, one = Path(tmp) / "many", Path(tmp) / "one"
        many.write_text("".join(f"{i}\n" for i in range(n)))
        one.write_text("0\n")
        for name, argv, ours, absent in _commands():
            if shutil.which(argv[0]) is None:
                missing.append(f"{name}: skipped, {absent}")
                continue
            startup = _best_time(argv, one, repeats)
            total = _best_time(argv, many, repeats)
            per_job[name] = (total - startup) / (n - 1)
            note = f"start-up {startup * 1000:.0f} ms, {per_job[name] * 1e6:.0f} µs per job"
            rows.append(Result(name, n / total, ours, note))
            progress(f"run {name}: {n / total:,.0f} jobs/s ({note})")
    [workcrew_cost] = [per_job[r.name] for r in rows if r.workcrew]
    [xargs_cost] = [per_job[r.name] for r in rows if "no shell" in r.name]
    notes = [
        f"{n:,} jobs of `echo N`, {SLOTS} at a time, inputs on stdin, output to /dev/null; "
        f"best of {repeats}. jobs/s counts the whole run, start-up included.",
        "Per job: (T(n) - T(1)) / (n - 1), the marginal wall time of one more job at "
        f"{SLOTS} at a time. workcrew run / xargs -P (no shell): "
        f"{workcrew_cost / xargs_cost:.2f}x (the issue's target: at most 1.5x).",
        "workcrew run starts `/bin/sh -c` per job (in its own process group, stdout and "
        "stderr captured and written whole); xargs without a shell only forks and execs.",
        *missing,
    ]
    return f"Shell commands: {n:,} short jobs", ["jobs/s"], rows, notes


if __name__ == "__main__":
    title, _, results, notes = bench_run(3, "--quick" in sys.argv)
    print(title)
    for r in results:
        print(f"  {r.name:<75} {r.value:>8,.0f} jobs/s  {r.note}")
    for note in notes:
        print(f"  - {note}")
