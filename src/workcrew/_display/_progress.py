"""Progress displays for mapping calls: ``pool.map(fn, items, progress=True)``.

EDGE module: it knows nothing of the engine.  A front end hands it a *tally*
(any object with ``done`` and ``failed`` counts, updated by whoever delivers
outcomes) and the number of tasks if known; a display thread of its own reads
the counts at a fixed cadence and draws them.  So the pool's master only adds
two integers per run of outcomes and never waits on a terminal.

Choices (``progress=``):

* ``True``: a tqdm bar (count, rate, ETA, failures) when stderr is a terminal
  or in a notebook (``tqdm.auto``); otherwise plain lines, as below.
* ``"bar"``: the tqdm bar, wherever stderr goes.
* ``"plain"``: one line on stderr every few seconds and a last one at the end,
  suited to logs and CI (no carriage returns).
* ``False``: nothing.

tqdm rather than rich: it is small, pure Python, draws in notebooks, and is
what most of this library's peers (joblib's users, mpire) already use.
"""

from __future__ import annotations

import sys
import threading
import time

TYPE_CHECKING = False  # no typing at run time: it costs `from workcrew import Pool` ~2 ms
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Counts(Protocol):
        """What a display reads: the tally of a map (by duck typing)."""

        done: int
        failed: int


__all__ = ("Display", "open_display")

#: Seconds between two refreshes of a bar, and between two plain lines.
BAR_EVERY = 0.1
PLAIN_EVERY = 5.0
CHOICES = (True, False, "bar", "plain")


def check_progress(progress: object) -> None:
    """``ValueError`` naming the accepted values for anything else."""
    if not any(progress is c or (isinstance(c, str) and progress == c) for c in CHOICES):
        raise ValueError(
            f"progress={progress!r} is invalid: use True (a bar on a terminal, plain lines "
            "otherwise), 'bar', 'plain' or False"
        )


def open_display(
    progress: bool | str, tally: Counts, total: int | None, desc: str
) -> Display | None:
    """A started display for ``progress`` (None for ``False``)."""
    check_progress(progress)
    if progress is False:
        return None
    mode = progress if isinstance(progress, str) else ("bar" if _interactive() else "plain")
    display = Display(mode, tally, total, desc)
    display.start()
    return display


def _interactive() -> bool:
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class Display:
    """Draws a tally until :meth:`close`; its own daemon thread does all the drawing."""

    def __init__(self, mode: str, tally: Counts, total: int | None, desc: str) -> None:
        self.mode, self.tally, self.total, self.desc = mode, tally, total, desc
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workcrew-progress", daemon=True)
        self._started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Draw the final counts and stop; never blocks (callbacks of the master call it)."""
        self._closed.set()

    def join(self) -> None:
        """Wait until the final counts are drawn (the caller's thread, after a map)."""
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        if self.mode == "bar":
            self._run_bar()
        else:
            self._run_plain()

    def _run_bar(self) -> None:
        from tqdm.auto import tqdm

        class Bar(tqdm):  # type: ignore[type-arg]  # tqdm's stubs make it generic
            # tqdm's monitor thread re-draws stalled bars; ours are redrawn by
            # this thread, and a global thread would outlive the pool.
            monitor_interval = 0

        bar: Any = Bar(total=self.total, desc=self.desc, unit="task", file=sys.stderr, smoothing=0)
        shown = failed = 0
        try:
            while True:
                closing = self._closed.wait(BAR_EVERY)
                done, now_failed = self.tally.done, self.tally.failed
                if now_failed != failed:
                    failed = now_failed
                    bar.set_postfix(failed=failed, refresh=False)
                if done != shown:
                    bar.update(done - shown)
                    shown = done
                if closing:
                    return
        finally:
            bar.close()

    def _run_plain(self) -> None:
        while not self._closed.wait(PLAIN_EVERY):
            self._line()
        self._line()

    def _line(self) -> None:
        done, failed = self.tally.done, self.tally.failed
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = done / elapsed
        parts = [f"{done:,}" + (f"/{self.total:,}" if self.total is not None else "") + " tasks"]
        if self.total:
            parts[0] += f" ({100 * done // self.total}%)"
        parts.append(f"{failed:,} failed")
        parts.append(f"{rate:,.1f}/s")
        if self.total is not None and rate > 0 and done < self.total:
            parts.append(f"ETA {_clock((self.total - done) / rate)}")
        parts.append(f"elapsed {_clock(elapsed)}")
        print(f"{self.desc}: " + ", ".join(parts), file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
