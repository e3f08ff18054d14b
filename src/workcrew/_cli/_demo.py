"""``workcrew demo``: the lecture's lessons, measured live on this machine.

EDGE module: uses only the public ``workcrew`` API.  Each lesson is a
function that prints its own section; the task functions are at module level
so process workers under every start method can import them.
"""

from __future__ import annotations

import contextvars
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import workcrew

from ._lessons import TEXT

__all__ = ("run_demo",)


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
    #: called while lesson 1's pool (and its dashboard) is still open
    pause: Callable[[], object] = lambda: None

    def __call__(self, key: str, **values: object) -> None:
        self.write(self.text[key].format(**values))


def lesson_pool(say: _Printer, start_method: str | None) -> None:
    """Five tasks on a pool of four: pids, start times and durations."""
    say("pool_title")
    say("pool_intro")
    rng = random.Random(7)
    durations = [round(rng.uniform(0.2, 0.6), 2) for _ in range(5)]
    t0 = time.time()
    with workcrew.Pool(4, start_method=start_method, timeline=True, dashboard=True) as pool:
        say("pool_dashboard", url=pool.dashboard_url)
        pool.map(abs, range(4), chunksize=1)  # let every worker start before timing
        t0 = time.time()
        results = [pool.apply_async(long_time_task, (d,)) for d in durations]
        rows = [r.get() for r in results]
        timeline = pool.timeline()
        total = time.time() - t0
        say.pause()
    say("pool_head")
    for i, (pid, start, dur) in enumerate(rows):
        say("pool_row", task=i, pid=pid, start=start - t0, dur=dur)
    say("pool_total", total=total, pids=len({pid for pid, _, _ in rows}), serial=sum(durations))
    # The picture: the lesson's own tasks (the start-up `abs` calls are left out).
    lesson = workcrew.Timeline([s for s in timeline.spans if s.function.endswith("long_time_task")])
    say("pool_timeline")
    say.write(lesson.text(50))
    folder = Path(tempfile.gettempdir())
    trace = lesson.write_trace(folder / "workcrew-demo-timeline.json")
    page = lesson.write_html(folder / "workcrew-demo-timeline.html", "workcrew demo: lesson 1")
    say("pool_files", trace=trace, page=page)


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
from workcrew._cli._demo import crash_on_three
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
        with workcrew.Pool(start_method=start_method, **kw) as pool:  # type: ignore[arg-type]  # kw mixes option types
            start = time.perf_counter()
            got = pool.map(fn, [wait] * tasks)
            secs = time.perf_counter() - start
        if got != [wait] * tasks:
            raise RuntimeError(f"{how} returned wrong results")
        say("async_row", how=how, secs=secs, threads=_threads_of(pool_kind, threads, procs))
    say("async_verdict", n=tasks)


def queue_writer(q: workcrew.Queue[str], items: list[str]) -> int:
    """The lecture's writer: put each value, then close the queue (the end of the stream)."""
    for item in items:
        q.put(item)
    q.close()
    return os.getpid()


def queue_reader(q: workcrew.Queue[str]) -> tuple[int, list[str]]:
    """The lecture's reader: take values until the writer closes the queue."""
    return os.getpid(), list(q)


def stream_writer(q: workcrew.Queue[int], n: int) -> int:
    """Put ``n`` numbers; return the most the queue ever held (the writer's lead)."""
    ahead = 0
    for i in range(n):
        q.put(i)
        ahead = max(ahead, q.qsize())
    q.close()
    return ahead


def stream_reader(q: workcrew.Queue[int]) -> int:
    return sum(1 for _ in q)


def lesson_queue(say: _Printer, start_method: str | None) -> None:
    """Writer and reader processes sharing a workcrew.Queue; a stream with backpressure."""
    say("queue_title")
    say("queue_intro")
    items = ["A", "B", "C"]
    with workcrew.Pool(2, start_method=start_method) as pool:
        q: workcrew.Queue[str] = workcrew.Queue()
        reader = pool.apply_async(queue_reader, (q,))
        writer_pid = pool.apply(queue_writer, (q, items))
        reader_pid, got = reader.get()
        say("queue_writer", pid=writer_pid, items=", ".join(items))
        say("queue_reader", pid=reader_pid, items=", ".join(got))
        n, maxsize = 20_000, 100
        stream: workcrew.Queue[int] = workcrew.Queue(maxsize=maxsize)
        start = time.perf_counter()
        count = pool.apply_async(stream_reader, (stream,))
        ahead = pool.apply(stream_writer, (stream, n))
        if count.get() != n:
            raise RuntimeError("the queue lost items")
        secs = time.perf_counter() - start
    say("queue_stream", n=n, maxsize=maxsize, secs=secs, rate=n / secs, ahead=ahead)


def deposit(balance: workcrew.Value, lock: workcrew.Lock | None, n: int, sign: int) -> int:
    """The bank account's worker: ``n`` deposits (sign 1) or withdrawals (sign -1)."""
    if lock is None:
        for _ in range(n):
            balance.value += sign
    else:
        for _ in range(n):
            with lock:
                balance.value += sign
    return n


_plain_balance = 0


def _plain_deposit(n: int, sign: int) -> None:
    # The lecture's exact code: a global int, `+=` without a lock.
    global _plain_balance
    for _ in range(n):
        _plain_balance += sign


def _bank_run(kind: str, locked: bool, n: int, start_method: str | None) -> tuple[int, float]:
    start = time.perf_counter()
    if kind == "thread" and not locked:
        global _plain_balance
        _plain_balance = 0
        import threading

        threads = [threading.Thread(target=_plain_deposit, args=(n, s)) for s in (1, -1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return _plain_balance, time.perf_counter() - start
    balance = workcrew.Value("q", 0)
    lock = workcrew.Lock("account") if locked else None
    with workcrew.Pool(2, kind=kind, start_method=start_method) as pool:
        start = time.perf_counter()
        pool.starmap(deposit, [(balance, lock, n, 1), (balance, lock, n, -1)], chunksize=1)
        return int(balance.value), time.perf_counter() - start


def crossed_locks(
    first: workcrew.Lock, second: workcrew.Lock, met: workcrew.Queue[int], go: workcrew.Queue[int]
) -> tuple[int, str]:
    """Take ``first``; once the caller says both workers hold their first lock, take ``second``."""
    with first:
        met.put(os.getpid())
        go.get()
        try:
            with second:
                return os.getpid(), ""
        except workcrew.DeadlockError as exc:
            return os.getpid(), str(exc).split(". ")[0]  # the cycle, without the advice


def lesson_lock(say: _Printer, start_method: str | None) -> None:
    """The bank account with and without a lock, in processes and threads; then a deadlock."""
    n = 1_000_000
    say("lock_title")
    say("lock_intro", n=n)
    say("lock_head")
    for key, kind, locked in (
        ("lock_procs_nolock", "process", False),
        ("lock_procs_lock", "process", True),
        ("lock_threads_nolock", "thread", False),
        ("lock_threads_lock", "thread", True),
    ):
        balance, secs = _bank_run(kind, locked, n, start_method)
        if locked and balance != 0:
            raise RuntimeError(f"the locked bank account ended at {balance}")
        say("lock_row", how=say.text[key], balance=balance, secs=secs)
    say("lock_gil")
    say("deadlock_intro")
    first, second = workcrew.Lock("first"), workcrew.Lock("second")
    met: workcrew.Queue[int] = workcrew.Queue()
    go: workcrew.Queue[int] = workcrew.Queue()
    with workcrew.Pool(2, start_method=start_method) as pool:
        a = pool.apply_async(crossed_locks, (first, second, met, go))
        b = pool.apply_async(crossed_locks, (second, first, met, go))
        for _ in range(2):
            met.get()  # both hold their first lock: let them close the cycle
        for _ in range(2):
            go.put(1)
        for pid, message in sorted([a.get(), b.get()], key=lambda o: not o[1]):
            if message:
                say("deadlock_failed", pid=pid, message=message)
            else:
                say("deadlock_went_on", pid=pid)


def open_connection(closed: workcrew.Value) -> tuple[Any, workcrew.Value]:
    """The initializer: one connection per worker; its return value is the worker's state."""
    import sqlite3

    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.execute("create table seen (task integer)")
    return connection, closed


def close_connection(state: tuple[Any, workcrew.Value]) -> None:
    """worker_exit: close the worker's connection, and count it."""
    connection, closed = state
    connection.close()
    closed.add(1)


def record(task: int) -> int:
    """A task: use this worker's connection (never opens one)."""
    connection, _ = workcrew.worker_state()
    connection.execute("insert into seen values (?)", (task,))
    return id(connection) ^ os.getpid()  # which connection, across processes


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def read_request_id(_: object = None) -> str:
    return REQUEST_ID.get()


def lesson_state(say: _Printer, start_method: str | None) -> None:
    """One connection per worker through initializer/worker_state/worker_exit; context vars."""
    say("state_title")
    say("state_intro")
    say("state_head")
    tasks = 100
    for kind, workers in (("thread", 4), ("process", 2)):
        closed = workcrew.Value("i", 0)
        with workcrew.Pool(
            workers,
            kind=kind,
            start_method=start_method,
            initializer=open_connection,
            initargs=(closed,),
            worker_exit=close_connection,
        ) as pool:
            connections = set(pool.map(record, range(tasks), chunksize=1))
        say(
            "state_row",
            kind=kind,
            workers=workers,
            tasks=tasks,
            opened=len(connections),
            closed=closed.value,
        )
    token = REQUEST_ID.set("req-7")
    try:
        seen = []
        for kind in ("thread", "process"):
            with workcrew.Pool(2, kind=kind, start_method=start_method) as pool:
                seen += pool.map(read_request_id, range(2))
    finally:
        REQUEST_ID.reset(token)
    say("state_context", value="req-7", seen=", ".join(sorted(set(seen))))


#: Lessons in the order they run; later issues add theirs here.
LESSONS = {
    "pool": lesson_pool,
    "cpu": lesson_cpu,
    "crash": lesson_crash,
    "io": lesson_io,
    "async": lesson_async,
    "queue": lesson_queue,
    "lock": lesson_lock,
    "state": lesson_state,
}


def run_demo(
    lang: str = "en",
    lessons: list[str] | None = None,
    start_method: str | None = None,
    write: Callable[[str], None] = print,
    pause: Callable[[], object] = lambda: None,
) -> None:
    """Run the chosen lessons (all by default) and print what they measure.

    ``pause`` runs in lesson 1 before its pool closes (``--dashboard``: wait for Enter).
    """
    import platform

    say = _Printer(TEXT[lang], write, pause)
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
