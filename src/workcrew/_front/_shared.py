"""What the front ends (Pool, Executor, Pipeline) share: progress tallies and timelines."""

from __future__ import annotations

from .._core._auto import AutoEngine
from .._core._engine import Engine
from .._core._jobs import Tally
from .._core._options import PoolOptions
from .._display._progress import check_progress
from .._display._timeline import Timeline

__all__ = ("tally_for", "timeline_of")


def timeline_of(engine: Engine | AutoEngine, options: PoolOptions, front: str) -> Timeline:
    """The recorded spans of a pool or executor; ``ValueError`` if it records none."""
    if not options.timeline:
        raise ValueError(
            f"this {front} records no timeline: create it with {front}(..., timeline=True)"
        )
    return Timeline(engine.timeline())


def tally_for(progress: bool | str) -> Tally | None:
    """A tally to count outcomes, only when progress is shown (checked here, at the call).

    Every front end's ``progress=`` goes through it (Pool, Executor, Pipeline).
    """
    if progress is False:
        return None
    check_progress(progress)
    return Tally()
