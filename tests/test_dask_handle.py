"""A Dask slot alone (``DaskHandle``): its futures' lives as ``distributed`` drives them.

A fake future stands in for Dask's, so that each turn of a life that a real
cluster shows only by chance (a result lost with its worker after its future
had called back) happens exactly when the test says.  The master's real event
loop, run by the test thread, carries the callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import TIMEOUT
from workcrew._backends._dask import DaskHandle
from workcrew._core._backend import Chunk, WorkerEvents, WorkerHandle
from workcrew._core._exceptions import WorkcrewError
from workcrew._core._execute import MAP, Outcome
from workcrew._core._loop import EventLoop


class FakeFuture:
    """What DaskHandle uses of ``distributed.Future``; calls back once, as Dask's does."""

    def __init__(self, items: list[Any]) -> None:
        self.status = "pending"
        self.items = items
        self._callback: Callable[[Any], None] | None = None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._callback = fn

    def done(self) -> bool:
        return self.status == "finished"

    def result(self) -> tuple[float, tuple[Any, ...], float]:
        assert self.done(), "result() of a future that is not done blocks the master thread"
        return 0.001, ([x * x for x in self.items], None, None), 0.0

    def cancel(self) -> None:
        self.status = "cancelled"

    def finish(self, *, call_back: bool = True) -> None:
        self.status = "finished"
        if call_back and self._callback is not None:
            callback, self._callback = self._callback, None
            callback(self)


class FakeBackend:
    """What DaskHandle asks of its DaskBackend."""

    class options:  # stands for PoolOptions
        timeline = False

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.in_flight = 0
        self.futures: list[FakeFuture] = []
        self.client = self

    def submit(self, fn: Any, blob: Any, mode: int, items: list[Any], *args: Any, **kw: Any) -> Any:
        self.futures.append(FakeFuture(items))
        return self.futures[-1]

    def function_blob(self, fn: Any) -> bytes:
        return b"fn"

    def share(self, items: list[Any]) -> list[Any]:
        return items

    def note_answer(self, run: float) -> None:
        pass


class Events(WorkerEvents):
    def __init__(self) -> None:
        self.results: list[tuple[int, list[Any]]] = []

    def on_ready(self, handle: WorkerHandle) -> None:
        pass

    def on_result(self, handle: WorkerHandle, seq: int, duration: float, outcome: Outcome) -> None:
        self.results.append((seq, list(outcome.values)))

    def on_chunk_error(
        self, handle: WorkerHandle, seq: int, error: WorkcrewError, *, ran: bool
    ) -> None:
        raise AssertionError(f"chunk {seq} failed: {error}")

    def on_init_failed(self, handle: WorkerHandle, error: BaseException) -> None:
        raise AssertionError(error)

    def on_exit(self, handle: WorkerHandle, exitcode: int | None) -> None:
        pass


@pytest.fixture
def loop() -> Iterator[EventLoop]:
    loop = EventLoop()
    yield loop
    loop.close()


def run_until(loop: EventLoop, condition: Callable[[], bool]) -> None:
    """Run the loop on this thread until ``condition``; fails after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    loop.call_later(TIMEOUT, lambda: None)  # the loop's wait ends by then at the latest
    while not condition():
        assert time.monotonic() < deadline, "the slot never answered its chunk"
        loop.run_once()


def test_a_result_lost_after_its_future_called_back_is_answered_once_computed_again(
    loop: EventLoop,
) -> None:
    backend = FakeBackend(loop)
    events = Events()
    handle = DaskHandle(backend, 0, events)  # type: ignore[arg-type]
    handle.send_chunk(0, Chunk(abs, MAP, [1, 2]))
    handle.send_chunk(1, Chunk(abs, MAP, [3]))
    first, second = backend.futures
    first.finish()  # calls back: the master will look at it...
    first.status = "lost"  # ...but its Dask worker died first, with the result
    second.finish()
    loop.run_once()  # both callbacks run: neither chunk can be answered (order kept)
    assert events.results == []
    first.finish(call_back=False)  # computed again elsewhere: Dask does not call back twice
    run_until(loop, lambda: len(events.results) == 2)
    assert events.results == [(0, [1, 4]), (1, [9])]
    assert backend.in_flight == 0


def test_a_chunk_answers_when_its_future_calls_back(loop: EventLoop) -> None:
    backend = FakeBackend(loop)
    events = Events()
    handle = DaskHandle(backend, 0, events)  # type: ignore[arg-type]
    handle.send_chunk(7, Chunk(abs, MAP, [5]))
    backend.futures[0].finish()
    run_until(loop, lambda: bool(events.results))
    assert events.results == [(7, [25])]
