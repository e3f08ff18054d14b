"""A Pipeline's public records: :class:`Stage` (one step and its pool's options) and
:class:`StageStatistics` (what a stage did); the run itself is in ``_pipeline.py``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._core._public import public

__all__ = ("KINDS", "Stage", "StageStatistics", "check_count")

#: Worker kinds a stage accepts (those of ``workcrew.Pool``).
KINDS = ("thread", "process", "async", "auto")


# -- public records ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One step of a :class:`Pipeline`: a function and the pool that runs it.

    ``fn`` is called with one item and returns the item for the next stage.
    ``kind`` is a ``workcrew.Pool`` kind; the default is ``"thread"``
    (``"async"`` for an ``async def`` function): say ``kind="process"`` (or
    ``"auto"``) for CPU-bound work.  ``workers`` defaults to the kind's default
    (one process per usable CPU, ``min(32, CPUs + 4)`` threads, 100 coroutines).
    ``name`` (default: the function's name) appears in errors and statistics.
    ``chunksize``, ``start_method``, ``task_timeout``, ``retries``,
    ``initializer``, ``initargs`` and ``worker_exit`` are passed to the stage's
    ``Pool`` (per-worker state: ``workcrew.worker_state()`` in the stage function).
    """

    fn: Callable[[Any], Any] = field(kw_only=False)
    kind: str | None = None
    workers: int | None = None
    name: str = ""
    chunksize: int | None = None
    start_method: str | None = None
    task_timeout: float | None = None
    retries: int = 0
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    worker_exit: Callable[[Any], object] | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"a stage needs a callable, got {self.fn!r}")
        kind = self.kind
        if kind is None:
            kind = "async" if inspect.iscoroutinefunction(self.fn) else "thread"
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not a worker kind; choose one of {KINDS}")
        check_count("workers", self.workers, allow_none=True)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "name", self.name or _function_name(self.fn))
        object.__setattr__(self, "initargs", tuple(self.initargs))


@dataclass(frozen=True)
class StageStatistics:
    """What one stage of a pipeline run did (``Pipeline.statistics()``).

    ``items_in``: items submitted to the stage's pool; ``items_out``: results
    put on the queue to the next stage (or to the caller); ``failures``: tasks
    that raised (the first stops the run); ``input_wait_seconds``: time the
    stage waited for an item to arrive; ``output_wait_seconds``: time it was
    blocked on a full queue downstream (backpressure); ``wall_seconds``: from
    the start of the run until the stage finished (or until now).
    """

    name: str
    kind: str
    workers: int
    items_in: int
    items_out: int
    failures: int
    input_wait_seconds: float
    output_wait_seconds: float
    wall_seconds: float


def _function_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def check_count(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}={value} is invalid: it must be at least 1")


public(Stage, StageStatistics)
