"""Objects that tasks share across workers of every kind: locks, values, queues.

They live in shared memory (see ``_memory``) and pickle as references to it,
so the same object can be handed to thread, async and process workers and
used from the caller.  This package sits beside ``_core``: it imports only
``_core`` and the standard library.
"""
