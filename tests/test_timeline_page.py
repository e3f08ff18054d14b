"""The HTML timeline page (``Timeline.write_html``) as a person sees it, measured in Chromium.

Every check reads positions the browser laid out (``getBoundingClientRect``)
or pixels it painted (a screenshot): tick labels centred on their tick lines,
each box starting and ending at its times on the axis, lane labels on their
lanes, round tick values, and a page as wide as the window at 1280x900 and
800x600.
"""

from __future__ import annotations

import itertools
import re
import struct
import zlib
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import workcrew
from browser import browser_page
from helpers import square

SIZES = [pytest.param((1280, 900), id="1280x900"), pytest.param((800, 600), id="800x600")]
#: Power of ten of each unit a tick label may use.
UNITS = {"s": 0, "ms": -3, "\N{MICRO SIGN}s": -6, "ns": -9}
#: How far, in CSS pixels, a label's centre may sit from its tick, a box's edge from its time.
SLACK = 2.0

#: What the page shows, as laid out: tick lines and labels, lane bands and labels, boxes.
MEASURE = """() => {
  const box = (e) => e.getBoundingClientRect();
  const ticks = [...document.querySelectorAll('line.tick')].map((line) => box(line).left);
  const tickLabels = [...document.querySelectorAll('text.tick-label')].map((t) => {
    const r = box(t);
    return {text: t.textContent, centre: (r.left + r.right) / 2, left: r.left, right: r.right,
            width: r.width};
  });
  const lanes = [...document.querySelectorAll('line.lane')].map((line) => {
    const half = Number(line.getAttribute('stroke-width')) / 2;
    return {top: box(line).top - half, bottom: box(line).top + half};
  });
  const laneLabels = [...document.querySelectorAll('.lanes span')].map((s) => {
    const r = box(s);
    return {text: s.textContent, centre: (r.top + r.bottom) / 2, height: r.height};
  });
  const boxes = [...document.querySelectorAll('svg rect')].map((rect) => {
    const r = box(rect);
    return {start: Number(rect.dataset.start), end: Number(rect.dataset.end),
            left: r.left, right: r.right, middle: (r.top + r.bottom) / 2,
            fill: rect.getAttribute('fill')};
  });
  return {ticks, tickLabels, lanes, laneLabels, boxes,
          scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth};
}"""


def _span(worker: int, function: str, start: float, end: float, ok: bool = True) -> Any:
    return workcrew.TaskSpan(
        kind="process", worker_id=worker, pid=4000 + worker, function=function,
        start=start, end=end, ok=ok,
    )  # fmt: skip


def wide_timeline() -> workcrew.Timeline:
    """24 workers over 123.4 s, the first task from 0 s to 20 s, one failed.

    The first task's function has a name far wider than the window (no spaces
    to break it at), for the legend to wrap.
    """
    spans = [_span(1, "jobs.load_" + "every_input_file_" * 12, 0.0, 20.0)]
    for w in range(1, 25):
        first = 20.0 + (w % 7) * 3.1
        spans.append(_span(w, "jobs.fit", first, first + 40.0 + w, ok=w != 5))
        spans.append(_span(w, "jobs.score", first + 41.0 + w, 123.4 - (w % 5) * 2.2))
    return workcrew.Timeline(spans)


def short_timeline() -> workcrew.Timeline:
    """6 workers running ten tasks of 6.64 ms back to back: 0.0664 s in all."""
    return workcrew.Timeline(
        [
            _span(w, f"jobs.step{j % 3}", j * 0.00664, (j + 1) * 0.00664)
            for w in range(1, 7)
            for j in range(10)
        ]
    )


def pool_timeline() -> workcrew.Timeline:
    """What a real pool recorded: two threads squaring 40 numbers."""
    with workcrew.Pool(2, kind="thread", timeline=True) as pool:
        assert pool.map(square, range(40), chunksize=1) == [x * x for x in range(40)]
        return pool.timeline()


def seconds(label: str) -> Decimal:
    """A tick label (``"20 s"``, ``"50 ms"``, ``"0.4 s"``) as exact seconds."""
    match = re.fullmatch(r"(\d{1,4}(?:\.\d)?) (s|ms|\N{MICRO SIGN}s|ns)", label)
    assert match, f"tick label {label!r} is not a short number and a unit"
    return Decimal(match[1]).scaleb(UNITS[match[2]])


def assert_round_ticks(labels: list[str]) -> list[Decimal]:
    """Ticks 0, step, 2 step, ... with step 1, 2 or 5 times a power of ten, in one unit."""
    assert len(labels) >= 4, labels
    assert len({label.split()[1] for label in labels}) == 1, labels
    values = [seconds(label) for label in labels]
    step = values[1] - values[0]
    assert values[0] == 0 and step > 0, labels
    assert step.normalize().as_tuple().digits in {(1,), (2,), (5,)}, labels
    assert all(b - a == step for a, b in itertools.pairwise(values)), labels
    assert all(v % step == 0 for v in values), labels
    return values


def lane_name(span: Any) -> str:
    pid = f" (pid {span.pid})" if span.pid is not None else ""
    return f"{span.kind} worker {span.worker_id}{pid}"


def check_page(page: Any, timeline: workcrew.Timeline, size: tuple[int, int]) -> dict[str, Any]:
    """Assert what a person sees of ``timeline``'s page; return the measurements."""
    seen: dict[str, Any] = page.evaluate(MEASURE)
    # The page fits the window: nothing to scroll sideways.
    assert seen["innerWidth"] == size[0]
    assert seen["scrollWidth"] <= seen["innerWidth"]
    # Tick labels: round values, each centred on its own tick line, in order left to right.
    labels, ticks = seen["tickLabels"], seen["ticks"]
    values = assert_round_ticks([label["text"] for label in labels])
    assert len(ticks) == len(labels)
    for x, label in zip(ticks, labels):
        assert abs(label["centre"] - x) <= SLACK, (label, x)
        assert label["width"] > 0
    for a, b in itertools.pairwise(labels):  # side by side, with room between them
        assert a["right"] + 8 <= b["left"], (a, b)
    # The ticks measure the boxes: a box starts (and, unless tiny, ends) where its times fall.
    x0, per_second = ticks[0], (ticks[-1] - ticks[0]) / float(values[-1])
    assert values[-1] >= Decimal(max(s.end for s in timeline.spans))
    for box in seen["boxes"]:
        assert abs(box["left"] - (x0 + box["start"] * per_second)) <= SLACK, box
        if (box["end"] - box["start"]) * per_second > 3:
            assert abs(box["right"] - (x0 + box["end"] * per_second)) <= SLACK, box
        assert box["right"] <= ticks[-1] + SLACK
    # Lane labels: one per worker, in order, each centred on its lane's band ...
    lanes, names = seen["lanes"], seen["laneLabels"]
    workers = [lane_name(s) for s in sorted(timeline.spans, key=lambda s: (s.kind, s.worker_id))]
    assert [n["text"] for n in names] == list(dict.fromkeys(workers))
    assert len(lanes) == len(names)
    for name, lane in zip(names, lanes):
        assert lane["top"] < name["centre"] < lane["bottom"], (name, lane)
        assert abs(name["centre"] - (lane["top"] + lane["bottom"]) / 2) <= SLACK, (name, lane)
        assert name["height"] < lane["bottom"] - lane["top"]
    # ... and each box sits in the band of the lane labelled with its worker.
    row = {n["text"]: i for i, n in enumerate(names)}
    expected = Counter((s.start, s.end, row[lane_name(s)]) for s in timeline.spans)
    drawn: Counter[tuple[float, float, int]] = Counter()
    for box in seen["boxes"]:
        [lane] = [i for i, b in enumerate(lanes) if b["top"] < box["middle"] < b["bottom"]]
        drawn[(box["start"], box["end"], lane)] += 1
    assert drawn == expected
    return seen


@pytest.mark.parametrize("size", SIZES)
def test_page_of_a_real_pool_lines_up_and_fits_the_window(
    size: tuple[int, int], tmp_path: Path
) -> None:
    timeline = pool_timeline()
    assert len(timeline) == 40
    path = timeline.write_html(tmp_path / "pool.html")
    with browser_page(*size) as page:
        page.goto(path.as_uri())
        seen = check_page(page, timeline, size)
    assert len(seen["laneLabels"]) == len(timeline.workers()) <= 2


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(wide_timeline, [f"{20 * k} s" for k in range(8)], id="123.4s-24-workers"),
        pytest.param(short_timeline, [f"{10 * k} ms" for k in range(8)], id="0.0664s"),
    ],
)
def test_page_of_a_long_or_short_timeline_has_round_ticks_and_fits(
    make: Any, expected: list[str], size: tuple[int, int], tmp_path: Path
) -> None:
    timeline = make()
    path = timeline.write_html(tmp_path / "timeline.html")
    with browser_page(*size) as page:
        page.goto(path.as_uri())
        seen = check_page(page, timeline, size)
    assert [label["text"] for label in seen["tickLabels"]] == expected


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        (123.4, ["0 s", "20 s", "40 s", "60 s", "80 s", "100 s", "120 s", "140 s"]),
        (0.3, ["0 ms", "50 ms", "100 ms", "150 ms", "200 ms", "250 ms", "300 ms"]),
        (1.5, ["0.0 s", "0.2 s", "0.4 s", "0.6 s", "0.8 s", "1.0 s", "1.2 s", "1.4 s", "1.6 s"]),
        (0.000731, [f"{100 * k} \N{MICRO SIGN}s" for k in range(9)]),
        (3000.0, [f"{500 * k} s" for k in range(7)]),
        (80.0, [f"{10 * k} s" for k in range(9)]),
    ],
)
def test_tick_labels_are_round_values_without_float_noise(end: float, expected: list[str]) -> None:
    page = workcrew.Timeline([_span(1, "f", end / 3, end)]).html()
    labels = re.findall(r'<text class="tick-label"[^>]*>([^<]*)</text>', page)
    assert labels == expected
    assert_round_ticks(labels)


def test_page_of_no_tasks_still_has_an_axis() -> None:
    page = workcrew.Timeline([]).html()
    labels = re.findall(r'<text class="tick-label"[^>]*>([^<]*)</text>', page)
    assert_round_ticks(labels)
    assert "0 tasks on 0 workers" in page and "<rect" not in page


# -- screenshots ------------------------------------------------------------------------------


def png_pixels(png: bytes) -> np.ndarray:
    """The (height, width, RGB) pixels of an 8-bit RGB or RGBA PNG, its chunks checked."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, data = 8, {}, bytearray()
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks[kind] = body
        data += body if kind == b"IDAT" else b""
        pos += 12 + length
    assert b"IEND" in chunks
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour, interlace) in {(8, 2, 0), (8, 6, 0)}
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(bytes(data)), np.uint8).reshape(height, width * bpp + 1)
    pixels = np.zeros((height, width * bpp), np.int64)
    prior = np.zeros(width * bpp, np.int64)
    for y in range(height):  # undo each row's filter (PNG spec, section 9)
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int64)
        if kind == 1:
            line = line.reshape(width, bpp).cumsum(axis=0).reshape(-1) % 256
        elif kind == 2:
            line = (line + prior) % 256
        elif kind in (3, 4):
            line = _average_or_paeth(kind, line, prior, bpp)
        else:
            assert kind == 0, f"row {y}: filter {kind}"
        pixels[y] = prior = line
    return pixels.reshape(height, width, bpp)[:, :, :3].astype(np.uint8)


def _average_or_paeth(kind: int, line: np.ndarray, prior: np.ndarray, bpp: int) -> np.ndarray:
    out, up = [int(b) for b in line], [int(b) for b in prior]
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        corner = up[i - bpp] if i >= bpp else 0
        if kind == 3:
            out[i] = (out[i] + (left + up[i]) // 2) % 256
        else:
            p = left + up[i] - corner
            pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
            near = left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner
            out[i] = (out[i] + near) % 256
    return np.array(out, np.int64)


@pytest.mark.parametrize("size", SIZES)
def test_screenshot_shows_every_box_in_view_in_its_colour(
    size: tuple[int, int], tmp_path: Path
) -> None:
    path = wide_timeline().write_html(tmp_path / "timeline.html")
    with browser_page(*size) as page:
        page.goto(path.as_uri())
        seen = page.evaluate(MEASURE)
        png = page.screenshot()
    (tmp_path / "timeline.png").write_bytes(png)
    pixels = png_pixels(png)
    assert pixels.shape == (size[1], size[0], 3)
    assert tuple(pixels[-1, -1]) == (255, 255, 255)  # the page's white, below the chart
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10
    painted = 0
    for box in seen["boxes"]:
        x, y = round((box["left"] + box["right"]) / 2), round(box["middle"])
        assert 0 <= x < size[0], box  # every box is in the window's width
        if y < size[1] - 1:  # in the window's height; below it is only scrolled to
            fill = tuple(int(box["fill"][k : k + 2], 16) for k in (1, 3, 5))
            assert tuple(pixels[y, x]) == fill, box
            painted += 1
    assert painted >= min(len(seen["boxes"]), 12)
