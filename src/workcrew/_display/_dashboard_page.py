"""The live dashboard's web page: one HTML document, served as is.

EDGE module: :data:`PAGE` is a complete HTML5 page with its style and its
plain JavaScript inline.  It needs no internet: no script, style sheet, font
or picture is fetched from anywhere else, so it works on an air-gapped machine.

The page reads its token from its own address (``?token=...``) and every
500 ms fetches ``api/state?token=<token>`` (relative, same origin), then
redraws what changed without reloading: per pool the totals, the workers, the
maps' progress, a throughput and queue chart, a timeline of recent tasks, the
failures and the slowest tasks.  All data reaches the page through
``textContent`` and ``setAttribute``, never through HTML markup, since task
reprs and tracebacks are user data.

Hooks for tests: ``document.body.dataset.updates`` counts the successful
redraws (from ``"0"``); ``#status`` has the class ``error`` while the server
does not answer.
"""

from __future__ import annotations

__all__ = ("PAGE",)

PAGE: str = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>workcrew dashboard</title>
<link rel="icon" href="data:,">
<style>
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, "Segoe UI", Helvetica, Arial, sans-serif;
  color: #222; background: #f4f5f7; }
header { position: sticky; top: 0; z-index: 1; display: flex; flex-wrap: wrap; gap: 4px 16px;
  align-items: baseline; padding: 10px 16px; background: #fff; border-bottom: 1px solid #ddd; }
h1 { margin: 0; font-size: 18px; }  #status { font-size: 13px; color: #555; }
#status.error { color: #b00020; background: #fde8e8; padding: 1px 8px; border-radius: 4px;
  font-weight: 600; }
main { padding: 12px 16px; }
#empty { margin: 24px 16px; font-size: 16px; color: #666; }
section.pool { background: #fff; border: 1px solid #ddd; border-radius: 6px;
  padding: 12px 16px; margin-bottom: 16px; min-width: 0; }
h2 { margin: 0 0 4px; font-size: 17px; display: flex; flex-wrap: wrap; gap: 2px 12px;
  align-items: baseline; }
h2 .kind, h2 .uptime { font-size: 13px; font-weight: normal; color: #666; }
.pstate { font-size: 12px; font-weight: 600; padding: 0 8px; border-radius: 9px;
  background: #e6f4ea; color: #2e7d32; }
.pstate[data-state=closing] { background: #fff3e0; color: #a65400; }
.pstate[data-state=closed] { background: #eee; color: #666; }
.totals { display: flex; flex-wrap: wrap; gap: 2px 18px; color: #555; }
.totals b { color: #222; font-variant-numeric: tabular-nums; }
.totals .bad b, td.failed.bad { color: #c62828; }
h3 { margin: 14px 0 6px; font-size: 14px; color: #444; }
h3 small { font-weight: normal; color: #777; margin-left: 8px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 3px 12px 3px 0; border-bottom: 1px solid #eee;
  white-space: nowrap; font-variant-numeric: tabular-nums; }
th { color: #666; font-weight: 600; }
td.task { white-space: normal; overflow-wrap: anywhere; min-width: 14em;
  font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
tr.worker td.state { font-weight: 600; }
tr[data-state=running] td.state { color: #2e7d32; }
tr[data-state=idle] td.state, tr[data-state=stopped] td.state { color: #888; }
tr[data-state=starting] td.state { color: #1565c0; }
tr[data-state=crashed] td.state { color: #c62828; }
tr[data-state=killed] td.state { color: #e65100; }
.map { display: grid; grid-template-columns: minmax(0, 14em) minmax(80px, 1fr) auto;
  gap: 2px 12px; align-items: center; padding: 2px 0; }
.map .desc { font-weight: 600; overflow-wrap: anywhere; }
.map[data-finished=true] .desc { color: #777; }
.map progress { width: 100%; height: 14px; accent-color: #4e79a7; }
.map .info { display: flex; flex-wrap: wrap; gap: 0 10px; font-size: 13px; color: #444;
  font-variant-numeric: tabular-nums; }
.map .failed { color: #c62828; }
.map .finished { color: #2e7d32; font-weight: 600; }
@media (max-width: 640px) { .map { grid-template-columns: 1fr; } }
svg { display: block; width: 100%; height: auto; font-size: 11px; font-family: inherit; }
svg text { fill: #555; }
svg text.tp { fill: #3b6491; }  svg text.q { fill: #b8651b; }
svg text.note { fill: #999; font-style: italic; }
.legend { display: flex; flex-wrap: wrap; gap: 0 18px; font-size: 12px; color: #444; }
.key::before { content: ""; display: inline-block; width: 18px; height: 0; margin-right: 6px;
  vertical-align: middle; border-top: 2px solid #4e79a7; }
.key.queue::before { border-top: 2px dashed #f28e2b; }
path.throughput { fill: none; stroke: #4e79a7; stroke-width: 2; }
path.queue { fill: none; stroke: #f28e2b; stroke-width: 2; stroke-dasharray: 5 3; }
line.grid, line.tick { stroke: #e4e4e4; }  line.axis { stroke: #999; }
rect.lane { fill: #fafafa; }  rect.lane.odd { fill: #f0f2f4; }
rect.span { stroke: rgba(0, 0, 0, 0.3); stroke-width: 0.5; }
rect.span.failed { fill: #e15759; stroke: #8b0000; stroke-width: 1; }
.pair { display: grid; gap: 0 24px;
  grid-template-columns: repeat(auto-fit, minmax(min(100%, 340px), 1fr)); }
.pair > * { min-width: 0; }
.failures { max-height: 440px; overflow: auto; }
.failure { border-left: 3px solid #e15759; background: #fff7f7; padding: 4px 8px;
  margin: 0 0 6px; }
.failure[data-crash=true] { border-left-color: #8b0000; background: #fcebeb; }
.failure .meta { font-size: 12px; color: #666; }
.crash-mark { background: #8b0000; color: #fff; border-radius: 3px; padding: 0 6px;
  margin-right: 8px; font-weight: 600; }
.failure .task { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px;
  overflow-wrap: anywhere; }
.failure .error { color: #b00020; white-space: pre-wrap; overflow-wrap: anywhere; }
summary { cursor: pointer; font-size: 12px; color: #555; }
pre.traceback { margin: 4px 0; padding: 6px; max-height: 320px; overflow: auto;
  background: #f4f4f4; font-size: 12px; }
.none, .render-error { color: #777; font-style: italic; margin: 4px 0; }
</style>
</head>
<body data-updates="0">
<header><h1>workcrew dashboard</h1><span id="status">connecting&hellip;</span></header>
<main id="pools"></main>
<p id="empty" hidden>no pool is running</p>
<script>
"use strict";
const TOKEN = new URLSearchParams(location.search).get("token") || "";
const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"];
const openTracebacks = new Set();  // "pool|t|worker|task" of the tracebacks left open
const sections = new Map();  // pool id -> {section, boxes: {part: box}}

// Elements are built from text nodes and attributes only: data never becomes markup.
function make(ns, tag, attrs, kids) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined && v !== false) node.setAttribute(k, String(v));
  }
  for (const kid of kids.flat()) {
    if (kid !== null && kid !== undefined) node.append(kid instanceof Node ? kid : String(kid));
  }
  return node;
}
const h = (tag, attrs, ...kids) => make(null, tag, attrs, kids);
const s = (tag, attrs, ...kids) => make(SVGNS, tag, attrs, kids);
const num = (x) => (typeof x === "number" && Number.isFinite(x) ? x : null);
const count = (x) => (num(x) === null ? "-" : String(Math.round(x)));
const fixed = (x, d) => (num(x) === null ? "-" : x.toFixed(d));
const text = (x, other) => (x === null || x === undefined || x === "" ? other : String(x));
const list = (x) => (Array.isArray(x) ? x.filter((v) => v && typeof v === "object") : []);

function dur(x) {
  if (num(x) === null) return "-";
  if (x < 60) return x.toFixed(1) + " s";
  const m = Math.floor(x / 60);
  if (x < 3600) return `${m} min ${Math.floor(x % 60)} s`;
  return `${Math.floor(x / 3600)} h ${m % 60} min`;
}

// A round step (1, 2 or 5 times a power of ten) giving about `n` intervals over `range`.
function niceStep(range, n) {
  if (!(range > 0)) return 1;
  const raw = range / Math.max(n, 1);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const r = raw / mag;
  return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag;
}
function ticks(lo, hi, step) {
  const out = [];
  for (let i = Math.ceil(lo / step - 1e-9); i * step <= hi + step * 1e-9; i++) {
    out.push(i * step);
    if (out.length > 200) break;
  }
  return out;
}
function label(v, step) {
  if (v === 0) return "0";
  if (Math.abs(v) >= 1e6 && step >= 1e5) return +(v / 1e6).toFixed(2) + "M";
  if (Math.abs(v) >= 1e4 && step >= 1e3) return +(v / 1e3).toFixed(2) + "k";
  return v.toFixed(step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step) - 1e-9)));
}
const niceMax = (v, step) => Math.max(step, Math.ceil(v / step - 1e-9) * step);

function renderHead(p) {
  const t = p.totals || {};
  const item = (cls, value, name, bad) =>
    h("span", {class: "t-" + cls + (bad ? " bad" : "")}, h("b", {}, value), " " + name);
  return [
    h("h2", {},
      h("span", {class: "name"}, text(p.name, "pool " + text(p.id, "?"))),
      h("span", {class: "kind"}, text(p.kind, "?") + " pool"),
      h("span", {class: "pstate", "data-state": text(p.state, "")}, text(p.state, "?")),
      h("span", {class: "uptime"}, "up " + dur(p.uptime))),
    h("div", {class: "totals"},
      item("done", count(t.done), "done"),
      item("failed", count(t.failed), "failed", t.failed > 0),
      item("queued", count(t.queued), "queued"),
      item("in-flight", count(t.in_flight), "in flight"),
      item("throughput", fixed(num(t.throughput), 1), "tasks/s"),
      item("workers", count(t.workers_started), "workers started"),
      item("restarts", count(t.restarts), "restarts"),
      item("crashes", count(t.crashes), "crashes", t.crashes > 0)),
  ];
}

function renderWorkers(p) {
  const cols = ["id", "kind", "pid", "state", "task", "tasks", "failed", "memory"];
  const rows = list(p.workers).map((w) => {
    const state = text(w.state, "unknown");
    let task = text(w.task, "-");
    if (state === "running" && num(w.running_for) !== null) {
      task += ` for ${w.running_for.toFixed(1)} s`;
    }
    const mem = num(w.memory) === null ? "-" : (w.memory / 1048576).toFixed(1) + " MiB";
    const cells = [text(w.id, "-"), text(w.kind, "-"), text(w.pid, "-"), state, task,
      count(w.tasks), count(w.failed), mem];
    return h("tr", {class: "worker", "data-worker-id": text(w.id, ""), "data-state": state},
      cols.map((c, i) => h("td", {class: c === "failed" && w.failed > 0 ? "failed bad" : c},
        cells[i])));
  });
  if (!rows.length) rows.push(h("tr", {class: "none"}, h("td", {colspan: 8}, "no worker")));
  return [h("h3", {}, "workers"), h("div", {class: "scroll"}, h("table", {class: "workers"},
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c)))), h("tbody", {}, rows)))];
}

function renderMaps(p) {
  const maps = list(p.maps).map((m) => {
    const done = num(m.done) ?? 0, total = num(m.total), failed = num(m.failed) ?? 0;
    const finished = m.finished === true;
    const bar = h("progress", {class: total === null && !finished ? "bar indeterminate" : "bar"});
    if (total !== null) {
      bar.max = total > 0 ? total : 1;
      bar.value = total > 0 ? Math.min(done, total) : finished ? 1 : 0;
    } else if (finished) {
      bar.max = 1;
      bar.value = 1;
    }  // else no value: the browser draws an indeterminate bar
    const info = [h("span", {class: "count"}, total === null ? count(done) : `${done} / ${total}`)];
    if (failed > 0) info.push(h("span", {class: "failed"}, `${failed} failed`));
    info.push(h("span", {class: "rate"}, fixed(num(m.rate), 1) + "/s"));
    if (finished) info.push(h("span", {class: "finished"}, "done"));
    else if (num(m.eta) !== null) {
      info.push(h("span", {class: "eta"}, "ETA " + (m.eta < 60 ? Math.round(m.eta) + " s"
        : dur(m.eta))));
    }
    if (num(m.elapsed) !== null) {
      info.push(h("span", {class: "elapsed"}, (finished ? "in " : "for ") + dur(m.elapsed)));
    }
    return h("div", {class: "map", "data-map-id": text(m.id, ""), "data-done": done,
      "data-total": total, "data-finished": String(finished)},
      h("span", {class: "desc"}, text(m.desc, "map")), bar, h("span", {class: "info"}, info));
  });
  if (!maps.length) maps.push(h("p", {class: "none"}, "no map yet"));
  return [h("h3", {}, "maps"), h("div", {class: "maps"}, maps)];
}

function renderChart(p, width) {
  const hist = list(p.history).filter((x) => num(x.t) !== null);
  const W = Math.max(Math.floor(width), 240), H = 160, L = 48, R = 48, T = 10, B = 22;
  const pw = W - L - R, ph = H - T - B;
  const tp = [], q = [];
  hist.forEach((x, i) => {
    q.push([x.t, (num(x.queued) ?? 0) + (num(x.in_flight) ?? 0)]);
    const prev = hist[i - 1];
    if (prev && x.t > prev.t && num(x.done) !== null && num(prev.done) !== null) {
      tp.push([x.t, Math.max(0, (x.done - prev.done) / (x.t - prev.t))]);
    }
  });
  const t0 = hist.length ? hist[0].t : 0;
  const t1 = Math.max(hist.length ? hist[hist.length - 1].t : 0, t0 + 1);
  const top = (pts) => pts.reduce((m, pt) => Math.max(m, pt[1]), 0);
  const tpStep = niceStep(top(tp) || 1, 4), qStep = Math.max(1, niceStep(top(q) || 1, 4));
  const tpMax = niceMax(top(tp), tpStep), qMax = niceMax(top(q), qStep);
  const X = (t) => L + ((t - t0) / (t1 - t0)) * pw;
  const Y = (v, max) => T + ph - (v / max) * ph;
  const path = (pts, max) =>
    pts.map((pt, i) => `${i ? "L" : "M"}${X(pt[0]).toFixed(1)} ${Y(pt[1], max).toFixed(1)}`)
      .join(" ");
  const svg = s("svg", {class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "throughput and queue depth over time"});
  for (const v of ticks(0, tpMax, tpStep)) {
    const y = Y(v, tpMax);
    svg.append(s("line", {class: "grid", x1: L, x2: W - R, y1: y, y2: y}),
      s("text", {class: "ylabel tp", x: L - 5, y: y + 4, "text-anchor": "end"},
        label(v, tpStep)));
  }
  for (const v of ticks(0, qMax, qStep)) {
    svg.append(s("text", {class: "ylabel q", x: W - R + 5, y: Y(v, qMax) + 4}, label(v, qStep)));
  }
  const xStep = niceStep(t1 - t0, Math.max(2, Math.floor(pw / 80)));
  for (const v of ticks(t0, t1, xStep)) {
    svg.append(s("line", {class: "axis", x1: X(v), x2: X(v), y1: T + ph, y2: T + ph + 4}),
      s("text", {class: "xlabel", x: X(v), y: H - 4, "text-anchor": "middle"},
        label(v, xStep) + " s"));
  }
  svg.append(s("line", {class: "axis", x1: L, x2: W - R, y1: T + ph, y2: T + ph}),
    s("path", {class: "queue", d: path(q, qMax)}),
    s("path", {class: "throughput", d: path(tp, tpMax)}));
  if (hist.length < 2) {
    svg.append(s("text", {class: "note", x: L + pw / 2, y: T + ph / 2, "text-anchor": "middle"},
      "collecting samples (one per second)"));
  }
  const legend = h("div", {class: "legend"},
    h("span", {class: "key throughput"}, "throughput, tasks/s (left axis)"),
    h("span", {class: "key queue"}, "queue depth: queued + in flight (right axis)"),
    h("span", {}, "x: seconds since the pool started"));
  return [h("h3", {}, "throughput and queue depth"), legend, svg];
}

function renderTimeline(p, width) {
  const tl = p.timeline || {};
  const a = num(tl.start) ?? 0;
  const end = num(tl.end) ?? a, b = end > a ? end : a + 1;
  const spans = list(tl.spans).filter((x) => num(x.start) !== null && num(x.end) !== null
    && x.end >= a && x.start <= b);
  const ids = new Set(list(p.workers).filter((w) => text(w.id, null) !== null)
    .map((w) => String(w.id)));
  for (const x of spans) ids.add(text(x.worker, "?"));
  const lanes = [...ids].sort((u, v) => Number(u) - Number(v) || (u < v ? -1 : u > v ? 1 : 0));
  const row = new Map(lanes.map((id, i) => [id, i]));
  const W = Math.max(Math.floor(width), 240), LW = 84, RW = 30, LH = 20, T = 4;
  const pw = W - LW - RW, axisY = T + Math.max(lanes.length, 1) * LH, H = axisY + 22;
  const X = (t) => LW + ((Math.min(Math.max(t, a), b) - a) / (b - a)) * pw;
  const svg = s("svg", {class: "timeline", viewBox: `0 0 ${W} ${H}`});
  lanes.forEach((id, i) => {
    const y = T + i * LH;
    svg.append(s("rect", {class: i % 2 ? "lane odd" : "lane", x: LW, y, width: pw, height: LH}),
      s("text", {class: "lane-label", x: LW - 6, y: y + LH / 2 + 4, "text-anchor": "end",
        "data-worker-id": id}, "worker " + id));
  });
  const step = niceStep(b - a, Math.max(2, Math.floor(pw / 90)));
  for (const v of ticks(a, b, step)) {
    svg.append(s("line", {class: "tick", x1: X(v), x2: X(v), y1: T, y2: axisY + 4}),
      s("text", {class: "xlabel", x: X(v), y: axisY + 16, "text-anchor": "middle"},
        label(v, step) + " s"));
  }
  svg.append(s("line", {class: "axis", x1: LW, x2: LW + pw, y1: axisY, y2: axisY}));
  const colours = new Map();
  for (const x of spans) {
    const fn = text(x.function, "?"), failed = x.ok === false;
    if (!colours.has(fn)) colours.set(fn, PALETTE[colours.size % PALETTE.length]);
    const x0 = X(x.start), x1 = X(x.end);
    const tip = `${fn} ${x.start.toFixed(3)}\u2013${x.end.toFixed(3)} `
      + `(${(x.end - x.start).toFixed(3)} s)${failed ? ", failed" : ""}`;
    svg.append(s("rect", {class: failed ? "span failed" : "span", x: x0.toFixed(2),
      y: T + row.get(text(x.worker, "?")) * LH + 3, width: Math.max(1, x1 - x0).toFixed(2),
      height: LH - 6, fill: colours.get(fn), "data-worker-id": text(x.worker, "?")},
      s("title", {}, tip)));
  }
  if (!spans.length) {
    svg.append(s("text", {class: "note", x: LW + pw / 2, y: axisY - 6, "text-anchor": "middle"},
      "no task in this window"));
  }
  const shown = `${fixed(a, 1)}\u2013${fixed(b, 1)} s; failed tasks in red; hover a box`;
  return [h("h3", {}, "timeline", h("small", {}, shown)), svg];
}

function renderFailures(p) {
  const all = list(p.failures);
  const box = h("div", {class: "failures"});
  for (const f of all.slice().reverse()) {  // newest first
    const key = [text(p.id, ""), f.t, f.worker, f.task].join("|");
    const details = h("details", {}, h("summary", {}, "traceback"),
      h("pre", {class: "traceback"}, text(f.traceback, "(no traceback)")));
    details.open = openTracebacks.has(key);
    details.addEventListener("toggle", () => {
      if (details.open) openTracebacks.add(key);
      else openTracebacks.delete(key);
    });
    const crash = f.crash === true;
    box.append(h("div", {class: "failure", "data-crash": String(crash)},
      h("div", {class: "meta"}, crash ? h("span", {class: "crash-mark"}, "worker crashed") : null,
        `at ${fixed(num(f.t), 1)} s on worker ${text(f.worker, "?")}`),
      h("div", {class: "task"}, text(f.task, "?")),
      h("div", {class: "error"}, text(f.error, "")), details));
  }
  if (!all.length) box.append(h("p", {class: "none"}, "no failures"));
  return [h("h3", {}, "failures", h("small", {}, all.length ? `${all.length}, newest first` : "")),
    box];
}

function renderSlowest(p) {
  const rows = list(p.slowest).map((x) => h("tr", {class: "slow"},
    h("td", {class: "task"}, text(x.task, "?")),
    h("td", {class: "seconds"}, num(x.seconds) === null ? "-" : x.seconds.toFixed(2) + " s"),
    h("td", {class: "worker"}, text(x.worker, "-"))));
  if (!rows.length) rows.push(h("tr", {class: "none"}, h("td", {colspan: 3}, "none yet")));
  return [h("h3", {}, "slowest tasks"), h("div", {class: "scroll"}, h("table", {class: "slowest"},
    h("thead", {}, h("tr", {}, h("th", {}, "task"), h("th", {}, "seconds"), h("th", {}, "worker"))),
    h("tbody", {}, rows)))];
}

// Each part is redrawn only when its data (or, for the pictures, its width) changed, so
// text selections, tooltips and opened tracebacks survive the refreshes that change nothing.
const PARTS = [
  ["head", renderHead, (p) => [p.name, p.kind, p.state, p.uptime, p.totals]],
  ["workers", renderWorkers, (p) => p.workers],
  ["maps", renderMaps, (p) => p.maps],
  ["chart", renderChart, (p) => p.history, true],
  ["timeline", renderTimeline, (p) => [p.timeline, list(p.workers).map((w) => w.id)], true],
  ["failures", renderFailures, (p) => p.failures],
  ["slowest", renderSlowest, (p) => p.slowest],
];

function makeSection(id) {
  const section = h("section", {class: "pool", "data-pool-id": id});
  const boxes = {};
  const pair = h("div", {class: "pair"});
  for (const [part] of PARTS) {
    boxes[part] = h("div", {class: "part part-" + part});
    (part === "failures" || part === "slowest" ? pair : section).append(boxes[part]);
  }
  section.append(pair);
  return {section, boxes};
}

function render(data) {
  const pools = list(data && data.pools);
  const main = document.getElementById("pools");
  document.getElementById("empty").hidden = pools.length > 0;
  const seen = new Set();
  pools.forEach((p, i) => {
    const id = text(p.id, "#" + i);
    seen.add(id);
    if (!sections.has(id)) sections.set(id, makeSection(id));
    const {section, boxes} = sections.get(id);
    if (main.children[i] !== section) main.insertBefore(section, main.children[i] || null);
    section.dataset.state = text(p.state, "");
    for (const [part, build, pick, sized] of PARTS) {
      const box = boxes[part];
      const key = JSON.stringify(pick(p) ?? null) + (sized ? "|" + box.clientWidth : "");
      if (box.dataKey === key) continue;
      try {
        box.replaceChildren(...build(p, box.clientWidth));
      } catch (err) {
        box.replaceChildren(h("p", {class: "render-error"}, `cannot show ${part}: ${err}`));
      }
      box.dataKey = key;
    }
  });
  for (const [id, entry] of sections) {
    if (!seen.has(id)) {
      entry.section.remove();
      sections.delete(id);
    }
  }
}

const statusLine = document.getElementById("status");
async function poll() {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 5000);
  try {
    const url = "api/state?token=" + encodeURIComponent(TOKEN);
    const response = await fetch(url, {cache: "no-store", signal: abort.signal});
    if (response.status !== 200) throw new Error("HTTP " + response.status);
    render(await response.json());
    statusLine.className = "";
    statusLine.textContent = "updated " + new Date().toTimeString().slice(0, 8);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (err) {
    const why = err && err.name === "AbortError" ? "no answer within 5 s"
      : (err && err.message) || String(err);
    statusLine.className = "error";
    statusLine.textContent = "connection lost: " + why + " (retrying)";
  } finally {
    clearTimeout(timer);
    setTimeout(poll, 500);
  }
}
poll();
</script>
</body>
</html>
"""
