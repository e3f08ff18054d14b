"""The errors that are also ``concurrent.futures``' ``BrokenProcessPool``.

Their bases live in ``concurrent.futures.process``, whose import loads
``multiprocessing``'s connection machinery (``tempfile``, ``shutil``,
``random``, ...: ~8 ms).  So they live here, loaded when first used: by a
pool that breaks or a worker that crashes, or by a program that names them
(``workcrew.WorkerCrashed``, ``except BrokenProcessPool``).  The rest of the
hierarchy, and its documentation, is in ``_exceptions``, which hands these
out by name.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.thread import BrokenThreadPool

from ._exceptions import WorkcrewError
from ._public import public

__all__ = ("BrokenPoolError", "InitializerError", "WorkerCrashed")


class BrokenPoolError(WorkcrewError, BrokenProcessPool, BrokenThreadPool):
    """The pool cannot run work any more, for a reason outside your calls.

    Raised for every pending and future task once workers cannot be started
    (for example the start method failed repeatedly).  The cause is chained as
    ``__cause__``.  A single crashing task never breaks the pool: that is a
    :class:`WorkerCrashed` for that task alone.

    It is a ``concurrent.futures`` ``BrokenProcessPool`` and ``BrokenThreadPool``
    (so a ``BrokenExecutor`` and a ``RuntimeError``) whatever the worker kind:
    ``except`` clauses written for either executor catch it.
    """


class InitializerError(BrokenPoolError):
    """The pool's ``initializer`` raised in a worker.

    Workers are not respawned forever: the first failure breaks the pool, and
    the initializer's own exception (with its worker-side traceback) is the
    ``__cause__``.
    """


class WorkerCrashed(WorkcrewError, BrokenProcessPool):
    """The worker running this task died before returning a result.

    Typical causes: a segfault in an extension, ``os._exit()``, a ``SIGKILL``,
    or the kernel's out-of-memory killer.  Only the task that was running fails;
    tasks queued behind it are handed to other workers, and the dead worker is
    replaced.

    It is a ``BrokenProcessPool`` (what ``ProcessPoolExecutor`` raises for every
    pending task when a worker dies), so ``except BrokenProcessPool`` and
    ``except BrokenExecutor`` still catch it; unlike there, the pool goes on.

    Attributes: ``worker_id``, ``pid``, ``exitcode`` (negative: killed by that
    signal number).
    """

    worker_id: int
    pid: int | None
    exitcode: int | None

    def __init__(
        self,
        message: str,
        *,
        worker_id: int = -1,
        pid: int | None = None,
        exitcode: int | None = None,
    ) -> None:
        super().__init__(message)
        self.worker_id = worker_id
        self.pid = pid
        self.exitcode = exitcode


public(BrokenPoolError, InitializerError, WorkerCrashed)
