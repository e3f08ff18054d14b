"""Hand-run benchmark: workcrew side by side with its peers, in one run.

Not part of the test suite.  Run from the repository root::

    .venv/bin/python benchmarks/run.py            # everything (several minutes)
    .venv/bin/python benchmarks/run.py --quick    # smoke run, reduced sizes
    .venv/bin/python benchmarks/run.py --only cpu --only skewed

Prints the tables and writes them to docs/benchmarks.md.  Every parallel
result is checked against a serial run; a wrong result aborts the run.

Worker functions live at module level: spawn/forkserver children import this
module, so the entry point is guarded by ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import gc
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import workcrew
from common import (
    FORK,
    BenchmarkError,
    MapFn,
    Result,
    calibrate_spin,
    check,
    progress,
    spin,
    square,
)

WORKERS = 2
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks.md"

# -- functions run in workers ----------------------------------------------------------------


def burn(micros: int) -> int:
    """Busy-wait for ``micros`` microseconds of this thread's CPU time."""
    end = time.thread_time_ns() + micros * 1000
    while time.thread_time_ns() < end:
        pass
    return burned(micros)


def burned(micros: int) -> int:
    """What ``burn(micros)`` returns (checked, so that no library skips the work)."""
    return micros * 3 + 1


# -- sizes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; ``quick()`` is a smoke run, not a measurement."""

    trivial: int = 200_000
    trivial_ppe_cap: int = 20_000
    cpu_tasks: int = 400
    cpu_task_seconds: float = 0.010
    skewed_tasks: int = 200
    skewed_mean_seconds: float = 0.010
    #: Inputs of the heavy-tailed table (see skew_seeds): with five, where one
    #: input's longest task fell decided the mean more than any library did.
    skewed_inputs: int = 20
    #: Turns per input of the heavy-tailed table (the best counts).
    skewed_repeats: int = 2
    startup_reps: int = 20
    submits: int = 10_000
    stream_small: int = 1_000_000
    stream_large: int = 10_000_000
    repeats: int = 3
    #: A map of the trivial tasks lasts ~15 ms here: one hiccup of this shared
    #: machine moves a single figure by 10 %, so each contender gets more turns.
    trivial_repeats: int = 11
    #: The CPU maps are 2 s each; other programs on the machine take whole
    #: seconds of a core at times: with 7 turns, two runs an hour apart put
    #: workcrew 4 % ahead of the best peer and 5 % behind it.
    cpu_repeats: int = 11

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            trivial=20_000,
            trivial_ppe_cap=2_000,
            cpu_tasks=40,
            skewed_tasks=40,
            skewed_inputs=2,
            skewed_repeats=1,
            startup_reps=5,
            submits=1_000,
            stream_small=100_000,
            stream_large=1_000_000,
            repeats=1,
            trivial_repeats=1,
            cpu_repeats=1,
        )


# -- contenders ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    """One library configuration: opens a pool and yields its ``map``."""

    name: str
    open: Callable[[], contextlib.AbstractContextManager[MapFn]]
    workcrew: bool = False
    #: cap on the trivial-task input (a configuration too slow for the full size)
    trivial_cap: int | None = None


# workcrew runs at its default start method (forkserver), as every peer runs
# at its own (fork for multiprocessing, ProcessPoolExecutor and mpire on Linux
# before Python 3.14; loky for joblib); "workcrew Pool, fork" is the like-for-like row.


@contextlib.contextmanager
def open_workcrew_pool() -> Iterator[MapFn]:
    with workcrew.Pool(WORKERS) as pool:
        yield pool.map


@contextlib.contextmanager
def open_workcrew_fork_pool() -> Iterator[MapFn]:
    with workcrew.Pool(WORKERS, start_method="fork") as pool:
        yield pool.map


@contextlib.contextmanager
def open_workcrew_guarded_pool() -> Iterator[MapFn]:
    """workcrew with crash handling in use: retries, a (never reached) task timeout."""
    with workcrew.Pool(WORKERS, retries=3) as pool:
        yield pool.map


@contextlib.contextmanager
def open_workcrew_executor() -> Iterator[MapFn]:
    with workcrew.Executor(WORKERS) as ex:
        yield lambda fn, items: list(ex.map(fn, items))


@contextlib.contextmanager
def open_mp_pool() -> Iterator[MapFn]:
    with FORK.Pool(WORKERS) as pool:
        yield pool.map
        pool.close()
        pool.join()


def tuned_chunksize(n: int) -> int:
    return max(1, n // (4 * WORKERS))


def open_ppe(tuned: bool) -> Callable[[], contextlib.AbstractContextManager[MapFn]]:
    @contextlib.contextmanager
    def opener() -> Iterator[MapFn]:
        with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=FORK) as ex:

            def run(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
                chunksize = tuned_chunksize(len(items)) if tuned else 1
                return list(ex.map(fn, items, chunksize=chunksize))

            yield run

    return opener


@contextlib.contextmanager
def open_joblib() -> Iterator[MapFn]:
    import joblib
    from joblib.externals.loky import get_reusable_executor

    with joblib.Parallel(n_jobs=WORKERS) as parallel:
        yield lambda fn, items: list(parallel(joblib.delayed(fn)(x) for x in items))
    get_reusable_executor().shutdown(wait=True)  # no loky threads left for later forks


@contextlib.contextmanager
def open_mpire() -> Iterator[MapFn]:
    from mpire import WorkerPool  # type: ignore[attr-defined]

    with WorkerPool(n_jobs=WORKERS, start_method="fork", keep_alive=True) as pool:
        yield pool.map


def contenders(sizes: Sizes) -> list[Contender]:
    return [
        Contender("workcrew Pool", open_workcrew_pool, workcrew=True),
        Contender("workcrew Pool, fork", open_workcrew_fork_pool, workcrew=True),
        Contender("workcrew Executor", open_workcrew_executor, workcrew=True),
        Contender("workcrew Pool, retries=3", open_workcrew_guarded_pool, workcrew=True),
        Contender("multiprocessing Pool", open_mp_pool),
        Contender(
            "ProcessPoolExecutor chunksize=1",
            open_ppe(tuned=False),
            trivial_cap=sizes.trivial_ppe_cap,
        ),
        Contender("ProcessPoolExecutor chunksize=n/(4w)", open_ppe(tuned=True)),
        Contender("joblib (loky)", open_joblib),
        Contender("mpire", open_mpire),
    ]


# -- measuring -------------------------------------------------------------------------------


def best_serial(
    fn: Callable[[Any], Any], items: list[Any], repeats: int
) -> tuple[float, list[Any]]:
    best, results = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        results = [fn(x) for x in items]
        best = min(best, time.perf_counter() - start)
    return best, results


# -- tables ----------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def comparison_table(
    title: str,
    metric: str,
    higher_is_better: bool,
    results: list[Result],
    notes: list[str],
    digits: int | None = None,
) -> Table:
    """One row per library; ratio = value / best peer's value (peers: every non-workcrew row).

    ``digits``: decimals of the figure and the ratio, where the default rounding
    would hide the differences (figures that all round to 1.04).
    """
    peers = [r.value for r in results if not r.workcrew]
    best = max(peers) if higher_is_better else min(peers)
    direction = "higher" if higher_is_better else "lower"
    rows = []
    for r in results:
        name = f"**{r.name}**" if r.workcrew else r.name
        if digits is None:
            figure, ratio = fmt(r.value), fmt_ratio(r.value / best)
        else:
            figure, ratio = f"{r.value:.{digits}f}", f"{r.value / best:.{digits}f}x"
        rows.append([name, figure, ratio, r.note])
    headers = ["library", f"{metric} ({direction} is better)", "vs best peer", "note"]
    return Table(title, headers, rows, notes)


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.3f}x" if ratio < 0.1 else f"{ratio:.2f}x"


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


# -- workloads -------------------------------------------------------------------------------


def timed_in_turns(
    sizes: Sizes,
    fn: Callable[[Any], Any],
    inputs_of: Callable[[Contender], list[tuple[list[Any], list[Any]]]],
    repeats: int | None = None,
) -> dict[str, list[list[float]]]:
    """Seconds of every map of ``fn`` over each of a contender's inputs (items, expected).

    Every pool is opened (outside the timed region) and warmed up by one map
    of its first input; then each round times one map of one input on every
    contender, the contenders in order (backwards every other round), and
    each turn is a round per input.  Turns rather than one library's repeats
    after another's: a slow minute of this shared machine then falls on all
    of them alike.  ``repeats``: turns each (``sizes.repeats`` by default);
    every contender has as many inputs.  Returns, per contender and input,
    the seconds of each turn.
    """
    with contextlib.ExitStack() as stack:
        runs = []
        for c in contenders(sizes):
            run = stack.enter_context(c.open())
            inputs = inputs_of(c)
            check(c.name, run(fn, inputs[0][0]), inputs[0][1])  # warm-up
            runs.append((c.name, run, inputs))
        times: dict[str, list[list[float]]] = {n: [[] for _ in i] for n, _, i in runs}
        turns = sizes.repeats if repeats is None else repeats
        # A round is one input on every contender, and every other round runs
        # backwards: no contender always follows the same one (whose pool may
        # still be winding down its last map), and a slow minute of the
        # machine falls on every contender's maps of the same inputs.
        count = len(runs[0][2])  # inputs per contender
        for r in range(turns * count):
            i = r % count
            for name, run, inputs in runs if r % 2 == 0 else runs[::-1]:
                items, expected = inputs[i]
                start = time.perf_counter()
                got = run(fn, items)
                times[name][i].append(time.perf_counter() - start)
                check(name, got, expected)
    return times


def bench_throughput(sizes: Sizes) -> Table:
    def inputs_of(c: Contender) -> list[tuple[list[Any], list[Any]]]:
        items = list(range(min(sizes.trivial, c.trivial_cap or sizes.trivial)))
        return [(items, [x * x for x in items])]

    times = timed_in_turns(sizes, square, inputs_of, sizes.trivial_repeats)
    results = []
    for c in contenders(sizes):
        n = min(sizes.trivial, c.trivial_cap or sizes.trivial)
        rate = n / statistics.median(times[c.name][0])
        note = f"best {n / min(times[c.name][0]):,.0f}"
        note += f"; input capped at {n:,} tasks" if n < sizes.trivial else ""
        results.append(Result(c.name, rate, c.workcrew, note))
        progress(f"throughput {c.name}: {rate:,.0f} tasks/s ({note})")
    notes = [
        f"{sizes.trivial:,} calls of `x*x` through `map`, {WORKERS} workers; every pool created "
        f"outside the timed region and warmed up by one map, then the libraries take turns, "
        f"{sizes.trivial_repeats} each; the figure is the median turn, the note the best "
        "(a map of workcrew or multiprocessing lasts ~15 ms here: one hiccup of the machine "
        "would move a single figure by 10 %).",
        "workcrew: adaptive chunking (chunksize=None); the warm-up map lets it learn the "
        "task duration, as a long-lived pool would.",
        "workcrew Executor: its `map` is lazy (reads input through a bounded window, like "
        "`imap`); the other executors' `map` submits everything at once.",
        "multiprocessing, mpire, joblib: their default chunk/batch sizes.",
    ]
    return comparison_table("Trivial tasks: throughput", "tasks/s", True, results, notes)


def measure_contenders(
    sizes: Sizes,
    label: str,
    metric: str,
    fn: Callable[[Any], Any],
    items: list[Any],
    expected: list[Any],
    score: Callable[[float], float],
    repeats: int,
) -> list[Result]:
    """Time ``fn`` over ``items`` on every contender (``repeats`` turns); ``score``: the figure.

    The figure is the median turn's, the note the fastest turn's.
    """
    times = timed_in_turns(sizes, fn, lambda c: [(items, expected)], repeats)
    results = []
    for c in contenders(sizes):
        value = score(statistics.median(times[c.name][0]))
        best = score(min(times[c.name][0]))  # the fastest turn's
        results.append(Result(c.name, value, c.workcrew, f"best {best:.2f}"))
        progress(f"{label} {c.name}: {metric} {value:.2f} (best {best:.2f})")
    return results


def bench_cpu(sizes: Sizes) -> Table:
    iterations = calibrate_spin(sizes.cpu_task_seconds)
    items = [iterations + i for i in range(sizes.cpu_tasks)]
    serial, expected = best_serial(spin, items, sizes.cpu_repeats)
    progress(f"cpu serial: {serial:.2f} s ({iterations:,} iterations per task)")
    results = measure_contenders(
        sizes,
        "cpu",
        "speedup",
        spin,
        items,
        expected,
        lambda seconds: serial / seconds,
        sizes.cpu_repeats,
    )
    notes = [
        f"{sizes.cpu_tasks} pure-Python tasks of ~{sizes.cpu_task_seconds * 1000:.0f} ms "
        f"(calibrated loop), {WORKERS} workers; speedup = serial time / parallel time "
        f"(median of {sizes.cpu_repeats} turns each, the libraries taking turns; the note: "
        f"the best turn); the ideal is {WORKERS}.",
        f"serial loop: {serial:.2f} s (in this process).",
        "Under fork a worker is a copy of this process. Timed per call inside the workers, "
        "pools side by side, such copies ran this loop 3-8 % slower on this machine than "
        "workers started fresh (spawn, loky) or forked from workcrew's fork server, whichever "
        "library forked them (multiprocessing's as much as workcrew's): the gap between the "
        "`workcrew Pool` and `workcrew Pool, fork` rows. The cause is not established; it "
        "shows only while both workers are busy. A speedup above 2 means the workers run the "
        "loop faster than this process does.",
    ]
    return comparison_table("CPU-bound tasks: speedup over serial", "speedup", True, results, notes)


def pareto_micros(n: int, mean_seconds: float, seed: int = 12345) -> list[int]:
    """Heavy-tailed (Pareto, shape 1.5) durations scaled to the given mean, in µs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    raw = rng.pareto(1.5, n) + 1.0
    scaled = raw * (mean_seconds * 1e6 / raw.mean())
    return [max(1, round(float(v))) for v in scaled]


def skew_seeds(count: int) -> list[int]:
    """Seeds of the heavy-tailed inputs: 12345 (the table's first input), then 1, 2, ...

    Where an input's longest tasks fall decides its makespan more than any
    library does (seed 12345's longest is the 199th of 200 inputs, which no
    dispatch in input order starts before 0.84 s of a 1.00 s ideal), and which
    order of dispatch that favours is luck.  Modelled at no cost over 2,000
    inputs, in-order batches of 2 against single items queued one deep differ
    by 0.009 per input (standard deviation), so by about 0.004 on a mean over
    5 inputs, more than the libraries' own costs differ by, and 0.002 over 20.
    So each library runs every seed, and is scored on the mean.
    """
    return [12345, *range(1, count)]


def greedy_dispatch(durations: list[int], workers: int = WORKERS) -> tuple[float, float]:
    """An ideal in-order dispatch (each task to the first free worker, at no cost).

    Seconds it takes in all, and when it starts the longest task.
    """
    free = [0.0] * workers
    longest, longest_start = -1, 0.0
    for micros in durations:
        worker = free.index(min(free))
        if micros > longest:
            longest, longest_start = micros, free[worker]
        free[worker] += micros / 1e6
    return max(free), longest_start


def ideal_seconds(durations: list[int], workers: int = WORKERS) -> float:
    """The makespan no dispatch can beat: the work shared out evenly, or the longest task."""
    return max(sum(durations) / workers, max(durations)) / 1e6


def batched_dispatch(durations: list[int], size: int, workers: int = WORKERS) -> float:
    """Seconds for batches of ``size`` inputs, in input order, each to the first free worker."""
    batches = [sum(durations[i : i + size]) for i in range(0, len(durations), size)]
    return greedy_dispatch(batches, workers)[0]


def dispatch_models(sizes: Sizes, inputs: int = 2000) -> tuple[float, float]:
    """Mean makespan / ideal over many other random inputs: in-order items, batches of 2.

    No cost is modelled, only the order: which of the two orders wins an input
    is luck of where its longest tasks fall, and on average neither wins.
    """
    single, paired = [], []
    for seed in range(1000, 1000 + inputs):
        durations = pareto_micros(sizes.skewed_tasks, sizes.skewed_mean_seconds, seed)
        ideal = ideal_seconds(durations)
        single.append(greedy_dispatch(durations)[0] / ideal)
        paired.append(batched_dispatch(durations, 2) / ideal)
    return statistics.mean(single), statistics.mean(paired)


def bench_skewed(sizes: Sizes) -> Table:
    inputs = []
    for seed in skew_seeds(sizes.skewed_inputs):
        durations = pareto_micros(sizes.skewed_tasks, sizes.skewed_mean_seconds, seed)
        inputs.append((seed, durations, ideal_seconds(durations), [burned(d) for d in durations]))
    times = timed_in_turns(
        sizes,
        burn,
        lambda c: [(d, expected) for _, d, _, expected in inputs],
        sizes.skewed_repeats,
    )
    scores: dict[str, list[float]] = {}
    for c in contenders(sizes):
        best = [min(seconds) for seconds in times[c.name]]
        scores[c.name] = [s / ideal for s, (_, _, ideal, _) in zip(best, inputs, strict=True)]
        progress(f"skewed {c.name}: makespan/ideal {statistics.mean(scores[c.name]):.4f}")
    results = [
        Result(
            c.name,
            statistics.mean(scores[c.name]),
            c.workcrew,
            f"first 5: {statistics.mean(scores[c.name][:5]):.3f}; 12345: {scores[c.name][0]:.2f}",
        )
        for c in contenders(sizes)
    ]
    return comparison_table(
        "Heavy-tailed task durations: makespan / ideal",
        "makespan/ideal",
        False,
        results,
        skewed_notes(sizes, inputs, scores),
        digits=3,
    )


def skewed_notes(
    sizes: Sizes,
    inputs: list[tuple[int, list[int], float, list[int]]],
    scores: dict[str, list[float]],
) -> list[str]:
    """The heavy-tailed table's notes: the workload, the in-order bounds, input by input."""
    seeds = [seed for seed, *_ in inputs]
    bounds = [greedy_dispatch(d)[0] / ideal for _, d, ideal, _ in inputs]
    late = [(seed, b) for seed, b in zip(seeds, bounds) if b > 1.05]
    rest = [b for b in bounds if b <= 1.05]
    where = f"{' and '.join(f'{b:.2f} on seed {seed}' for seed, b in late) or 'at most 1.05'}"
    if late and rest:
        where += f", {min(rest):.3f} to {max(rest):.3f} on the others"
    worst = bounds.index(max(bounds))
    seed, durations, ideal, _ = inputs[worst]
    longest = durations.index(max(durations)) + 1
    starts = greedy_dispatch(durations)[1]
    single, paired = dispatch_models(sizes)
    us = next(c.name for c in contenders(sizes) if c.workcrew)  # workcrew at its defaults
    peers = [c.name for c in contenders(sizes) if not c.workcrew]
    best_peer = min(peers, key=lambda name: statistics.mean(scores[name]))
    ours = scores[us]
    ahead = sum(o <= p for o, p in zip(ours, scores[best_peer]))
    pairs = ", ".join(f"{s}: {o:.3f}/{p:.3f}" for s, o, p in zip(seeds, ours, scores[best_peer]))
    turns = sizes.skewed_repeats
    return [
        f"{sizes.skewed_tasks} tasks, Pareto(1.5) durations scaled to mean "
        f"{sizes.skewed_mean_seconds * 1000:.0f} ms, CPU busy-wait (thread CPU time); "
        f"{len(seeds)} inputs, one per seed ({', '.join(map(str, seeds[:3]))}, ..., "
        f"{seeds[-1]}), the same for every library, in one pool per library; the libraries take "
        "turns, input by input.",
        f"makespan / ideal per input (ideal = max(sum / {WORKERS} workers, longest), best of "
        f"{turns} turn{'s' if turns > 1 else ''}); the figure is the mean over the inputs, 1.000 "
        f"is perfect. The note: the mean over the first 5 inputs (seeds 12345, 1 to 4: this "
        f"table's inputs until it had {len(seeds)}), and seed 12345 alone.",
        "Where the longest tasks fall in an input decides more than the library: an ideal "
        f"dispatch in input order at no cost reaches {where}. Seed {seed}'s longest task, input "
        f"#{longest} of {len(durations)}, cannot start in input order before {starts:.2f} s "
        f"of a {ideal:.2f} s ideal, so batches that happen to start it sooner win that input. "
        "On average neither order wins: over 2,000 other random inputs of the same kind, that "
        f"ideal in-order dispatch reaches {single:.3f} and in-order batches of 2 (as mpire "
        f"sends 200 tasks to 2 workers) {paired:.3f}. Hence many inputs.",
        f"Input by input, {us} / the best peer ({best_peer}), level or ahead on "
        f"{ahead} of {len(seeds)}: {pairs}.",
    ]


def startup_workcrew_pool() -> int:
    with workcrew.Pool(WORKERS, start_method="fork") as pool:
        return pool.apply_async(square, (7,)).get()


def startup_workcrew_defaults() -> int:
    with workcrew.Pool(WORKERS) as pool:  # the default start method: forkserver
        return pool.apply_async(square, (7,)).get()


def startup_workcrew_executor() -> int:
    with workcrew.Executor(WORKERS, start_method="fork") as ex:
        return ex.submit(square, 7).result()


def startup_mp_pool() -> int:
    with FORK.Pool(WORKERS) as pool:
        result = pool.apply_async(square, (7,)).get()
        pool.close()
        pool.join()
    return result


def startup_ppe() -> int:
    with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=FORK) as ex:
        return ex.submit(square, 7).result()


def startup_loky() -> int:
    from joblib.externals.loky import ProcessPoolExecutor

    with ProcessPoolExecutor(WORKERS) as ex:
        result: int = ex.submit(square, 7).result()
    return result


def startup_mpire() -> int:
    from mpire import WorkerPool  # type: ignore[attr-defined]

    with WorkerPool(n_jobs=WORKERS, start_method="fork") as pool:
        result: int = pool.map(square, [7])[0]
    return result


STARTUPS: list[tuple[str, Callable[[], Any], bool, str]] = [
    ("workcrew Pool", startup_workcrew_pool, True, "close + join"),
    ("workcrew Pool, defaults", startup_workcrew_defaults, True, "forkserver (the default)"),
    ("workcrew Executor", startup_workcrew_executor, True, "shutdown(wait=True)"),
    ("multiprocessing Pool", startup_mp_pool, False, "close + join"),
    ("ProcessPoolExecutor", startup_ppe, False, "shutdown(wait=True)"),
    ("joblib's loky executor", startup_loky, False, "fresh executor, loky start method"),
    ("mpire", startup_mpire, False, ""),
]


def bench_startup(sizes: Sizes) -> Table:
    results = []
    for name, run, is_workcrew, note in STARTUPS:
        check(name, [run()], [49])  # warm-up: imports, first fork
        times = []
        for _ in range(sizes.startup_reps):
            start = time.perf_counter()
            result = run()
            times.append(time.perf_counter() - start)
            check(name, [result], [49])
        ms = statistics.median(times) * 1000
        results.append(Result(name, ms, is_workcrew, note))
        progress(f"startup {name}: {ms:.1f} ms")
    notes = [
        f"create a {WORKERS}-worker pool (fork, except the defaults row), run one task, shut "
        f"down and wait for the workers; median of {sizes.startup_reps} after one warm-up (so "
        "a fork server runs already; a program's first pool is in the whole-programs table).",
        "joblib reuses one global executor across `Parallel` calls, so its row times a fresh "
        "loky executor (loky cannot fork).",
    ]
    return comparison_table(
        "Pool start-up: create + 1 task + shut down", "ms", False, results, notes
    )


def submit_workcrew_executor(n: int) -> list[int]:
    with workcrew.Executor(WORKERS, start_method="fork") as ex:
        ex.submit(square, 7).result()  # workers up
        start = time.perf_counter()
        futures = [ex.submit(square, i) for i in range(n)]
        results = [f.result() for f in futures]
        return [time.perf_counter() - start, *results]  # type: ignore[list-item]


def submit_ppe(n: int) -> list[int]:
    with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=FORK) as ex:
        ex.submit(square, 7).result()
        start = time.perf_counter()
        futures = [ex.submit(square, i) for i in range(n)]
        results = [f.result() for f in futures]
        return [time.perf_counter() - start, *results]  # type: ignore[list-item]


def submit_mp_pool(n: int) -> list[int]:
    with FORK.Pool(WORKERS) as pool:
        pool.apply(square, (7,))
        start = time.perf_counter()
        pending = [pool.apply_async(square, (i,)) for i in range(n)]
        results = [r.get() for r in pending]
        return [time.perf_counter() - start, *results]  # type: ignore[list-item]


SUBMITTERS: list[tuple[str, Callable[[int], list[int]], bool, str]] = [
    ("workcrew Executor", submit_workcrew_executor, True, "submit + result"),
    ("ProcessPoolExecutor", submit_ppe, False, "submit + result"),
    ("multiprocessing Pool", submit_mp_pool, False, "apply_async + get"),
]


def bench_submits(sizes: Sizes) -> Table:
    n = sizes.submits
    results = []
    for name, run, is_workcrew, note in SUBMITTERS:
        rates = []
        for _ in range(sizes.repeats):
            seconds, *values = run(n)
            check(name, values, [square(i) for i in range(n)])
            rates.append(n / seconds)
        rate = max(rates)
        results.append(Result(name, rate, is_workcrew, note))
        progress(f"submits {name}: {rate:,.0f}/s")
    notes = [
        f"{n:,} single calls of `x*x` submitted one by one, then every result read; "
        f"{WORKERS} workers (fork), started before the timed region; best of {sizes.repeats}.",
        "per-task overhead when work arrives call by call (no map to batch it).",
    ]
    return comparison_table("Single submits: tasks/s", "tasks/s", True, results, notes)


class RssSampler:
    """Peak RSS growth of this process, sampled in a background thread."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.baseline = self.peak = 0

    def __enter__(self) -> RssSampler:
        gc.collect()
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def stream_run(pool: workcrew.Pool, n: int) -> tuple[float, int]:
    """imap over a generator of ``n`` inputs, results checked as they come: (seconds, growth)."""
    with RssSampler() as rss:
        start = time.perf_counter()
        count = 0
        for i, value in enumerate(pool.imap(square, (x for x in range(n)))):
            if value != i * i:
                raise BenchmarkError(f"workcrew imap: result #{i} is {value!r}, expected {i * i}")
            count += 1
        seconds = time.perf_counter() - start
    if count != n:
        raise BenchmarkError(f"workcrew imap: {count} results, expected {n}")
    return seconds, rss.growth


def bench_memory(sizes: Sizes) -> Table:
    rows = []
    with workcrew.Pool(WORKERS, start_method="fork") as pool:
        stream_run(pool, min(sizes.stream_small, 100_000))  # warm-up
        for n in (sizes.stream_small, sizes.stream_large):
            seconds, growth = stream_run(pool, n)
            rows.append([f"{n:,}", f"{seconds:.2f}", fmt(n / seconds), f"{growth / 2**20:.1f}"])
            progress(f"memory {n:,}: {n / seconds:,.0f} tasks/s, +{growth / 2**20:.1f} MiB")
    notes = [
        "workcrew only: `Pool.imap(square, generator)`, results consumed (and checked) as "
        f"they arrive, {WORKERS} workers, adaptive chunking.",
        "peak RSS growth of the parent over its RSS just before the call, sampled every 5 ms "
        "(psutil); flat across a 10x larger input means the input is read lazily.",
        "the in-flight window is 4 x workers x the adaptive chunk size, or a second of the "
        "pool's work (at most 1,024 items, and four chunks' bytes a worker) if more, so the "
        "plateau depends on how large chunks grow for the task.",
    ]
    headers = ["inputs", "seconds", "tasks/s", "peak RSS growth (MiB)"]
    return Table("Lazy imap over a generator: parent memory", headers, rows, notes)


def kinds_workload(name: str, module: str = "kinds") -> Callable[[Sizes], Table]:
    """A workload of ``kinds.py`` (worker kinds) or another module, as a table like the others."""

    def run(sizes: Sizes) -> Table:
        import importlib

        bench = getattr(importlib.import_module(module), f"bench_{name}")
        title, [metric], rows, notes = bench(max(sizes.repeats, 3), sizes.repeats == 1)
        if name == "auto":
            return auto_table(title, metric, rows, notes)
        if name in ("locks", "dask", "joblib"):
            return sectioned_table(title, metric, rows, notes)
        return comparison_table(title, metric, True, rows, notes)

    return run


def auto_table(title: str, metric: str, rows: list[Any], notes: list[str]) -> Table:
    """kind="auto" against the best hand-picked kind of the same workload."""
    table_rows = []
    for r in rows:
        workload, warm = r.name.split(":")[0], r.name.endswith("warm")
        best = max(
            o.value
            for o in rows
            if o.name.startswith(workload) and o.name.endswith("warm") == warm and not o.workcrew
        )
        name = f"**{r.name}**" if r.workcrew else r.name
        table_rows.append([name, fmt(r.value), fmt_ratio(r.value / best)])
    headers = ["configuration", f"{metric} (higher is better)", "vs best hand-picked kind"]
    return Table(title, headers, table_rows, notes)


def bench_pipeline_table(sizes: Sizes) -> Table:
    """A 3-stage workcrew.Pipeline against the same pipeline written with multiprocessing."""
    import pipeline

    rows = pipeline.bench_pipeline(sizes.repeats == 1)
    return comparison_table(
        "Three-stage pipeline: throughput", "items/s", True, rows, list(pipeline.NOTES)
    )


def sectioned_table(title: str, metric: str, rows: list[Any], notes: list[str]) -> Table:
    """Rows named "section: library"; each ratio is against the best peer of its section."""
    table_rows = []
    for r in rows:
        section = r.name.split(":")[0]
        best = max(o.value for o in rows if o.name.split(":")[0] == section and not o.workcrew)
        name = f"**{r.name}**" if r.workcrew else r.name
        table_rows.append([name, fmt(r.value), fmt_ratio(r.value / best)])
    headers = ["measurement: library", f"{metric} (higher is better)", "vs best peer"]
    return Table(title, headers, table_rows, notes)


def bench_imports(sizes: Sizes) -> Table:
    from programs import bench_imports as measure

    results = measure(max(sizes.repeats * 3, 5))
    for r in results:
        progress(f"imports {r.name}: {r.value:.1f} ms")
    notes = [
        "wall time of the statement alone in a fresh interpreter (interpreter start-up excluded), "
        "median of the runs; `import workcrew` loads no module of the package until a name is "
        "used, so `from workcrew import Pool` is what a program pays.",
    ]
    return comparison_table("Import time (ms)", "ms", False, results, notes)


def versus_peer_rows(results: list[Result], unit: str) -> list[list[str]]:
    """Rows "section: library", each with its ratio to the peer of its section (lower is better)."""
    rows = []
    for r in results:
        section = r.name.split(":")[0]
        peer = next(o.value for o in results if o.name.split(":")[0] == section and not o.workcrew)
        progress(f"{r.name}: {r.value:.1f} {unit}")
        name = f"**{r.name}**" if r.workcrew else r.name
        rows.append([name, f"{r.value:,.1f}", f"{r.value / peer:.2f}x"])
    return rows


def bench_programs(sizes: Sizes) -> Table:
    import tempfile

    from programs import bench_lecture
    from programs import bench_programs as measure

    with tempfile.TemporaryDirectory() as tmp:
        results = measure(max(sizes.repeats * 4, 3), Path(tmp))
        results += bench_lecture(max(sizes.repeats * 2, 3), Path(tmp))
    notes = [
        "a fresh program (`from workcrew import Pool`, or `import multiprocessing`) creates a "
        "2-worker pool, runs one task and shuts it down, twice; the program's import is "
        "excluded (see the import table). The first pool loads the pool's own code (workcrew's "
        "engine; `multiprocessing.pool`) and starts the helpers its start method needs (a fork "
        "server: workcrew's own, or multiprocessing's with its resource tracker; spawn: the "
        "tracker); the second reuses them. Under forkserver the server runs the program's "
        "`__main__` once (its imports included), as multiprocessing's does. The two libraries' "
        f"programs take turns; median of {max(sizes.repeats * 4, 3)} runs each.",
        "lecture example: the lecture's Pool example (`Pool(4)`, five `apply_async` tasks, "
        "`close`, `join`; each task sleeps a fixed 0.1 s instead of a random one) run as a "
        "script, wall time from the shell including the interpreter; the two scripts differ "
        "in their import line only, each library with its default start method "
        "(workcrew: forkserver; multiprocessing on Python < 3.14: fork); the scripts take "
        f"turns, median of {max(sizes.repeats * 2, 3)} runs each.",
    ]
    headers = ["start method, pool: library", "ms (lower is better)", "vs multiprocessing"]
    rows = versus_peer_rows(results, "ms")
    return Table("Whole programs: first and second pool", headers, rows, notes)


def bench_worker_pss(sizes: Sizes) -> Table:
    import tempfile

    from programs import bench_worker_pss as measure

    with tempfile.TemporaryDirectory() as tmp:
        results = measure(max(sizes.repeats, 3), Path(tmp))
    notes = [
        "proportional set size (shared pages divided among their sharers) of an idle worker of "
        "a fresh 2-worker pool after 8 trivial tasks, mean of its workers, median of the runs.",
    ]
    headers = ["start method: library", "MiB per idle worker (lower is better)"]
    headers.append("vs multiprocessing")
    rows = versus_peer_rows(results, "MiB")
    return Table("Memory of an idle process worker (PSS)", headers, rows, notes)


@contextlib.contextmanager
def _polled(url: str | None) -> Iterator[None]:
    """A page's load on the board: its state fetched twice a second, in a thread."""
    import urllib.request

    assert url is not None
    api = url.replace("/?token=", "/api/state?token=")
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            with urllib.request.urlopen(api, timeout=10) as answer:
                answer.read()

    poller = threading.Thread(target=poll, name="bench-page")
    poller.start()
    try:
        yield
    finally:
        stop.set()
        poller.join()


def bench_dashboard(sizes: Sizes) -> Table:
    """Trivial tasks with the dashboard off and on, the two pools taking turns."""
    items = list(range(sizes.trivial))
    expected = [x * x for x in items]
    best = {"off": float("inf"), "on": float("inf")}
    for block in range(4):  # fresh pools; each configuration created first in half the blocks
        with contextlib.ExitStack() as stack:
            names = ("off", "on") if block % 2 else ("on", "off")
            pools = {
                name: stack.enter_context(workcrew.Pool(WORKERS, dashboard=name == "on"))
                for name in names
            }
            stack.enter_context(_polled(pools["on"].dashboard_url))
            for name, pool in pools.items():
                check(f"dashboard {name}", pool.map(square, items), expected)  # warm-up
            for round_ in range(2 * sizes.repeats):
                order = list(pools.items())
                for name, pool in order if round_ % 2 else order[::-1]:  # ABBA
                    start = time.perf_counter()
                    got = pool.map(square, items)
                    best[name] = min(best[name], time.perf_counter() - start)
                    check(f"dashboard {name}", got, expected)
    rate = {name: len(items) / seconds for name, seconds in best.items()}
    progress(f"dashboard: off {rate['off']:,.0f}, on {rate['on']:,.0f} tasks/s")
    rows = [
        ["**workcrew Pool, dashboard off**", fmt(rate["off"]), fmt_ratio(1.0)],
        ["**workcrew Pool, dashboard=True**", fmt(rate["on"]), fmt_ratio(rate["on"] / rate["off"])],
    ]
    notes = [
        f"{sizes.trivial:,} calls of `x*x` through `map`, {WORKERS} workers, as in the "
        "trivial-task table. Four blocks of fresh pools (each configuration created first in "
        f"two), in each the two pools take turns, each going first every other round; best of "
        f"{8 * sizes.repeats} maps each, after a warm-up map per pool.",
        "With the dashboard on, a thread fetches its state twice a second throughout, as an "
        "open page does. Target: at least 0.95x the dashboard-off figure. On this shared "
        "2-core machine two identical pools differ by up to 10% from run to run.",
    ]
    headers = ["configuration", "tasks/s (higher is better)", "vs dashboard off"]
    return Table("Live dashboard: its cost on trivial tasks", headers, rows, notes)


WORKLOADS: dict[str, Callable[[Sizes], Table]] = {
    "throughput": bench_throughput,
    "cpu": bench_cpu,
    "skewed": bench_skewed,
    "startup": bench_startup,
    "imports": bench_imports,
    "programs": bench_programs,
    "workers": bench_worker_pss,
    "submits": bench_submits,
    "memory": bench_memory,
    "io": kinds_workload("io"),
    "hybrid": kinds_workload("hybrid"),
    "auto": kinds_workload("auto"),
    "arrays": kinds_workload("arrays", "sharing"),
    "queue": kinds_workload("queue", "sharing"),
    "locks": kinds_workload("locks", "sharing"),
    "pipeline": bench_pipeline_table,
    "shell": kinds_workload("run", "shell"),
    "dask": kinds_workload("dask", "dask_bench"),
    "joblib": kinds_workload("joblib", "joblib_bench"),
    "dashboard": bench_dashboard,
}


# -- report ----------------------------------------------------------------------------------


def header(quick: bool, load_before: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run.py`; do not edit by hand.",
        "",
        f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- machine: {os.cpu_count()} cores ({workcrew.available_cpu_count()} usable), "
        f"{platform.machine()}, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"workcrew {workcrew.__version__}, {peer_versions()}",
        f"- {WORKERS} workers everywhere; in the throughput, CPU and heavy-tailed tables every "
        "library runs at its default start method (workcrew: forkserver; multiprocessing, "
        "ProcessPoolExecutor, mpire: fork; joblib: loky), and the row `workcrew Pool, fork` "
        "runs workcrew under fork like those peers; other tables name their start method",
        f"- load average at start / end: {load_before} / {load_average()} (shared machine: "
        "compare ratios rather than absolute figures)",
        "- ratio column: the row's figure divided by the best peer's (workcrew rows are not peers)",
    ]
    if quick:
        lines.append("- **quick smoke run (`--quick`): reduced sizes, not a measurement**")
    lines += ["", "How to run: `.venv/bin/python benchmarks/run.py` (`--help` for options)", ""]
    return "\n".join(lines)


def peer_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("joblib", "mpire"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} missing")
    return ", ".join(parts)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return "n/a"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(WORKLOADS),
        metavar="NAME",
        help=f"run only this workload (repeatable): {', '.join(WORKLOADS)}",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run with small sizes")
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="markdown file to write (default: docs/benchmarks.md)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    load_before = load_average()
    tables = []
    for name in args.only or list(WORKLOADS):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            tables.append(WORKLOADS[name](sizes))
        except BenchmarkError as exc:
            print(f"error: {exc}; nothing written", file=sys.stderr)
            return 1
    report = header(args.quick, load_before) + "\n" + "\n".join(t.markdown() for t in tables)
    print(report)
    if not args.no_write:
        args.output.write_text(report)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
