"""Checks of one option's value, in the standard library's words where it has some.

Shared by ``PoolOptions.build`` and the front ends (a call's own ``chunksize``).
"""

from __future__ import annotations

from ._execute import EVENT_LOOPS

__all__ = (
    "check_chunksize",
    "check_event_loop",
    "check_max_tasks",
    "check_positive_int",
    "check_workers",
)


def check_event_loop(event_loop: str) -> None:
    """ValueError for an unknown loop; ImportError naming the extra if uvloop is missing."""
    if event_loop not in EVENT_LOOPS:
        raise ValueError(f"event_loop={event_loop!r} is invalid; choose one of {EVENT_LOOPS}")
    if event_loop == "uvloop":
        try:
            import uvloop  # noqa: F401  # imported only to learn whether it is installed
        except ImportError as exc:
            raise ImportError(
                "event_loop='uvloop' needs the uvloop package: pip install 'workcrew[uvloop]' "
                "(or use event_loop='auto', which falls back to asyncio's loop)"
            ) from exc


def check_workers(workers: object) -> None:
    """The worker count, in the standard library's words (``max_workers must be ...``)."""
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(
            f"max_workers must be an int (the number of workers: Pool's processes, "
            f"Executor's max_workers), got {workers!r}"
        )
    if workers < 1:
        raise ValueError(
            f"max_workers must be greater than 0, got {workers} (the number of workers: "
            "Pool's processes, Executor's max_workers; None for the kind's default)"
        )


def check_max_tasks(max_tasks: object) -> None:
    """``maxtasksperchild``: ValueError for anything but a positive int, as multiprocessing."""
    if isinstance(max_tasks, bool) or not isinstance(max_tasks, int) or max_tasks < 1:
        raise ValueError(
            f"maxtasksperchild (max_tasks_per_child) must be a positive int or None, "
            f"got {max_tasks!r}"
        )


def check_chunksize(chunksize: int | None) -> None:
    """``None`` means adaptive; anything else must be a positive int."""
    if chunksize is not None:
        check_positive_int("chunksize", chunksize, "items per chunk, or None for adaptive")


def check_positive_int(name: str, value: object, meaning: str) -> None:
    """TypeError unless ``value`` is an int, ValueError unless it is at least 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int ({meaning}), got {value!r}")
    if value < 1:
        raise ValueError(f"{name}={value} is invalid: {meaning} must be at least 1")
