"""The pickling rule every transport shares: the standard pickle, then cloudpickle."""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

__all__ = ("dumps",)


def dumps(obj: Any) -> bytes:
    """pickle (protocol 5), falling back to cloudpickle for what pickle cannot name.

    The standard pickle first, because it is the fastest; cloudpickle only when
    it refuses (lambdas, closures, functions defined in ``__main__`` under
    spawn), and cloudpickle raises the real error if neither can.
    """
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:  # noqa: BLE001 - any refusal: let cloudpickle try, it raises the real error
        return bytes(cloudpickle.dumps(obj, protocol=5))
