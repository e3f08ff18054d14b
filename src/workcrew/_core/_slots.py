"""The master's bookkeeping records: a worker's slot and the chunks in flight to it."""

from __future__ import annotations

from collections import deque

TYPE_CHECKING = False  # no typing at run time (see _backend.Chunk)
if TYPE_CHECKING:
    from typing import Any

    from ._backend import WorkerHandle
    from ._jobs import Job

__all__ = ("InFlight", "Slot")


class InFlight:
    """A chunk sent to a worker and not yet answered."""

    __slots__ = ("items", "job", "seq", "start", "unsent")

    def __init__(
        self,
        seq: int,
        job: Job,
        start: int,
        items: list[Any],
        unsent: dict[int, BaseException] | None = None,
    ) -> None:
        self.seq = seq
        self.job = job
        self.start = start
        self.items = items
        #: items that failed before sending (their arguments did not pickle)
        self.unsent = unsent


class Slot:
    """The master's record of one worker: its handle, its state, the chunks it holds.

    Invariant: ``inflight`` holds the chunks sent to this worker in the order
    sent; the worker answers in that order, so the head is the one it runs.
    """

    __slots__ = ("expired", "handle", "inflight", "killed_for", "quota", "ready", "retiring")

    def __init__(self, handle: WorkerHandle, quota: int | None) -> None:
        self.handle = handle
        self.quota = quota  # items this worker may still take (max_tasks_per_worker)
        self.ready = False
        self.retiring = False  # asked to exit; takes no more chunks
        self.expired = 0  # seq of a chunk stopped for running past its timeout
        self.killed_for = 0  # seq of the chunk we killed this worker for (timeout, cancel)
        self.inflight: deque[InFlight] = deque()

    @property
    def allowance(self) -> int | None:
        """Items this worker may still be sent under its quota (None: no quota)."""
        if self.quota is None:
            return None
        return self.quota - sum(len(c.items) for c in self.inflight)
