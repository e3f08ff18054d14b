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
        self._failures: dict[tuple[int, int], list[BaseException]] = {}
        self.pending = 0  # retries waiting for their backoff to pass

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
        earlier = self._failures.setdefault((id(job), index), [])
        if len(earlier) >= policy.retries:
            return None
        earlier.append(exc)
        return policy.delay(len(earlier))

    def finish(self, job: Job, index: int, exc: BaseException | None) -> None:
        """The item is settled: attach its earlier attempts to its final error."""
        earlier = self._failures.pop((id(job), index), None)
        if not earlier or exc is None:
            return
        for number, failure in enumerate(earlier, 1):
            add_note(exc, f"workcrew: attempt {number} of {len(earlier) + 1} failed: {failure!r}")
        add_note(exc, f"workcrew: attempt {len(earlier) + 1} of {len(earlier) + 1} failed (last)")
        try:
            exc.attempts = earlier  # type: ignore[attr-defined]  # documented in docs/failures.md
        except AttributeError:  # an exception type with __slots__
            pass
