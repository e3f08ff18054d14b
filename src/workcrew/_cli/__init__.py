"""The ``workcrew`` command line (an edge: it uses only the public ``workcrew`` API)."""

from ._main import main

__all__ = ("main",)
