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
        "crash_title": "Lesson 3 - stability: a task that crashes its worker",
        "crash_intro": (
            "6 tasks; task 3 kills its own worker with os._exit(1), as a segfault or the\n"
            "out-of-memory killer would. Processes isolate the damage; threads share one process."
        ),
        "crash_process": "workcrew, process workers:",
        "crash_row_ok": "  task {i}: result {value}",
        "crash_row_err": "  task {i}: {error}",
        "crash_thread": "workcrew, thread workers (in a separate Python process, to survive it):",
        "crash_thread_row": "  the whole process died (exit status {code}) after {n} of 6 results: "
        "every other task was lost",
        "crash_stdlib": "The standard library, same tasks:",
        "crash_mp": "  multiprocessing.Pool.map: still waiting after {secs:.0f} s "
        "(it never returns: the dead worker's task is never failed)",
        "crash_mp_done": "  multiprocessing.Pool.map: returned {value}",
        "crash_ppe": "  ProcessPoolExecutor: {n} of 6 futures failed with BrokenProcessPool "
        "(the whole pool is broken)",
        "io_title": "Lesson 4 - IO-bound work: threads, processes, and letting workcrew choose",
        "io_intro": (
            "{n} tasks that each wait {ms:.0f} ms (a download, say) and do almost no computing.\n"
            "While a thread waits it releases the GIL, so many threads wait at once; a process\n"
            "pool waits only as many times at once as it has processes."
        ),
        "io_head": "how                        time      tasks waiting at once",
        "io_row": "{how:<25}  {secs:>6.2f} s  {conc:>6.1f}",
        "io_serial": "serial (computed)",
        "io_verdict": "Threads were {ratio:.1f}x faster than processes here: for waiting, "
        "use kind='thread' (or kind='async' for coroutines).",
        "auto_head": "kind='auto' measured each function's CPU time against its wall time:",
        "auto_row": "  {fn:<14} -> {kind:<7} ({reason})",
        "async_title": "Lesson 5 - async IO: one thread, many waits",
        "async_intro": (
            "{n} requests that each wait {ms:.0f} ms. Coroutines wait on one event loop in one\n"
            "thread; {threads} threads wait in {threads} OS threads; hybrid workers run an event\n"
            "loop in each of {procs} processes (CPU cores for computing, coroutines for waiting)."
        ),
        "async_head": "how                                   time      OS threads",
        "async_row": "{how:<36}  {secs:>6.2f} s  {threads:>6}",
        "async_threads": "kind='thread', {n} workers",
        "async_loop": "kind='async', {n} at once",
        "async_hybrid": "{procs} processes x {n} coroutines",
        "async_verdict": "The event loop waited on all {n} requests at once with a single thread.",
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
        "crash_title": "第三课 - 稳定性: 任务让它的工作者崩溃",
        "crash_intro": (
            "6 个任务; 第 3 个用 os._exit(1) 杀死自己所在的工作者, 就像段错误或内存不足被\n"
            "系统杀掉一样. 多进程能隔离损害; 多线程共用一个进程."
        ),
        "crash_process": "workcrew, 进程工作者:",
        "crash_row_ok": "  任务 {i}: 结果 {value}",
        "crash_row_err": "  任务 {i}: {error}",
        "crash_thread": "workcrew, 线程工作者 (放在单独的 Python 进程里运行, 以免演示本身被杀):",
        "crash_thread_row": "  整个进程退出 (状态码 {code}), 只拿到 6 个结果中的 {n} 个: "
        "其余任务全部丢失",
        "crash_stdlib": "标准库, 同样的任务:",
        "crash_mp": "  multiprocessing.Pool.map: {secs:.0f} 秒后仍在等待 (永远不会返回: "
        "死掉的工作者的任务永远不会被标记为失败)",
        "crash_mp_done": "  multiprocessing.Pool.map: 返回 {value}",
        "crash_ppe": "  ProcessPoolExecutor: 6 个 future 中有 {n} 个以 BrokenProcessPool 失败 "
        "(整个池都坏了)",
        "io_title": "第四课 - IO 密集型任务: 多线程, 多进程, 以及让 workcrew 自己选",
        "io_intro": (
            "{n} 个任务, 每个等待 {ms:.0f} 毫秒 (比如下载), 几乎不做计算.\n"
            "线程在等待时会释放 GIL, 所以许多线程可以同时等待; 进程池同时等待的数量\n"
            "只等于它的进程数."
        ),
        "io_head": "方式                       耗时      同时等待的任务数",
        "io_row": "{how:<25}  {secs:>6.2f} 秒  {conc:>6.1f}",
        "io_serial": "串行 (计算所得)",
        "io_verdict": "在本机, 多线程比多进程快 {ratio:.1f} 倍: 等待型任务请用 kind='thread' "
        "(协程用 kind='async').",
        "auto_head": "kind='auto' 测量了每个函数的 CPU 时间与实际耗时之比:",
        "auto_row": "  {fn:<14} -> {kind:<7} ({reason})",
        "async_title": "第五课 - 异步 IO: 一个线程, 许多等待",
        "async_intro": (
            "{n} 个请求, 每个等待 {ms:.0f} 毫秒. 协程在一个线程的事件循环里等待;\n"
            "{threads} 个线程要占用 {threads} 个系统线程; 混合工作者在 {procs} 个进程里各运行一个\n"
            "事件循环 (多核负责计算, 协程负责等待)."
        ),
        "async_head": "方式                                  耗时      系统线程数",
        "async_row": "{how:<36}  {secs:>6.2f} 秒  {threads:>6}",
        "async_threads": "kind='thread', {n} 个工作者",
        "async_loop": "kind='async', 同时 {n} 个",
        "async_hybrid": "{procs} 个进程 x {n} 个协程",
        "async_verdict": "事件循环只用一个线程就同时等待了全部 {n} 个请求.",
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


def crash_on_three(i: int) -> int:
    """The lesson's task: number 3 kills the process it runs in."""
    if i == 3:
        os._exit(1)
    time.sleep(0.05)
    return i * 10


_THREAD_CRASH = """
import sys
from workcrew import Pool
from workcrew._demo import crash_on_three
with Pool(6, kind="thread") as pool:
    for r in pool.imap_unordered(crash_on_three, range(6)):
        print(r, flush=True)
"""


def lesson_crash(say: _Printer, start_method: str | None) -> None:
    """A crashing task under process workers, thread workers and the standard library."""
    import concurrent.futures
    import multiprocessing
    import subprocess
    import sys

    say("crash_title")
    say("crash_intro")
    say("crash_process")
    with workcrew.Pool(2, start_method=start_method) as pool:
        futures = [pool.submit(crash_on_three, i) for i in range(6)]
        for i, future in enumerate(futures):
            try:
                say("crash_row_ok", i=i, value=future.result())
            except workcrew.WorkerCrashed as exc:
                say("crash_row_err", i=i, error=str(exc).splitlines()[0])
    say("crash_thread")
    proc = subprocess.run(
        [sys.executable, "-c", _THREAD_CRASH],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    say("crash_thread_row", code=proc.returncode, n=len(proc.stdout.split()))
    say("crash_stdlib")
    context = multiprocessing.get_context(start_method or workcrew.default_start_method())
    mp_pool = context.Pool(2)
    try:
        waited = 3.0
        result = mp_pool.map_async(crash_on_three, range(6), chunksize=1)
        try:
            say("crash_mp_done", value=result.get(timeout=waited))
        except multiprocessing.TimeoutError:
            say("crash_mp", secs=waited)
    finally:
        mp_pool.terminate()
        mp_pool.join()
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as ex:
        futures = [ex.submit(crash_on_three, i) for i in range(6)]
        broken = 0
        for future in futures:
            try:
                future.result()
            except concurrent.futures.process.BrokenProcessPool:
                broken += 1
    say("crash_ppe", n=broken)


def download(seconds: float) -> float:
    """The IO lesson's task: wait (as for a network reply), compute almost nothing."""
    time.sleep(seconds)
    return seconds


def lesson_io(say: _Printer, start_method: str | None) -> None:
    """Waiting work on threads and on processes; then kind="auto" choosing by itself."""
    processes = max(2, workcrew.available_cpu_count())
    threads, tasks, wait = 20, 40, 0.05
    say("io_title")
    say("io_intro", n=tasks, ms=wait * 1000)
    timings = {}
    for kind, workers in (("thread", threads), ("process", processes)):
        with workcrew.Pool(workers, kind=kind, start_method=start_method) as pool:
            pool.map(abs, range(workers), chunksize=1)  # start-up is not what we measure
            start = time.perf_counter()
            pool.map(download, [wait] * tasks, chunksize=1)
            timings[kind] = time.perf_counter() - start
    serial = tasks * wait
    say("io_head")
    say("io_row", how=say.text["io_serial"], secs=serial, conc=1.0)
    for kind, workers in (("thread", threads), ("process", processes)):
        how = say.text["threads" if kind == "thread" else "processes"].format(n=workers)
        say("io_row", how=how, secs=timings[kind], conc=serial / timings[kind])
    say("io_verdict", ratio=timings["process"] / timings["thread"])
    iterations = _calibrate(0.02)
    with workcrew.Pool(threads, kind="auto", start_method=start_method) as pool:
        pool.map(spin, [iterations] * 4)
        pool.map(download, [wait] * 4)
        choices = pool.kind_choices()
    say("auto_head")
    for choice in choices:
        say(
            "auto_row",
            fn=choice.function.rsplit(".", 1)[-1],
            kind=choice.kind,
            reason=choice.reason,
        )


async def request(seconds: float) -> float:
    """The async lesson's task: a non-blocking wait, as for an HTTP reply."""
    import asyncio

    await asyncio.sleep(seconds)
    return seconds


def _threads_of(pool_kind: str, workers: int, procs: int) -> str:
    if pool_kind == "thread":
        return str(workers)
    if pool_kind == "async":
        return "1"
    return f"{procs} x 1"


def lesson_async(say: _Printer, start_method: str | None) -> None:
    """The same waits on many threads, on one event loop, and on loops in a few processes."""
    tasks, wait, threads = 200, 0.1, 20
    procs = max(2, workcrew.available_cpu_count())
    say("async_title")
    say("async_intro", n=tasks, ms=wait * 1000, threads=threads, procs=procs)
    say("async_head")
    runs = [
        (
            "thread",
            say.text["async_threads"].format(n=threads),
            download,
            {"processes": threads, "kind": "thread"},
        ),
        (
            "async",
            say.text["async_loop"].format(n=tasks),
            request,
            {"processes": tasks, "kind": "async"},
        ),
        (
            "hybrid",
            say.text["async_hybrid"].format(procs=procs, n=tasks // procs),
            request,
            {"processes": procs, "concurrency_per_worker": -(-tasks // procs)},
        ),
    ]
    for pool_kind, how, fn, kw in runs:
        with workcrew.Pool(start_method=start_method, **kw) as pool:  # type: ignore[arg-type]
            start = time.perf_counter()
            got = pool.map(fn, [wait] * tasks)
            secs = time.perf_counter() - start
        if got != [wait] * tasks:
            raise RuntimeError(f"{how} returned wrong results")
        say("async_row", how=how, secs=secs, threads=_threads_of(pool_kind, threads, procs))
    say("async_verdict", n=tasks)


#: Lessons in the order they run; later issues add theirs here.
LESSONS = {
    "pool": lesson_pool,
    "cpu": lesson_cpu,
    "crash": lesson_crash,
    "io": lesson_io,
    "async": lesson_async,
}


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
