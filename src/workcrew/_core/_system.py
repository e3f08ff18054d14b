"""Facts about the machine as this process sees it: usable CPUs, cgroup limits, OOM kills, memory.

Containers limit CPUs and memory through cgroups (v2, or v1 on older hosts);
``os.cpu_count()`` reports the whole machine.  Every reader here returns
None when the fact is not available, never raises.
"""

from __future__ import annotations

import math
import os
import sys

from ._public import public

__all__ = ("available_cpu_count", "cgroup_cpu_limit", "oom_kill_count", "resident_bytes")

#: Bytes per page, for the resident sizes /proc reports in pages.
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_ROOT = "/sys/fs/cgroup"  # paths are strings: pathlib costs an import ~3 ms


def _cgroups() -> dict[str, str]:
    """Controller name ("" for the v2 unified tree) -> this process's cgroup directory."""
    found: dict[str, str] = {}
    text = _read("/proc/self/cgroup")
    for line in (text or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            base = _ROOT if name == "" else os.path.join(_ROOT, name.removeprefix("name="))
            found[name] = os.path.join(base, path.lstrip("/"))
    return found


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().strip()
    except OSError:
        return None


def cgroup_cpu_limit() -> float | None:
    """CPUs this process's cgroup may use (its CFS quota), or None if unlimited/unknown."""
    groups = _cgroups()
    if "" in groups:
        text = _read(os.path.join(groups[""], "cpu.max"))
        if text and not text.startswith("max"):
            max_us, period_us = text.split()[:2]
            return int(max_us) / int(period_us)
    if "cpu" in groups:
        quota = _read(os.path.join(groups["cpu"], "cpu.cfs_quota_us"))
        period = _read(os.path.join(groups["cpu"], "cpu.cfs_period_us"))
        if quota and period and int(quota) > 0:
            return int(quota) / int(period)
    return None


def available_cpu_count() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    n: int | None
    if sys.version_info >= (3, 13):
        n = os.process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS and Windows
        n = os.cpu_count()
    count = max(1, n or 1)
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return count


def oom_kill_count() -> int | None:
    """How many processes the kernel's OOM killer has killed in our memory cgroup, if known."""
    groups = _cgroups()
    candidates = []
    if "" in groups:
        candidates.append(os.path.join(groups[""], "memory.events"))
    if "memory" in groups:
        candidates.append(os.path.join(groups["memory"], "memory.oom_control"))  # v1 (kernel 4.13+)
    for path in candidates:
        text = _read(path)
        for line in (text or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


public(available_cpu_count)


def resident_bytes(pid: int) -> int | None:
    """The memory of process ``pid`` that is its own, in bytes; None if it is gone.

    Resident pages less those backed by files or shared memory (``statm``'s
    resident minus shared, i.e. RssAnon): segments the worker maps (large
    arguments, ``shared_array``s, kept for reuse) belong to the caller and do
    not make a worker look big to ``max_memory_per_worker``.  Read from
    ``/proc/<pid>/statm`` on Linux (microseconds, and no import: psutil costs
    the first pool ~6 ms to load); psutil's resident size elsewhere.
    """
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            fields = statm.read().split()
        return (int(fields[1]) - int(fields[2])) * PAGE_SIZE
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None  # Linux: the process is gone
    except (OSError, ValueError, IndexError):
        return None
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None
