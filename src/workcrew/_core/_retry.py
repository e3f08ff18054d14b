"""Retry bookkeeping: which failed items run again, and the record of their attempts.

Pure bookkeeping for the master thread; the master does the re-queueing.
"""

from __future__ import annotations

from ._exceptions import SerializationError
from ._execute import add_note
from ._jobs import Job

__all__ = ("Attempts",)


class Attempts:
    """Earlier failures of every item that is being retried, keyed by (job, index)."""

    def __init__(self) -> None:
        # Keyed by the job itself (not its id): a finished job's address may
        # be reused by a new one, which must not inherit its history.
        self._failures: dict[tuple[Job, int], list[BaseException]] = {}
        #: items waiting for their backoff to pass, by job (aborted with it)
        self.waiting: dict[Job, int] = {}

    def retry_delay(self, job: Job, index: int, exc: BaseException) -> float | None:
        """Seconds to wait before running the item again, or None if it must fail now.

        A SerializationError is never retried: the same object fails the same way.
        """
        policy = job.policy
        if (
            not policy.retries
            or not isinstance(exc, policy.retry_on)
            or isinstance(exc, SerializationError)
            or job.done()
        ):
            return None
        earlier = self._failures.setdefault((job, index), [])
        if len(earlier) >= policy.retries:
            return None
        earlier.append(exc)
        return policy.delay(len(earlier))

    @property
    def pending(self) -> int:
        """How many items wait for a retry."""
        return sum(self.waiting.values())

    def wait(self, job: Job) -> None:
        """An item of ``job`` waits for its retry."""
        self.waiting[job] = self.waiting.get(job, 0) + 1

    def release(self, job: Job) -> None:
        """An item of ``job`` stopped waiting (re-queued, or its job ended)."""
        left = self.waiting.get(job, 0) - 1
        if left > 0:
            self.waiting[job] = left
        else:
            self.waiting.pop(job, None)

    def forget(self, job: Job) -> None:
        """Drop everything about an aborted job."""
        self.waiting.pop(job, None)
        for key in [k for k in self._failures if k[0] is job]:
            del self._failures[key]

    def finish(self, job: Job, index: int, exc: BaseException | None) -> None:
        """The item is settled (failed for good, or succeeded): attach its history to the error."""
        earlier = self._failures.pop((job, index), None)
        if not earlier or exc is None:
            return
        for number, failure in enumerate(earlier, 1):
            add_note(exc, f"workcrew: attempt {number} of {len(earlier) + 1} failed: {failure!r}")
        add_note(exc, f"workcrew: attempt {len(earlier) + 1} of {len(earlier) + 1} failed (last)")
        try:
            exc.attempts = earlier  # type: ignore[attr-defined]  # documented in docs/failures.md
        except AttributeError:  # an exception type with __slots__
            pass
