"""Crash reports: why a worker died, told as precisely as the system allows."""

from __future__ import annotations

import signal

from ._exceptions import TaskTimeout
from ._execute import describe_call
from ._system import oom_kill_count

TYPE_CHECKING = False  # no typing at run time (see _typing)
if TYPE_CHECKING:
    from ._broken import WorkerCrashed
    from ._slots import InFlight, Slot

__all__ = (
    "crash_error",
    "crash_report",
    "describe_exit",
    "is_cancel",
    "over_memory",
    "timeout_error",
)


def describe_exit(exitcode: int | None) -> str:
    """``exited with status 3`` / ``was killed by SIGSEGV``."""
    if exitcode is None:
        return "disappeared"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with status {exitcode}"


def crash_report(
    worker: str, exitcode: int | None, call: str, stderr_tail: list[str], oom_before: int | None
) -> str:
    """The message of a WorkerCrashed: who died, how, running what, what it said last."""
    how = describe_exit(exitcode)
    parts = [f"{worker} {how} while running {call}; the worker was replaced, other tasks go on."]
    if exitcode == -signal.SIGKILL:
        oom_now = oom_kill_count()
        if oom_before is not None and oom_now is not None and oom_now > oom_before:
            parts.append(
                "The kernel's out-of-memory killer killed a process of this cgroup meanwhile "
                f"(memory.events oom_kill {oom_before} -> {oom_now}): the task most likely "
                "needed more memory than the limit allows."
            )
        else:
            parts.append(
                "SIGKILL comes from another process or from the kernel's out-of-memory killer "
                "(see `dmesg`); if the task uses much memory, that is the likely cause."
            )
    elif exitcode == -signal.SIGSEGV:
        parts.append("A segmentation fault: usually a bug in a C extension the task called.")
    fatal = [i for i, line in enumerate(stderr_tail) if line.startswith("Fatal Python error")]
    if fatal:  # faulthandler's dump: its top holds the frames of the task
        shown = "\n    ".join(stderr_tail[fatal[-1] : fatal[-1] + 14])
        parts.append(f"The worker's Python stack when it died:\n    {shown}")
    elif stderr_tail:
        shown = "\n    ".join(stderr_tail[-12:])
        parts.append(f"Last lines on the worker's stderr:\n    {shown}")
    return "\n".join(parts)


def crash_error(
    slot: Slot, exitcode: int | None, chunk: InFlight, oom_before: int | None
) -> WorkerCrashed:
    """The error of the task ``slot``'s worker was running when it died."""
    handle = slot.handle
    call = describe_call(chunk.job.fn, chunk.job.mode, chunk.items[0])
    worker = f"worker {handle.worker_id} (pid {handle.pid})"
    message = crash_report(worker, exitcode, call, handle.last_stderr_lines(), oom_before)
    from ._broken import WorkerCrashed  # loaded with the first crash (see _broken)

    return WorkerCrashed(message, worker_id=handle.worker_id, pid=handle.pid, exitcode=exitcode)


def timeout_error(slot: Slot, chunk: InFlight, can_kill: bool) -> TaskTimeout:
    """The error of a task that ran past its ``task_timeout``, saying what became of its worker."""
    timeout = chunk.job.policy.timeout or 0.0
    call = describe_call(chunk.job.fn, chunk.job.mode, chunk.items[0])
    handle = slot.handle
    if can_kill:
        what = f"worker {handle.worker_id} (pid {handle.pid}) was killed and replaced"
    elif slot.killed_for != chunk.seq:
        what = "the coroutine was cancelled"
    else:
        what = (
            f"thread worker {handle.worker_id} was retired and replaced; the call goes on "
            "in the background until it returns, and its result will be dropped"
        )
    return TaskTimeout(
        f"{call} ran longer than its task_timeout of {timeout:g} s; {what}",
        timeout=timeout,
        worker_id=handle.worker_id,
    )


def over_memory(slot: Slot, chunk: InFlight, rss: int, limit: int) -> str:
    """The warning for a worker replaced for its memory (``max_memory_per_worker``)."""
    call = describe_call(chunk.job.fn, chunk.job.mode, chunk.items[-1])
    return (
        f"worker {slot.handle.worker_id} (pid {slot.handle.pid}) uses {rss / 2**20:.0f} MiB "
        f"after {call}, over max_memory_per_worker ({limit / 2**20:.0f} MiB): replacing it"
    )


def is_cancel(exc: BaseException) -> bool:
    """Whether ``exc`` is a coroutine's cancellation (a timed-out async task)."""
    import asyncio  # loaded only when a failure is looked at

    return isinstance(exc, asyncio.CancelledError)
