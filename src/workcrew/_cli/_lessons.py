"""The words of ``workcrew demo``, in English and Chinese (the code is in ``_demo.py``).

Each lesson's strings are looked up by key and filled with ``str.format``.
"""

__all__ = ("TEXT",)

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
        "pool_timeline": "The same, as the pool recorded it (Pool(..., timeline=True)): one row "
        "per worker, # while it ran a task.",
        "pool_files": "Trace for Perfetto / chrome://tracing: {trace}\nPicture: {page}",
        "pool_dashboard": "Watch it live in a browser while it runs (Pool(..., dashboard=True)):\n"
        "  {url}\n"
        "  (workcrew demo --dashboard keeps this lesson's pool open until you press Enter)",
        "pool_pause": "Press Enter to close lesson 1's pool and its dashboard... ",
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
        "queue_title": "Lesson 6 - a queue between processes: the writer and the reader",
        "queue_intro": (
            "The writer process puts values in a queue, the reader process takes them out.\n"
            "With multiprocessing the reader loops forever and must be terminate()d; here the\n"
            "writer closes the queue and the reader's `for item in queue` loop simply ends."
        ),
        "queue_writer": "writer (pid {pid}) put:  {items}",
        "queue_reader": "reader (pid {pid}) got:  {items}  - its loop ended by itself",
        "queue_stream": "{n:,} items from one process to another through a queue of maxsize "
        "{maxsize}: {secs:.2f} s ({rate:,.0f} items/s); the writer was never more than "
        "{ahead} items ahead of the reader (backpressure).",
        "lock_title": "Lesson 7 - shared memory needs a lock: the bank account",
        "lock_intro": (
            "Two workers share a balance of 0; one deposits 1, the other withdraws 1, {n:,} times\n"
            "each. Without a lock, `balance += 1` (read, add, write) can interleave and lose\n"
            "updates; with a lock the balance ends at exactly 0."
        ),
        "lock_head": "how                                   final balance   time",
        "lock_row": "{how:<36}  {balance:>13,}   {secs:>5.2f} s",
        "lock_procs_nolock": "2 processes, no lock",
        "lock_procs_lock": "2 processes, workcrew.Lock",
        "lock_threads_nolock": "2 threads, no lock (the lecture)",
        "lock_threads_lock": "2 threads, workcrew.Lock",
        "lock_gil": (
            "Honest note: on CPython 3.10+ the threads without a lock usually end at 0 too. The\n"
            "interpreter only switches threads at a few points (calls, loop ends), never inside\n"
            "`balance += 1` on a plain variable, so the GIL hides this race; it does not make\n"
            "the code correct (other code, or Python without the GIL, loses updates). Processes\n"
            "really run at the same time, which is where the lost updates above come from."
        ),
        "deadlock_intro": (
            "Locks bring deadlocks: worker A takes lock 'first' then 'second', worker B takes\n"
            "'second' then 'first'. workcrew notices the cycle and fails one of them:"
        ),
        "deadlock_failed": "  worker pid {pid}: DeadlockError: {message}",
        "deadlock_went_on": "  worker pid {pid}: took both locks once the other let go",
        "state_title": "Lesson 8 - per-worker state: the thread-local lesson, for every kind",
        "state_intro": (
            "Each worker opens one database connection (sqlite3) in the pool's initializer and\n"
            "keeps it, as threading.local() gives each thread its own; tasks reach it with\n"
            "workcrew.worker_state(), and worker_exit= closes it when the worker ends."
        ),
        "state_head": "kind      workers  tasks  connections opened  closed by worker_exit",
        "state_row": "{kind:<8}  {workers:>7}  {tasks:>5}  {opened:>18}  {closed:>21}",
        "state_context": "Context variables: the caller set request_id={value!r}; tasks on "
        "threads and processes saw {seen}.",
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
        "pool_timeline": "池自己记录的时间线 (Pool(..., timeline=True)): 每个工作者一行, "
        "# 表示正在执行任务.",
        "pool_files": "Perfetto / chrome://tracing 可打开的轨迹文件: {trace}\n图: {page}",
        "pool_dashboard": "运行期间可在浏览器中实时查看 (Pool(..., dashboard=True)):\n"
        "  {url}\n  (workcrew demo --dashboard 会让本课的池一直开着, 直到你按回车)",
        "pool_pause": "按回车关闭第 1 课的池和它的仪表板... ",
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
        "queue_title": "第六课 - 进程之间的队列: 写进程与读进程",
        "queue_intro": (
            "写进程把数据放进队列, 读进程从队列取出. 用 multiprocessing 时读进程是死循环,\n"
            "只能 terminate() 强行终止; 这里写进程关闭队列, 读进程的 `for item in queue`\n"
            "循环自然结束."
        ),
        "queue_writer": "写进程 (pid {pid}) 放入: {items}",
        "queue_reader": "读进程 (pid {pid}) 取出: {items}  - 循环自行结束",
        "queue_stream": "{n:,} 个数据经由 maxsize={maxsize} 的队列从一个进程传到另一个进程: "
        "{secs:.2f} 秒 (每秒 {rate:,.0f} 个); 写进程最多领先读进程 {ahead} 个 (背压).",
        "lock_title": "第七课 - 共享内存需要锁: 银行账户",
        "lock_intro": (
            "两个工作者共享余额 0; 一个存入 1, 另一个取出 1, 各 {n:,} 次. 不加锁时,\n"
            "`balance += 1` (读, 加, 写) 可能交错执行而丢失更新; 加锁后余额恰好为 0."
        ),
        "lock_head": "方式                                  最终余额        耗时",
        "lock_row": "{how:<36}  {balance:>13,}   {secs:>5.2f} 秒",
        "lock_procs_nolock": "2 个进程, 不加锁",
        "lock_procs_lock": "2 个进程, workcrew.Lock",
        "lock_threads_nolock": "2 个线程, 不加锁 (课上的例子)",
        "lock_threads_lock": "2 个线程, workcrew.Lock",
        "lock_gil": (
            "说明: 在 CPython 3.10+ 上, 不加锁的线程通常也得到 0. 解释器只在少数位置\n"
            "(函数调用, 循环末尾) 切换线程, 不会在普通变量的 `balance += 1` 中间切换, 所以\n"
            "GIL 掩盖了这个竞争; 代码并没有因此变得正确 (换一种写法, 或没有 GIL 的 Python,\n"
            "就会丢失更新). 进程是真正同时运行的, 上面丢失的更新就来自那里."
        ),
        "deadlock_intro": (
            "锁会带来死锁: 工作者 A 先拿 'first' 再拿 'second', 工作者 B 先拿 'second' 再拿\n"
            "'first'. workcrew 发现了这个环, 让其中一个失败:"
        ),
        "deadlock_failed": "  工作者 pid {pid}: DeadlockError: {message}",
        "deadlock_went_on": "  工作者 pid {pid}: 另一个放手之后, 拿到了两把锁",
        "state_title": "第八课 - 每个工作者自己的状态: 线程局部变量, 适用于每种工作者",
        "state_intro": (
            "每个工作者在池的 initializer 里打开一个数据库连接 (sqlite3) 并一直使用, 就像\n"
            "threading.local() 让每个线程有自己的连接; 任务用 workcrew.worker_state() 取得它,\n"
            "工作者结束时由 worker_exit= 关闭."
        ),
        "state_head": "方式      工作者数  任务数  打开的连接数  worker_exit 关闭的连接数",
        "state_row": "{kind:<8}  {workers:>7}  {tasks:>5}  {opened:>12}  {closed:>24}",
        "state_context": "上下文变量: 调用方设置了 request_id={value!r}; 线程和进程里的任务"
        "看到的是 {seen}.",
        "done": "完成. 功能列表见 README.md, 每个功能的说明见 docs/ 目录.",
    },
}
