"""What a front end may use of an engine: the :class:`PoolEngine` protocol.

``Pool`` and ``Executor`` hold a ``PoolEngine`` and nothing more specific, so
they never ask which engine they have.  Two engines satisfy it (mypy checks
both where ``open_engine`` returns them):

* :class:`~workcrew._core._engine.Engine`: one kind's workers behind one master;
* :class:`~workcrew._core._auto.AutoEngine`: ``kind="auto"``, one ``Engine``
  per kind, each function routed to one of them.

Where the two differ (routing, starting workers ahead), each engine says what
the operation means for it; a front end calls the method either way.

Every method may be called from any thread, many at once; submissions capture
the caller's context variables in the calling thread (``context=None``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from concurrent.futures import Future

from ._jobs import RunSource, Tally
from ._options import TaskPolicy

TYPE_CHECKING = False  # typing's names for checkers; stand-ins at run time (see _typing)
if TYPE_CHECKING:  # loaded with the engine, not with the front end's import
    from typing import Any, Protocol

    from ._auto_policy import KindChoice
    from ._stats import PoolStatistics, TaskSpan
else:
    from ._typing import Protocol

__all__ = ("PoolEngine",)


class PoolEngine(Protocol):
    """The engine interface of the front ends (see the module docstring)."""

    # -- submission --------------------------------------------------------------------

    def submit_call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: TaskPolicy | None = None,
        context: contextvars.Context | None = None,
    ) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` once; its future resolves with the outcome.

        ``policy`` (timeout, retries) defaults to the pool's; ``context`` to a
        copy of the caller's context variables.  PoolClosedError once closed.
        """

    def submit_list(
        self,
        fn: Callable[..., Any],
        mode: int,
        items: list[Any],
        chunksize: int | None,
        policy: TaskPolicy | None = None,
        context: contextvars.Context | None = None,
        tally: Tally | None = None,
    ) -> Future[list[Any]]:
        """Run ``fn`` on every item (``mode``: MAP or STAR); one future of all results, in order.

        The first failure fails the future; ``tally`` counts outcomes as they
        arrive (progress displays read it).
        """

    def stream(
        self,
        fn: Callable[..., Any],
        mode: int,
        iterable: Iterable[Any],
        chunksize: int | None,
        *,
        ordered: bool,
        policy: TaskPolicy | None = None,
        context: contextvars.Context | None = None,
        tally: Tally | None = None,
    ) -> RunSource:
        """Run ``fn`` on items pulled lazily from ``iterable``; read the outcomes from the source.

        Input is pulled only in the consumer's thread (``feed``, ``next_run``).
        """

    def start_all(self) -> None:
        """Start the workers now rather than on demand (``Pool`` with an ``initializer``).

        An engine whose workers' kind is not known yet starts none: it starts
        them when a function is routed to them.
        """

    # -- routing (kind="auto") ---------------------------------------------------------

    def set_kind(self, fn: Callable[..., Any], kind: str) -> None:
        """Route ``fn`` to ``kind`` from now on; ValueError where functions are not routed."""

    def kind_choices(self) -> list[KindChoice]:
        """Every routing decision so far, in the order functions were first seen ([] if none)."""

    # -- observation -------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """A snapshot of the workers and tasks so far (any thread, also after join)."""

    def timeline(self) -> tuple[TaskSpan, ...]:
        """Every task's span so far (recorded with the pool's ``timeline`` option)."""

    def live(self) -> list[tuple[str, dict[str, Any]]]:
        """The live view a dashboard shows, per worker kind (``dashboard=True``; else empty)."""

    # -- shutdown ----------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """True until close, terminate or shutdown."""

    def close(self) -> None:
        """Accept no new work; work accepted before still runs, then workers exit."""

    def cancel_pending(self) -> None:
        """Cancel every task that has not started (``shutdown(cancel_futures=True)``)."""

    def terminate(self) -> None:
        """Fail pending work with TaskCancelled and stop every worker now."""

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every worker has ended; True if they have within ``timeout``."""
