"""What a Pool hands back: ``AsyncResult`` and ``IMapIterator`` (as in ``multiprocessing``).

Also their variants that draw progress while the results come (``_Shown*``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FuturesTimeout

from .._core._exceptions import TaskCancelled, TimeoutError
from .._core._jobs import ResultIterator, RunSource
from .._core._public import public
from .._display._progress import Display

TYPE_CHECKING = False  # typing's names for checkers; stand-ins at run time (see _core._typing)
if TYPE_CHECKING:
    from typing import Any, Generic, TypeVar
else:
    from .._core._typing import Generic, TypeVar

__all__ = ("AsyncResult", "IMapIterator")

T = TypeVar("T")


class AsyncResult(Generic[T]):
    """The result of ``apply_async``/``map_async``, as in ``multiprocessing``."""

    def __init__(
        self,
        future: Future[T],
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> None:
        self._future = future
        if callback is not None or error_callback is not None:
            future.add_done_callback(_callbacks(callback, error_callback))

    @property
    def future(self) -> Future[T]:
        """The underlying ``concurrent.futures.Future``."""
        return self._future

    def get(self, timeout: float | None = None) -> T:
        """The result; re-raises the task's exception; ``TimeoutError`` if not ready in time."""
        try:
            return self._future.result(timeout)
        except FuturesTimeout:
            if self._future.done():
                raise  # the task itself raised a TimeoutError
            raise TimeoutError(f"the result was not ready within {timeout} s") from None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the result is ready or ``timeout`` seconds have passed."""
        try:
            self._future.exception(timeout)
        except (FuturesTimeout, CancelledError):
            pass

    def ready(self) -> bool:
        """True once the result (or an exception) is available."""
        return self._future.done()

    def successful(self) -> bool:
        """True if the task returned normally; ``ValueError`` if not ready yet."""
        if not self._future.done():
            raise ValueError(f"{self!r} not ready")
        return not self._future.cancelled() and self._future.exception() is None


def _callbacks(
    callback: Callable[[Any], object] | None,
    error_callback: Callable[[BaseException], object] | None,
) -> Callable[[Future[Any]], None]:
    def on_done(future: Future[Any]) -> None:
        exc = future.exception() if not future.cancelled() else TaskCancelled("cancelled")
        if exc is None:
            if callback is not None:
                callback(future.result())
        elif error_callback is not None:
            error_callback(exc)

    return on_done


class IMapIterator(ResultIterator, Iterator[T]):
    """Results of ``imap``/``imap_unordered``; also has ``next(timeout)`` as in ``multiprocessing``.

    A failed item raises its exception when reached; iteration may go on after it.
    """

    def __init__(self, job: RunSource) -> None:
        super().__init__(job)
        job.feed()  # start at once, as multiprocessing does

    def __iter__(self) -> IMapIterator[T]:
        return self

    # __next__ is ResultIterator's: the hot path of imap, one call per result.

    def next(self, timeout: float | None = None) -> T:
        """The next result; ``TimeoutError`` if none arrives within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        result: T = self.next_before(deadline)
        return result

    def close(self) -> None:
        """Abandon the remaining results: unstarted items are dropped."""
        self._job.cancel()

    def __del__(self) -> None:
        self._job.cancel()


class _ShownResult(AsyncResult[T]):
    """An AsyncResult whose map draws progress; ``get`` returns after the last line is drawn."""

    def __init__(self, future: Future[T], display: Display) -> None:
        super().__init__(future)
        self._display = display

    def get(self, timeout: float | None = None) -> T:
        try:
            return super().get(timeout)
        finally:
            if self.future.done():
                self._display.join()


class _ShownIMapIterator(IMapIterator[T]):
    """imap's iterator when progress is shown: the display ends with the results."""

    def __init__(self, job: RunSource, display: Display) -> None:
        super().__init__(job)
        self._display = display

    def next_before(self, deadline: float | None = None) -> T:
        try:
            value: T = super().next_before(deadline)
            return value
        except StopIteration:
            self._display.close()
            self._display.join()
            raise

    __next__ = next_before

    def close(self) -> None:
        super().close()
        self._display.close()

    def __del__(self) -> None:
        super().__del__()
        self._display.close()


public(AsyncResult, IMapIterator)
