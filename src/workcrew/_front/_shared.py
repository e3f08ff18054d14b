"""What the front ends (Pool, Executor, Pipeline) share: tallies, timelines, option docs."""

from __future__ import annotations

from collections.abc import Callable

from .._core._engine_api import PoolEngine
from .._core._jobs import Tally
from .._core._options import OPTIONS, PoolOptions
from .._display._progress import check_progress

TYPE_CHECKING = False  # typing's names for checkers; stand-ins at run time (see _core._typing)
if TYPE_CHECKING:  # the timeline page's code loads when a timeline is asked for
    from typing import Literal, TypeVar

    from .._display._timeline import Timeline
else:
    from .._core._typing import TypeVar

__all__ = ("documented_options", "tally_for", "timeline_of")

_Front = TypeVar("_Front", bound=type)


def timeline_of(engine: PoolEngine, options: PoolOptions, front: str) -> Timeline:
    """The recorded spans of a pool or executor; ``ValueError`` if it records none."""
    if not options.timeline:
        raise ValueError(
            f"this {front} records no timeline: create it with {front}(..., timeline=True)"
        )
    from .._display._timeline import Timeline

    return Timeline(engine.timeline())


def tally_for(progress: bool | str) -> Tally | None:
    """A tally to count outcomes, only when progress is shown (checked here, at the call).

    Every front end's ``progress=`` goes through it (Pool, Executor, Pipeline).
    """
    if progress is False:
        return None
    check_progress(progress)
    return Tally()


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
