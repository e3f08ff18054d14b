"""The master's event loop alone (``_core/_loop.py``): the order it runs what is ready in.

One thread, no master: the test plays the other threads' part before calling
``run_once`` itself, so each ordering is set up exactly, not raced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from workcrew._core._loop import EventLoop


@pytest.fixture
def loop() -> Iterator[EventLoop]:
    loop = EventLoop()
    yield loop
    loop.close()


@pytest.fixture
def readable() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def watch(
    loop: EventLoop,
    readable: tuple[int, int],
    order: list[str],
    after: Callable[[], object] = lambda: None,
) -> int:
    """Read ``readable`` on ``loop``, noting each byte in ``order`` (then ``after()``).

    Returns the end to write an event to.
    """
    r, w = readable

    def reader() -> None:
        order.append(os.read(r, 1).decode())
        after()

    loop.add_reader(r, reader)
    return w


def test_a_post_made_before_an_event_runs_before_its_reader(
    loop: EventLoop, readable: tuple[int, int]
) -> None:
    # shutdown(cancel_futures=True) is posted, then the running task's result
    # arrives: the cancel must run first, or the result's handler hands the
    # next (to-be-cancelled) task out.
    order: list[str] = []
    w = watch(loop, readable, order)
    loop.call_soon_threadsafe(lambda: order.append("posted"))
    os.write(w, b"e")
    loop.run_once()
    assert order == ["posted", "e"]


def test_a_post_made_by_a_reader_runs_in_the_same_iteration(
    loop: EventLoop, readable: tuple[int, int]
) -> None:
    order: list[str] = []

    def post() -> None:
        loop.call_soon_threadsafe(lambda: order.append("from reader"))

    w = watch(loop, readable, order, post)
    os.write(w, b"e")
    loop.run_once()
    assert order == ["e", "from reader"]


def test_results_that_arrived_run_before_timers_due_now(
    loop: EventLoop, readable: tuple[int, int]
) -> None:
    order: list[str] = []
    w = watch(loop, readable, order)
    loop.call_later(0.0, lambda: order.append("timer"))
    os.write(w, b"e")
    loop.run_once()
    assert order == ["e", "timer"]
