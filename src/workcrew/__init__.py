"""workcrew: one Master-Worker engine for processes and threads.

``workcrew.Pool`` is a drop-in for ``multiprocessing.Pool`` and
``workcrew.Executor`` a real ``concurrent.futures.Executor``; both run on the
same engine, whose workers may be processes or threads (``kind=``).
"""

from ._core._auto_policy import KindChoice
from ._core._exceptions import (
    BrokenPoolError,
    DeadlockError,
    InitializerError,
    NestedPoolWarning,
    PoolClosedError,
    QueueClosed,
    RemoteTraceback,
    SerializationError,
    TaskCancelled,
    TaskFailed,
    TaskTimeout,
    TimeoutError,
    WorkcrewError,
    WorkerCrashed,
)
from ._core._options import default_start_method
from ._core._state import worker_state
from ._core._stats import PoolStatistics, TaskSpan, WorkerStatistics
from ._core._system import available_cpu_count
from ._display._timeline import Timeline
from ._front._executor import Executor
from ._front._pipeline import Pipeline, PipelineRun, Stage, StageStatistics
from ._front._pool import AsyncResult, IMapIterator, Pool
from ._sharing._locks import Lock, RLock, Value
from ._sharing._queue import Queue

__version__ = "0.1.0"

__all__ = (
    # pools
    "Pool",
    "Executor",
    "AsyncResult",
    "IMapIterator",
    "KindChoice",
    # seeing the work
    "PoolStatistics",
    "WorkerStatistics",
    "TaskSpan",
    "Timeline",
    # pipelines
    "Pipeline",
    "Stage",
    "PipelineRun",
    "StageStatistics",
    # sharing between workers
    "Queue",
    "Lock",
    "RLock",
    "Value",
    # helpers
    "available_cpu_count",
    "default_start_method",
    "worker_state",
    # errors
    "WorkcrewError",
    "PoolClosedError",
    "BrokenPoolError",
    "InitializerError",
    "NestedPoolWarning",
    "WorkerCrashed",
    "TaskCancelled",
    "SerializationError",
    "TaskFailed",
    "TaskTimeout",
    "TimeoutError",
    "DeadlockError",
    "QueueClosed",
    "RemoteTraceback",
)

# Tracebacks, reprs and pickles name the public path (workcrew.Pool), not the
# private module that defines it.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("workcrew."):
        try:
            _obj.__module__ = "workcrew"
        except (AttributeError, TypeError):  # pragma: no cover - builtins refuse
            pass
del _name, _obj
