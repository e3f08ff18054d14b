"""Worker kinds, one module each; looked up by name and imported on first use.

A kind's module is ``workcrew._backends._<name>`` and ends with
``backend_class = <WorkerBackend subclass>``.  Importing lazily keeps the
start-up of a thread pool free of process machinery (and, later, of optional
dependencies such as Dask).
"""

from __future__ import annotations

import importlib

from .._core._backend import WorkerBackend

__all__ = ("get_backend",)

_loaded: dict[str, type[WorkerBackend]] = {}


def get_backend(kind: str) -> type[WorkerBackend]:
    """The backend class for worker kind ``kind`` (already validated by PoolOptions)."""
    backend = _loaded.get(kind)
    if backend is None:
        module = importlib.import_module(f"{__name__}._{kind}")
        backend = module.backend_class
        _loaded[kind] = backend
    return backend
