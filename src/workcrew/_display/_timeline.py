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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("Timeline",)

#: Colours of the functions in the HTML picture, in order of first appearance.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")


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
        path.write_text(self.html(title))
        return path

    def html(self, title: str = "workcrew timeline") -> str:
        """The page :meth:`write_html` writes."""
        workers = self.workers()
        label_w, row_h, width = 230, 22, 1000
        end = max((s.end for s in self.spans), default=0.0) or 1.0
        colours: dict[str, str] = {}
        for s in self.spans:
            colours.setdefault(s.function, PALETTE[len(colours) % len(PALETTE)])
        rows = {(kind, wid): i for i, (kind, wid, _) in enumerate(workers)}
        height = row_h * len(workers) + 40
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 20}" '
            f'height="{height}" font-family="sans-serif" font-size="12">'
        ]
        for (kind, wid, pid), i in zip(workers, range(len(workers))):
            name = f"{kind} worker {wid}" + (f" (pid {pid})" if pid is not None else "")
            parts.append(f'<text x="4" y="{i * row_h + 15}">{html.escape(name)}</text>')
        scale = width / end
        for s in self.spans:
            x = label_w + s.start * scale
            w = max((s.end - s.start) * scale, 0.5)
            y = rows[(s.kind, s.worker_id)] * row_h + 3
            stroke = ' stroke="#d00" stroke-width="2"' if not s.ok else ""
            tip = f"{s.function}: {s.start * 1e3:.2f} ms to {s.end * 1e3:.2f} ms"
            tip += "" if s.ok else " (failed)"
            parts.append(
                f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{row_h - 6}" '
                f'fill="{colours[s.function]}"{stroke}><title>{html.escape(tip)}</title></rect>'
            )
        axis_y = row_h * len(workers) + 20
        for k in range(11):
            x = label_w + k * width / 10
            parts.append(
                f'<text x="{x:.0f}" y="{axis_y}" text-anchor="middle">{end * k / 10:.3g} s</text>'
            )
        parts.append("</svg>")
        legend = " ".join(
            f'<span style="color:{c}">&#9632;</span> {html.escape(f)}' for f, c in colours.items()
        )
        failed = sum(not s.ok for s in self.spans)
        summary = (
            f"{len(self.spans)} tasks on {len(workers)} workers over {end:.3f} s; "
            f"{failed} failed (outlined in red). Hover a box for its times."
        )
        return (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body style='font-family:sans-serif'>"
            f"<h2>{html.escape(title)}</h2><p>{summary}</p><p>{legend}</p>"
            + "".join(parts)
            + "</body></html>\n"
        )

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


# Named by the public path, ``workcrew.<name>``, as _core/_public.py's public() does
# for the other layers (a display imports nothing of the engine).
Timeline.__module__ = "workcrew"
