"""When workers that die before they are ready mean a broken pool, and when bad luck.

A worker that ends before it is ready may have been broken (a main module
that cannot be imported, an initializer that exits, a machine out of
resources) or unlucky (another process killed it).  Respawning a broken one
forever would hang every caller; breaking the pool for an unlucky one would
fail work that could run.  :class:`StartupWatch` tells them apart by the exit
status and decides, for the master, when the pool is broken.
"""

from __future__ import annotations

import signal
import time

from ._crash import describe_exit
from ._exceptions import broken_pool
from ._system import oom_kill_count

TYPE_CHECKING = False  # no typing at run time (see _typing)
if TYPE_CHECKING:
    from ._broken import BrokenPoolError

__all__ = ("MAX_STARTUP_FAILURES", "OUTSIDE_SIGNALS", "STARTUP_KILL_WINDOW", "StartupWatch")

#: Workers that fail before ever becoming ready, in a row, before the pool is
#: declared broken: a start method, main module or environment that cannot work
#: must not respawn forever.  Killed from outside (below) does not count.
MAX_STARTUP_FAILURES = 3
#: Signals by which other processes stop a process (kill, kill -9, Ctrl-C,
#: hang-up): a worker they end before it is ready was not broken, only
#: unlucky; it is not counted, and the next one starts at once.  (No backoff:
#: under kills at a steady rate, fewer workers starting at once means fewer
#: ever become ready; measured, a backoff made the chaos tests slower and let
#: a retried item be killed on every attempt.)
OUTSIDE_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
#: Such deaths break the pool only if they go on this many seconds with no
#: worker becoming ready: then something kills every worker as it starts (an
#: initializer killing its own worker looks the same), and the pool breaks
#: rather than let its tasks wait forever.
STARTUP_KILL_WINDOW = 30.0


class StartupWatch:
    """Counts deaths before ready since the last worker became ready (master thread only)."""

    def __init__(self, start_method: str) -> None:
        self._method = start_method
        self._failures = 0  # deaths of their own, in a row
        self._killed_since: float | None = None  # first of the kills in a row
        self._kills = 0  # killed from outside since the last ready worker
        #: the cgroup's OOM-kill counter when the pool started (None: unknown)
        self.oom_kills_at_start = oom_kill_count()

    def ready(self) -> None:
        """A worker became ready: the environment works; forget the deaths so far."""
        self._failures = 0
        self._killed_since = None
        self._kills = 0

    def died_starting(self, exitcode: int | None) -> BrokenPoolError | None:
        """A worker ended before it was ready: the error that breaks the pool, if it is broken."""
        how = describe_exit(exitcode)
        if self._killed_from_outside(exitcode):
            now = time.monotonic()
            self._kills += 1
            if self._killed_since is None:
                self._killed_since = now
            elif now - self._killed_since >= STARTUP_KILL_WINDOW:
                return broken_pool(
                    f"for {STARTUP_KILL_WINDOW:g} s every worker was killed before it became "
                    f"ready ({self._kills} workers; the last {how}, start method "
                    f"{self._method!r}): something kills the workers as they start (another "
                    "process, the machine's limits, or an initializer that kills its own worker)."
                )
            return None
        self._failures += 1
        if self._failures < MAX_STARTUP_FAILURES:
            return None
        return broken_pool(
            f"{MAX_STARTUP_FAILURES} workers in a row ended before becoming ready: the last "
            f"{how} (start method {self._method!r}); the pool cannot start workers. "
            f"{_startup_hint(exitcode)}"
        )

    def _killed_from_outside(self, exitcode: int | None) -> bool:
        if exitcode is None or exitcode >= 0 or -exitcode not in OUTSIDE_SIGNALS:
            return False
        # The kernel's OOM killer also sends SIGKILL: that is the environment.
        oom_now = oom_kill_count()
        return (
            oom_now is None or self.oom_kills_at_start is None or oom_now <= self.oom_kills_at_start
        )


def _startup_hint(exitcode: int | None) -> str:
    """What to check, for a worker that keeps failing before it is ready."""
    if exitcode is not None and exitcode < 0:
        return (
            "A crash while starting: a C extension imported by the main module or the "
            "initializer (see the worker's stderr above), or the machine's limits."
        )
    return (
        "Check that the main module is importable (guard it with `if __name__ == "
        "'__main__':`), that the initializer does not exit, and that the machine has "
        "resources for new processes."
    )
