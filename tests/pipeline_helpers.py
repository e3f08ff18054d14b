"""Stage functions for tests/test_pipeline.py: module level, so process workers can import them."""

from __future__ import annotations

import asyncio

#: The item :func:`fail_at_bad` refuses.
BAD = 13


class StageBoom(Exception):
    """A stage's own error (picklable: it keeps its only argument)."""


def add_one(x: int) -> int:
    return x + 1


def square(x: int) -> int:
    return x * x


def fail_at_bad(x: int) -> int:
    if x == BAD:
        raise StageBoom(f"bad item {x}")
    return x


async def double_async(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x
