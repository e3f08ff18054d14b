"""Whole programs, each in a fresh interpreter: import time, and the first and second pool.

A long-lived pool hides what a short script pays: the import, the helper
processes a start method needs (the forkserver, the resource tracker), the
workers' own imports.  Each measurement here runs a new ``python`` and reads
back what it timed, so nothing of an earlier run (a warm forkserver, imported
modules) helps a later one.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import Result

SRC = str(Path(__file__).resolve().parent.parent / "src")

IMPORTS = [
    ("workcrew: import workcrew", "import workcrew", True),
    ("workcrew: from workcrew import Pool", "from workcrew import Pool", True),
    ("multiprocessing.pool", "import multiprocessing.pool", False),
    (
        "concurrent.futures (ProcessPoolExecutor)",
        "from concurrent.futures import ProcessPoolExecutor",
        False,
    ),
]

PROGRAM = """
import json, sys, time
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()

def square(x):
    return x * x

def one_pool():
{run}

if __name__ == "__main__":
    times = []
    for _ in range(2):
        start = time.perf_counter()
        one_pool()
        times.append(time.perf_counter() - start)
    print(json.dumps([t1 - t0, *times]))
"""

# Each program imports what a script written for its library imports; the pool's
# own code then loads with the first pool, in both (multiprocessing.Pool imports
# multiprocessing.pool on its first call, workcrew.Pool loads its engine).
WORKCREW = (
    "from workcrew import Pool",
    """    with Pool(2, start_method={method!r}) as pool:
        assert pool.apply(square, (7,)) == 49""",
)
MULTIPROCESSING = (
    "import multiprocessing",
    """    with multiprocessing.get_context({method!r}).Pool(2) as pool:
        assert pool.apply(square, (7,)) == 49
        pool.close()
        pool.join()""",
)


def _fresh(args: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
    )
    return done.stdout.strip().splitlines()[-1]


def bench_imports(repeats: int) -> list[Result]:
    """Median wall time of each import statement in a fresh interpreter, in ms."""
    results = []
    for name, statement, ours in IMPORTS:
        code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
        times = [float(_fresh(["-c", code])) for _ in range(repeats)]
        results.append(Result(name, statistics.median(times) * 1000, ours, ""))
    return results


def _runs_in_turns(scripts: dict[str, Path], repeats: int) -> dict[str, list[tuple[str, float]]]:
    """Run each script ``repeats`` times, the scripts taking turns: (last output line, seconds).

    A slow moment of the machine then falls on every script alike; every
    other round runs them backwards, so that no script always follows the
    same one.
    """
    runs: dict[str, list[tuple[str, float]]] = {name: [] for name in scripts}
    order = list(scripts.items())
    for turn in range(repeats):
        for name, script in order if turn % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            out = _fresh([str(script)])
            runs[name].append((out, time.perf_counter() - start))
    return runs


def bench_programs(repeats: int, tmp: Path) -> list[Result]:
    """First and second pool of a fresh program (2 workers, one task, shut down), in ms.

    The two libraries' programs take turns; the figure is the median of the runs.
    """
    results = []
    for method in ("forkserver", "fork", "spawn"):
        libraries = (("workcrew", WORKCREW, True), ("multiprocessing", MULTIPROCESSING, False))
        scripts = {}
        for library, (imports, run), _ in libraries:
            script = tmp / f"{library}_{method}.py"
            script.write_text(PROGRAM.format(imports=imports, run=run.format(method=method)))
            scripts[library] = script
        runs = _runs_in_turns(scripts, repeats)
        for library, _, ours in libraries:
            timings = [json.loads(out) for out, _ in runs[library]]
            for index, label in ((1, "first pool"), (2, "second pool")):
                value = statistics.median(t[index] for t in timings) * 1000
                results.append(Result(f"{method}, {label}: {library}", value, ours, ""))
    return results


#: The lecture's Pool example (five tasks on a pool of four, its callers' habits:
#: ``apply_async`` then ``close``/``join``), with each task's random sleep of up
#: to 3 s made a fixed 0.1 s so that runs compare.  The two scripts differ in
#: their import line only; each library runs with its default start method.
LECTURE = """
import os, time
{import_line}

def long_time_task(name):
    print('Run task %s (%s)...' % (name, os.getpid()))
    start = time.time()
    time.sleep(0.1)
    end = time.time()
    print('Task %s runs %0.2f seconds.' % (name, (end - start)))

if __name__ == '__main__':
    print('Parent process %s.' % os.getpid())
    p = Pool(4)
    for i in range(5):
        p.apply_async(long_time_task, args=(i,))
    print('Waiting for all subprocesses done...')
    p.close()
    p.join()
    print('All subprocesses done.')
"""


def bench_lecture(repeats: int, tmp: Path) -> list[Result]:
    """Wall time of the lecture's Pool example as a whole program, in ms (interpreter included).

    The two scripts take turns; the figure is the median of the runs.
    """
    libraries = (
        ("workcrew", "from workcrew import Pool", True),
        ("multiprocessing", "from multiprocessing import Pool", False),
    )
    scripts = {}
    for library, import_line, _ in libraries:
        scripts[library] = tmp / f"lecture_{library}.py"
        scripts[library].write_text(LECTURE.format(import_line=import_line))
    runs = _runs_in_turns(scripts, repeats)
    results = []
    for library, _, ours in libraries:
        for out, _ in runs[library]:
            assert out == "All subprocesses done.", out
        median = statistics.median(seconds for _, seconds in runs[library]) * 1000
        results.append(Result(f"lecture example: {library}", median, ours, ""))
    return results


PSS_PROGRAM = """
import json, multiprocessing, psutil
import workcrew

def noop(_):
    return 0

def workers(me):
    # every descendant but the start method's helpers (forkserver, resource tracker)
    out = []
    for child in me.children(recursive=True):
        cmd = " ".join(child.cmdline())
        helper = "resource_tracker" in cmd or "forkserver" in cmd
        if not (child.ppid() == me.pid and helper):
            out.append(child)
    return out

def pss(children):
    return sum(c.memory_full_info().pss for c in children) / len(children)

if __name__ == "__main__":
    me = psutil.Process()
    with {open} as pool:
        pool.map(noop, range(8))
        print(json.dumps(pss(workers(me))))
        {finish}
"""


def bench_worker_pss(repeats: int, tmp: Path) -> list[Result]:
    """Mean proportional set size (PSS) of an idle worker of a 2-worker pool, in MiB."""
    results = []
    for method in ("forkserver", "fork", "spawn"):
        for library, opener, finish, ours in (
            ("workcrew", f"workcrew.Pool(2, start_method={method!r})", "", True),
            (
                "multiprocessing",
                f"multiprocessing.get_context({method!r}).Pool(2)",
                "pool.close(); pool.join()",
                False,
            ),
        ):
            script = tmp / f"pss_{library}_{method}.py"
            script.write_text(PSS_PROGRAM.format(open=opener, finish=finish))
            values = [float(_fresh([str(script)])) / 2**20 for _ in range(repeats)]
            results.append(Result(f"{method}: {library}", statistics.median(values), ours, ""))
    return results
