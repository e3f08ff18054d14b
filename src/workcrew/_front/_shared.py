"""What the front ends (Pool, Executor, Pipeline) share: tallies, timelines, option docs."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from concurrent.futures import Future

from .._core._engine_api import PoolEngine
from .._core._jobs import Tally
from .._core._options import OPTIONS, PoolOptions
from .._display._progress import check_progress

TYPE_CHECKING = False  # typing's names for checkers; stand-ins at run time (see _core._typing)
if TYPE_CHECKING:  # the timeline page's code loads when a timeline is asked for
    from typing import Any, Literal, TypeVar

    from .._display._dashboard import BoardEntry
    from .._display._timeline import Timeline
else:
    from .._core._typing import TypeVar

__all__ = (
    "board_of",
    "board_url",
    "close_board",
    "documented_options",
    "open_board",
    "show_map",
    "tally_for",
    "timeline_of",
)

_Front = TypeVar("_Front", bound=type)


def timeline_of(engine: PoolEngine, options: PoolOptions, front: str) -> Timeline:
    """The recorded spans of a pool or executor; ``ValueError`` if it records none."""
    if not options.timeline:
        raise ValueError(
            f"this {front} records no timeline: create it with {front}(..., timeline=True)"
        )
    from .._display._timeline import Timeline

    return Timeline(engine.timeline())


def tally_for(progress: bool | str, board: BoardEntry | None = None) -> Tally | None:
    """A tally to count outcomes, when progress is shown or a dashboard watches (checked here).

    Every front end's ``progress=`` goes through it (Pool, Executor, Pipeline).
    """
    if progress is False:  # a dashboard shows the maps of pools that show their calls
        return Tally() if board is not None and board.show_calls else None
    check_progress(progress)
    return Tally()


def open_board(options: PoolOptions, front: str, engine: PoolEngine) -> BoardEntry | None:
    """Show the pool on this process's dashboard (``dashboard=True``; else None, no import).

    If the dashboard cannot start, the engine is terminated before the error propagates.
    """
    if not options.dashboard:
        return None
    try:
        from .._display._dashboard import attach  # loaded only by pools that ask for it

        return attach(front, options.kind, engine)
    except BaseException:
        engine.terminate()
        raise


def show_map(
    entry: BoardEntry | None, desc: str, tally: Tally | None, total: int | None, job: object
) -> None:
    """Show a map on the dashboard (if the pool has one and shows its calls).

    ``job`` is its ``Future`` (finished by a done callback) or its stream (asked, through
    a weak reference: the board must not keep results alive).
    """
    if entry is None or tally is None or not entry.show_calls:
        return
    if isinstance(job, Future):
        record = entry.add_map(desc, tally, total)
        job.add_done_callback(lambda _: record.finish())
        return
    done = weakref.WeakMethod(job.done)  # type: ignore[attr-defined]  # a RunSource

    def finished() -> bool:
        method = done()
        return method is None or bool(method())

    entry.add_map(desc, tally, total, finished)


def board_of(front: Any) -> BoardEntry | None:
    """A Pool's (or Executor's) dashboard entry, for the front ends built on them (Pipeline)."""
    entry: BoardEntry | None = front._board
    return entry


def close_board(entry: BoardEntry | None) -> None:
    """Take the pool off the dashboard (it stops with its last pool)."""
    if entry is not None:
        from .._display._dashboard import detach

        detach(entry)


def board_url(entry: BoardEntry | None) -> str | None:
    """The dashboard's address while the pool is on it."""
    board = None if entry is None else entry.board
    return None if board is None else board.url


def documented_options(front: Literal["pool", "executor"]) -> Callable[[_Front], _Front]:
    """A class decorator appending the front end's keyword options to its docstring.

    The list comes from ``OPTIONS`` (``_core/_options.py``), where each option is
    declared once, so a front end's docstring names every option it takes, with
    its default, and cannot drift from the signature.
    """

    def decorate(cls: _Front) -> _Front:
        lines = [(cls.__doc__ or "").rstrip(), "", "    Keyword options:", ""]
        for option in OPTIONS:
            keyword = getattr(option, front)
            if keyword is not None:
                lines.append(f"    * ``{keyword}`` (default ``{option.default!r}``): {option.doc}")
        cls.__doc__ = "\n".join(lines) + "\n"
        return cls

    return decorate
