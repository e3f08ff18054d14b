"""The master's bookkeeping records: a worker's slot and the chunks in flight to it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ._backend import WorkerHandle
from ._jobs import Job

__all__ = ("InFlight", "Slot")


@dataclass
class InFlight:
    """A chunk sent to a worker and not yet answered."""

    seq: int
    job: Job
    start: int
    items: list[Any]
    #: items that failed before sending (their arguments did not pickle)
    unsent: dict[int, BaseException] | None = None


@dataclass
class Slot:
    """The master's record of one worker: its handle, its state, the chunks it holds.

    Invariant: ``inflight`` holds the chunks sent to this worker in the order
    sent; the worker answers in that order, so the head is the one it runs.
    """

    handle: WorkerHandle
    quota: int | None  # items this worker may still take (max_tasks_per_worker)
    ready: bool = False
    retiring: bool = False  # asked to exit; takes no more chunks
    expired: int = 0  # seq of a chunk stopped for running past its timeout
    killed_for: int = 0  # seq of the chunk we killed this worker for (timeout, cancel)
    inflight: deque[InFlight] = field(default_factory=deque)

    @property
    def allowance(self) -> int | None:
        """Items this worker may still be sent under its quota (None: no quota)."""
        if self.quota is None:
            return None
        return self.quota - sum(len(c.items) for c in self.inflight)
