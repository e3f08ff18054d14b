"""Worker kinds, one module each; looked up by name and imported on first use.

A kind's module is ``workcrew._backends._<name>`` and ends with
``backend_class = <WorkerBackend subclass>``.  Importing lazily keeps the
start-up of a thread pool free of process machinery (and, later, of optional
dependencies such as Dask).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # a worker imports this package: no typing at run time
if TYPE_CHECKING:  # a worker process imports a kind's module without the engine
    from .._core._backend import WorkerBackend
    from .._core._engine_api import PoolEngine
    from .._core._options import PoolOptions

__all__ = ("get_backend", "open_engine")

_loaded: dict[str, type[WorkerBackend]] = {}


def get_backend(kind: str) -> type[WorkerBackend]:
    """The backend class for worker kind ``kind`` (already validated by PoolOptions)."""
    backend = _loaded.get(kind)
    if backend is None:
        module = importlib.import_module(f"{__name__}._{kind}")
        backend = module.backend_class
        _loaded[kind] = backend
    return backend


def open_engine(options: PoolOptions, *, drain_at_exit: bool) -> PoolEngine:
    """The engine behind a front end: one kind's, or kind="auto"'s router over all kinds."""
    if options.kind in ("process", "auto") and options.start_method == "forkserver":
        # The fork server boots (a fresh interpreter) while this thread loads
        # the engine: on two cores the pool's first worker is ready ~15 ms sooner.
        from ._forkserver import start_server

        start_server()
    if options.kind == "auto":
        from .._core._auto import AutoEngine  # only pools of kind "auto" load the router

        return AutoEngine(options, get_backend, drain_at_exit=drain_at_exit)
    from .._core._engine import Engine

    return Engine(options, get_backend(options.kind), drain_at_exit=drain_at_exit)
