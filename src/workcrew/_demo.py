"""``workcrew demo``: the lecture's lessons, measured live on this machine.

EDGE module: uses only the public ``workcrew`` API.  Each lesson is a
function that prints its own section; the task functions are at module level
so process workers under every start method can import them.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import workcrew

__all__ = ("run_demo",)

TEXT = {
    "en": {
        "title": "workcrew demo: processes and threads, measured on this machine",
        "machine": "This machine: {cpus} usable CPU(s), Python {py}, start method {method}.",
        "pool_title": "Lesson 1 - a process pool (Master-Worker): 5 tasks on a pool of 4",
        "pool_intro": (
            "The master hands each task to a free worker process. With 4 workers the 5th task\n"
            "waits until one of the first four finishes, then reuses that worker (same pid)."
        ),
        "pool_head": "task  worker pid  started at  duration",
        "pool_row": "{task:>4}  {pid:>10}  {start:>8.2f} s  {dur:>6.2f} s",
        "pool_total": "All 5 tasks done in {total:.2f} s with {pids} distinct worker processes "
        "(serially it would take {serial:.2f} s).",
        "cpu_title": "Lesson 2 - CPU-bound work: threads vs processes",
        "cpu_intro": (
            "{n} pure-Python tasks of about {ms:.0f} ms each. The GIL lets only one thread run\n"
            "Python code at a time, so threads cannot use more than one core; processes can."
        ),
        "cpu_head": "how                        time      speedup vs serial",
        "cpu_row": "{how:<25}  {secs:>6.2f} s  {speedup:>6.2f}x",
        "serial": "serial loop",
        "threads": "{n} threads",
        "processes": "{n} processes",
        "cpu_verdict": "Processes were {ratio:.1f}x faster than threads here: for CPU-bound work, "
        "use kind='process' (the default).",
        "cpu_one_core": "Only one CPU is usable here, so processes cannot beat threads on this "
        "machine; on a multi-core machine they would.",
        "done": "Done. See README.md for the features and docs/ for one page per feature.",
    },
    "zh": {
        "title": "workcrew 演示: 进程与线程, 在本机实测",
        "machine": "本机: 可用 CPU {cpus} 个, Python {py}, 启动方式 {method}.",
        "pool_title": "第一课 - 进程池 (Master-Worker): 4 个进程的池执行 5 个任务",
        "pool_intro": (
            "主进程把每个任务交给空闲的工作进程. 池里只有 4 个进程, 第 5 个任务要等前 4 个\n"
            "中的某一个结束后才开始, 并复用那个进程 (pid 相同)."
        ),
        "pool_head": "任务  工作进程 pid  开始时间    耗时",
        "pool_row": "{task:>4}  {pid:>12}  {start:>8.2f} 秒  {dur:>6.2f} 秒",
        "pool_total": "5 个任务共用 {total:.2f} 秒, 用到 {pids} 个不同的工作进程 "
        "(串行执行需 {serial:.2f} 秒).",
        "cpu_title": "第二课 - 计算密集型任务: 多线程 vs 多进程",
        "cpu_intro": (
            "{n} 个纯 Python 计算任务, 每个约 {ms:.0f} 毫秒. 由于 GIL, 同一时刻只有一个线程\n"
            "执行 Python 代码, 多线程用不上多核; 多进程可以."
        ),
        "cpu_head": "方式                       耗时      相对串行的加速比",
        "cpu_row": "{how:<25}  {secs:>6.2f} 秒  {speedup:>6.2f}x",
        "serial": "串行循环",
        "threads": "{n} 个线程",
        "processes": "{n} 个进程",
        "cpu_verdict": "在本机, 多进程比多线程快 {ratio:.1f} 倍: 计算密集型任务请用 "
        "kind='process' (默认).",
        "cpu_one_core": "本机只有一个可用 CPU, 多进程无法胜过多线程; 在多核机器上会.",
        "done": "完成. 功能列表见 README.md, 每个功能的说明见 docs/ 目录.",
    },
}


def long_time_task(seconds: float) -> tuple[int, float, float]:
    """The lecture's task: sleep a while; report pid, start time and duration."""
    start = time.time()
    time.sleep(seconds)
    return os.getpid(), start, time.time() - start


def spin(iterations: int) -> int:
    """Pure-Python CPU work: a loop the GIL serialises across threads."""
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


@dataclass
class _Printer:
    text: dict[str, str]
    write: Callable[[str], None]

    def __call__(self, key: str, **values: object) -> None:
        self.write(self.text[key].format(**values))


def lesson_pool(say: _Printer, start_method: str | None) -> None:
    """Five tasks on a pool of four: pids, start times and durations."""
    say("pool_title")
    say("pool_intro")
    rng = random.Random(7)
    durations = [round(rng.uniform(0.2, 0.6), 2) for _ in range(5)]
    t0 = time.time()
    with workcrew.Pool(4, start_method=start_method) as pool:
        pool.map(abs, range(4), chunksize=1)  # let every worker start before timing
        t0 = time.time()
        results = [pool.apply_async(long_time_task, (d,)) for d in durations]
        rows = [r.get() for r in results]
    total = time.time() - t0
    say("pool_head")
    for i, (pid, start, dur) in enumerate(rows):
        say("pool_row", task=i, pid=pid, start=start - t0, dur=dur)
    say("pool_total", total=total, pids=len({pid for pid, _, _ in rows}), serial=sum(durations))


def _calibrate(target: float) -> int:
    iterations = 20_000
    while True:
        start = time.perf_counter()
        spin(iterations)
        elapsed = time.perf_counter() - start
        if elapsed > 0.02:
            return max(1, int(iterations * target / elapsed))
        iterations *= 2


def lesson_cpu(say: _Printer, start_method: str | None) -> None:
    """The same CPU-bound tasks serially, on threads and on processes."""
    cpus = workcrew.available_cpu_count()
    workers = max(2, cpus)
    tasks = 4 * workers
    iterations = _calibrate(0.05)
    say("cpu_title")
    say("cpu_intro", n=tasks, ms=50)
    start = time.perf_counter()
    expected = [spin(iterations) for _ in range(tasks)]
    serial = time.perf_counter() - start
    timings = {}
    for kind in ("thread", "process"):
        with workcrew.Pool(workers, kind=kind, start_method=start_method) as pool:
            pool.map(abs, range(workers), chunksize=1)  # start-up is not what we measure
            start = time.perf_counter()
            got = pool.map(spin, [iterations] * tasks, chunksize=1)
            timings[kind] = time.perf_counter() - start
        if got != expected:
            raise RuntimeError(f"{kind} pool returned wrong results")
    say("cpu_head")
    say("cpu_row", how=say.text["serial"], secs=serial, speedup=1.0)
    say(
        "cpu_row",
        how=say.text["threads"].format(n=workers),
        secs=timings["thread"],
        speedup=serial / timings["thread"],
    )
    say(
        "cpu_row",
        how=say.text["processes"].format(n=workers),
        secs=timings["process"],
        speedup=serial / timings["process"],
    )
    if cpus > 1:
        say("cpu_verdict", ratio=timings["thread"] / timings["process"])
    else:
        say("cpu_one_core")


#: Lessons in the order they run; later issues add theirs here.
LESSONS = {"pool": lesson_pool, "cpu": lesson_cpu}


def run_demo(
    lang: str = "en",
    lessons: list[str] | None = None,
    start_method: str | None = None,
    write: Callable[[str], None] = print,
) -> None:
    """Run the chosen lessons (all by default) and print what they measure."""
    import platform

    say = _Printer(TEXT[lang], write)
    say("title")
    say(
        "machine",
        cpus=workcrew.available_cpu_count(),
        py=platform.python_version(),
        method=start_method or workcrew.default_start_method(),
    )
    for name in lessons or list(LESSONS):
        write("")
        LESSONS[name](say, start_method)
    write("")
    say("done")
