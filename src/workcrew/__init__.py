"""workcrew: one Master-Worker engine for processes and threads.

``workcrew.Pool`` is a drop-in for ``multiprocessing.Pool`` and
``workcrew.Executor`` a real ``concurrent.futures.Executor``; both run on the
same engine, whose workers may be processes or threads (``kind=``).
"""

import importlib as _importlib

TYPE_CHECKING = False  # not typing's: importing typing costs every program (and worker) ~3 ms
if TYPE_CHECKING:  # the names, for type checkers; at run time they load on first use
    from typing import Any

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
    from ._front._pipeline import Pipeline, PipelineRun
    from ._front._pool import Pool
    from ._front._results import AsyncResult, IMapIterator
    from ._front._stages import Stage, StageStatistics
    from ._sharing._arrays import shared_array
    from ._sharing._locks import Lock, RLock, Value
    from ._sharing._queue import Queue

__version__ = "0.1.0"

del TYPE_CHECKING  # not a public name

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
    "shared_array",
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

#: Where each public name lives.  ``import workcrew`` loads none of them: a name's
#: module (and what it needs) is imported when the name is first used, so a program
#: pays only for the features it touches (see docs/design.md, "Start-up").
_HOMES = {
    "Pool": "._front._pool",
    "Executor": "._front._executor",
    "AsyncResult": "._front._results",
    "IMapIterator": "._front._results",
    "KindChoice": "._core._auto_policy",
    "PoolStatistics": "._core._stats",
    "WorkerStatistics": "._core._stats",
    "TaskSpan": "._core._stats",
    "Timeline": "._display._timeline",
    "Pipeline": "._front._pipeline",
    "Stage": "._front._stages",
    "PipelineRun": "._front._pipeline",
    "StageStatistics": "._front._stages",
    "Queue": "._sharing._queue",
    "Lock": "._sharing._locks",
    "RLock": "._sharing._locks",
    "Value": "._sharing._locks",
    "shared_array": "._sharing._arrays",
    "available_cpu_count": "._core._system",
    "default_start_method": "._core._options",
    "worker_state": "._core._state",
    "WorkcrewError": "._core._exceptions",
    "PoolClosedError": "._core._exceptions",
    "BrokenPoolError": "._core._exceptions",
    "InitializerError": "._core._exceptions",
    "NestedPoolWarning": "._core._exceptions",
    "WorkerCrashed": "._core._exceptions",
    "TaskCancelled": "._core._exceptions",
    "SerializationError": "._core._exceptions",
    "TaskFailed": "._core._exceptions",
    "TaskTimeout": "._core._exceptions",
    "TimeoutError": "._core._exceptions",
    "DeadlockError": "._core._exceptions",
    "QueueClosed": "._core._exceptions",
    "RemoteTraceback": "._core._exceptions",
}


def __getattr__(name: str) -> "Any":
    """Load a public name's module on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'workcrew' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home, __name__), name)
    globals()[name] = value  # later uses are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("_"))})
