"""The front ends: ``Pool``, ``Executor`` and ``Pipeline``, over the engine in ``_core``."""
