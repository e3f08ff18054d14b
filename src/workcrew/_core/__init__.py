"""The engine: task model, jobs, scheduler, master loop and the worker-kind interface.

Nothing in here imports the front ends (``Pool``, ``Executor``), the worker
kinds (``workcrew._backends``) or the edges (CLI, demo); see docs/design.md.
"""
