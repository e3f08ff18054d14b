"""``pool.timeline()``: every task's span per worker, as data, a trace file or a picture.

EDGE module: it reads spans (any objects with ``kind``, ``worker_id``, ``pid``,
``function``, ``start``, ``end`` and ``ok``: :class:`workcrew.TaskSpan`) and
knows nothing of the engine.  Three renderings:

* :meth:`Timeline.write_trace`: Chrome Trace Event JSON, which Perfetto
  (ui.perfetto.dev) and ``chrome://tracing`` open: one row per worker, one
  box per task.
* :meth:`Timeline.write_html`: a self-contained HTML page drawing the same
  in SVG, for people who would rather look than install anything.
* :meth:`Timeline.text`: a few lines of characters for a terminal.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("Timeline",)

#: Colours of the functions in the HTML picture, in order of first appearance.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")
#: Height of a worker's lane in the HTML picture, pixels, and of the time axis below them.
ROW_H, AXIS_H = 22, 28
#: Backgrounds of the lanes, alternating.
LANE_FILLS = ("#eef1f5", "#ffffff")
#: The narrowest box, percent of the axis, so that a task of a microsecond stays visible.
MIN_BOX = 0.1
#: Most intervals between ticks on the time axis: at 800 pixels of window, about 70 each.
MAX_TICKS = 8
#: Units of the time axis, largest first: (power of ten of a second, symbol).
UNITS = ((0, "s"), (-3, "ms"), (-6, "\N{MICRO SIGN}s"), (-9, "ns"))
#: The page's style sheet.  The chart is a grid: lane labels take the width they need (at
#: most 40% of the window), the SVG the rest; the padding on the right holds half of the
#: last tick label, which is centred on the axis's end.
STYLE = (
    "body{font:13px sans-serif;margin:8px;overflow-wrap:anywhere}"
    ".key{margin-right:.8em}"
    ".chart{display:grid;grid-template-columns:max-content minmax(0,1fr);"
    "column-gap:12px;padding-right:3em}"
    ".lanes{max-width:40vw;font-size:12px}"
    f".lanes div{{height:{ROW_H}px;line-height:{ROW_H}px;white-space:nowrap;"
    "overflow:hidden;text-overflow:ellipsis}"
    ".plot{display:block;overflow:visible;font-size:12px}"
)


class Span(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def worker_id(self) -> int: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def function(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def ok(self) -> bool: ...


class Timeline:
    """The spans a pool recorded (``Pool(..., timeline=True)``), ordered by start.

    ``spans`` are :class:`workcrew.TaskSpan` records; times are seconds since the
    pool was created, measured by the workers on the machine's monotonic clock.
    """

    def __init__(self, spans: Sequence[Span]) -> None:
        self.spans: tuple[Any, ...] = tuple(sorted(spans, key=lambda span: span.start))

    def __len__(self) -> int:
        return len(self.spans)

    def workers(self) -> list[tuple[str, int, int | None]]:
        """(kind, worker id, pid) of every worker that ran a task, in a stable order."""
        return sorted({(s.kind, s.worker_id, s.pid) for s in self.spans}, key=lambda w: w[:2])

    # -- Chrome Trace Event Format -----------------------------------------------------

    def trace(self) -> dict[str, Any]:
        """The timeline as a Chrome Trace Event Format object (``json.dumps`` it)."""
        rows = {(kind, wid): row for row, (kind, wid, _) in enumerate(self.workers(), start=1)}
        events: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "workcrew pool"}}
        ]
        for kind, wid, pid in self.workers():
            name = f"{kind} worker {wid}" + (f" (pid {pid})" if pid is not None else "")
            events.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": 1,
                    "tid": rows[(kind, wid)],
                    "args": {"name": name},
                }
            )
        for s in self.spans:
            events.append(
                {
                    "name": s.function,
                    "cat": "task" if s.ok else "task,failed",
                    "ph": "X",
                    "ts": round(s.start * 1e6, 3),
                    "dur": round((s.end - s.start) * 1e6, 3),
                    "pid": 1,
                    "tid": rows[(s.kind, s.worker_id)],
                    "args": {"ok": s.ok},
                }
            )
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def write_trace(self, path: str | Path) -> Path:
        """Write :meth:`trace` as JSON to ``path``; open it in ui.perfetto.dev."""
        import json
        from pathlib import Path

        path = Path(path)
        path.write_text(json.dumps(self.trace()))
        return path

    # -- pictures ------------------------------------------------------------------------

    def write_html(self, path: str | Path, title: str = "workcrew timeline") -> Path:
        """A self-contained HTML page with the timeline drawn in SVG (no script, no network)."""
        from pathlib import Path

        path = Path(path)
        path.write_text(self.html(title), encoding="utf-8")
        return path

    def html(self, title: str = "workcrew timeline") -> str:
        """The page :meth:`write_html` writes.

        One lane per worker: its label in an HTML column, its tasks as boxes in
        one SVG that takes the rest of the window's width.  Everything horizontal
        in the SVG is a percentage of the axis (0 to a round time just past the
        last task), so boxes, tick lines and tick labels stay where they belong at
        any width and the text keeps its size.  Everything vertical is in pixels,
        ``ROW_H`` per lane, in both columns, so a lane's label sits on its lane.
        """
        workers = self.workers()
        end = max((s.end for s in self.spans), default=0.0)
        colours: dict[str, str] = {}
        for s in self.spans:
            colours.setdefault(s.function, PALETTE[len(colours) % len(PALETTE)])
        names = [
            html.escape(f"{kind} worker {wid}" + (f" (pid {pid})" if pid is not None else ""))
            for kind, wid, pid in workers
        ]
        lanes = "".join(f'<div title="{name}"><span>{name}</span></div>' for name in names)
        legend = " ".join(
            f'<span class="key"><span style="color:{c}">&#9632;</span>&#160;{html.escape(f)}</span>'
            for f, c in colours.items()
        )
        failed = sum(not s.ok for s in self.spans)
        summary = (
            f"{len(self.spans)} tasks on {len(workers)} workers over {_duration(end)}; "
            f"{failed} failed (outlined in red). Hover a box for its times."
        )
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h2>{html.escape(title)}</h2><p>{summary}</p><p>{legend}</p>"
            f"<div class='chart'><div class='lanes'>{lanes}</div>{self._plot(colours)}</div>"
            "</body></html>\n"
        )

    def _plot(self, colours: dict[str, str]) -> str:
        """The SVG of :meth:`html`: lanes, ticks, axis and a box per task, ``ROW_H`` a lane."""
        workers = self.workers()
        domain, labels, at = _axis(max((s.end for s in self.spans), default=0.0))
        rows = {(kind, wid): i for i, (kind, wid, _) in enumerate(workers)}
        lanes_h = ROW_H * len(workers)
        svg = [
            f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="100%" '
            f'height="{lanes_h + AXIS_H}" role="img" aria-label="tasks per worker over time">'
        ]
        for i in range(len(workers)):
            y = i * ROW_H + ROW_H / 2
            svg.append(
                f'<line class="lane" x1="0" x2="100%" y1="{y}" y2="{y}" stroke-width="{ROW_H}" '
                f'stroke="{LANE_FILLS[i % 2]}"/>'
            )
        n = len(labels) - 1
        for k, label in enumerate(labels):
            x = f"{100 * k / n:.4f}%"
            svg.append(
                f'<line class="tick" x1="{x}" x2="{x}" y1="0" y2="{lanes_h + 5}" stroke="#ccc"/>'
                f'<text class="tick-label" x="{x}" y="{lanes_h + 19}" text-anchor="middle">'
                f"{label}</text>"
            )
        svg.append(
            f'<line x1="0" x2="100%" y1="{lanes_h + 0.5}" y2="{lanes_h + 0.5}" stroke="#888"/>'
        )
        for s in self.spans:
            x = 100 * s.start / domain
            w = max(100 * (s.end - s.start) / domain, MIN_BOX)
            y = rows[(s.kind, s.worker_id)] * ROW_H + 3
            stroke = ' stroke="#d00" stroke-width="2"' if not s.ok else ""
            tip = f"{s.function}: ran {_duration(s.end - s.start)}, {at(s.start)} to {at(s.end)}"
            tip += "" if s.ok else " (failed)"
            svg.append(
                f'<rect x="{x:.4f}%" y="{y}" width="{w:.4f}%" height="{ROW_H - 6}" '
                f'fill="{colours[s.function]}"{stroke} '
                f'data-start="{s.start!r}" data-end="{s.end!r}">'
                f"<title>{html.escape(tip)}</title></rect>"
            )
        svg.append("</svg>")
        return "".join(svg)

    def text(self, width: int = 60) -> str:
        """One line per worker: ``#`` where it ran a task, ``x`` a failed one, ``.`` idle."""
        end = max((s.end for s in self.spans), default=0.0) or 1.0
        lines = []
        for kind, wid, pid in self.workers():
            cells = ["."] * width
            for s in self.spans:
                if (s.kind, s.worker_id) != (kind, wid):
                    continue
                first = min(width - 1, int(s.start / end * width))
                last = min(width - 1, max(first, int(s.end / end * width - 1e-9)))
                for k in range(first, last + 1):
                    if cells[k] != "x":
                        cells[k] = "#" if s.ok else "x"
            label = f"{kind} worker {wid}" + (f" (pid {pid})" if pid is not None else "")
            lines.append(f"{label:<28} |{''.join(cells)}|")
        lines.append(f"{'':<28}  0 s{'':>{width - 8}}{end:.2f} s")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<workcrew.Timeline {len(self.spans)} tasks on {len(self.workers())} workers>"


def _axis(end: float) -> tuple[float, list[str], Callable[[float], str]]:
    """Round ticks for a time axis from 0 to at least ``end`` seconds.

    Returns the axis's end (seconds), the tick labels, and a function writing a
    time in the labels' unit with two more decimals (for the boxes' tooltips).

    The step between ticks is 1, 2 or 5 times a power of ten, the smallest that
    covers ``end`` in at most ``MAX_TICKS`` intervals (so at least 4); the axis
    ends on the first tick at or past ``end``, and label ``k`` of ``n + 1`` sits
    at ``k / n`` of the axis.  Labels are exact decimals (computed with
    :mod:`decimal`, so no ``0.30000000000000004``) in the largest unit the axis
    reaches (s, ms, µs, ns), all with the same number of decimals.
    """
    import math
    from decimal import Decimal

    if not end > 0 or math.isinf(end):
        end = 1.0
    power = math.floor(math.log10(end / MAX_TICKS))
    for mantissa, exponent in ((1, power), (2, power), (5, power), (1, power + 1)):
        intervals = max(1, math.ceil(end / (mantissa * 10.0**exponent) * (1 - 1e-9)))
        if intervals <= MAX_TICKS:
            break
    last = Decimal(intervals * mantissa).scaleb(exponent)
    unit, symbol = next(((u, sym) for u, sym in UNITS if last >= Decimal(1).scaleb(u)), UNITS[-1])
    places = max(0, unit - exponent)
    labels = [
        f"{Decimal(k * mantissa).scaleb(exponent - unit).quantize(Decimal(1).scaleb(-places)):f}"
        f" {symbol}"
        for k in range(intervals + 1)
    ]

    def at(seconds: float) -> str:
        return f"{seconds / 10.0**unit:.{places + 2}f} {symbol}"

    return float(last), labels, at


def _duration(seconds: float) -> str:
    """``seconds`` to three significant digits in a unit that fits: 123 s, 66.4 ms, 2.50 µs."""
    import math

    for unit, symbol in UNITS:
        if seconds >= 10.0**unit:
            value = seconds / 10.0**unit
            return f"{value:.{max(0, 2 - math.floor(math.log10(value)))}f} {symbol}"
    return f"{seconds:.3g} s"


# Named by the public path, ``workcrew.<name>``, as _core/_public.py's public() does
# for the other layers (a display imports nothing of the engine).
Timeline.__module__ = "workcrew"
