"""Public objects name themselves by their public path, ``workcrew.<name>``."""

from __future__ import annotations

__all__ = ("public",)


def public(*objects: object) -> None:
    """Give each of ``objects`` the module ``workcrew``, where the public API exports it.

    Tracebacks, reprs and pickles then name ``workcrew.Pool``, not the private
    module that defines it; unpickling finds it through ``workcrew``'s lazy
    attributes, which load that module on first use (see ``workcrew/__init__.py``).
    Each defining module calls this on its public names as it is imported.
    """
    for obj in objects:
        obj.__module__ = "workcrew"
