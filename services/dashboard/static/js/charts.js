// Small charts drawn as inline SVG: no library, nothing fetched.

import { fmtInt, fmtMs, h, s } from "./dom.js";

const ROW = 22;
const LABEL_W = 120;
const VALUE_W = 70;

function niceMax(value) {
  if (value <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * step) return m * step;
  return 10 * step;
}

function hasInterval(p) {
  return Number.isFinite(p.low) && Number.isFinite(p.high);
}

function label(text, max = 18) {
  const t = String(text);
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}

/**
 * Horizontal stacked bars: ``rows`` of ``{label, color?, parts: [{value, name}]}``; the
 * parts' names make the legend (the first part dark, the second light).
 */
export function stackedBars({ title, rows, partNames, width = 420, format = fmtInt }) {
  const max = niceMax(Math.max(0, ...rows.map((r) => r.parts.reduce((a, p) => a + p.value, 0))));
  const plotW = width - LABEL_W - VALUE_W;
  const height = rows.length * ROW + 8;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": title });
  rows.forEach((row, i) => {
    const y = 4 + i * ROW;
    svg.append(s("text", { x: LABEL_W - 6, y: y + ROW / 2 + 4, "text-anchor": "end", class: "axis-label" }, label(row.label)));
    let x = LABEL_W;
    let total = 0;
    row.parts.forEach((part, j) => {
      const w = (plotW * part.value) / max;
      total += part.value;
      const rect = s("rect", {
        x,
        y: y + 3,
        width: Math.max(0, w),
        height: ROW - 6,
        fill: row.color || "#4e79a7",
        "fill-opacity": j === 0 ? 1 : 0.4,
        class: "bar",
      });
      rect.append(s("title", {}, `${row.label} · ${partNames[j]}: ${format(part.value)}`));
      svg.append(rect);
      x += w;
    });
    svg.append(s("text", { x: x + 4, y: y + ROW / 2 + 4, class: "value-label" }, format(total)));
  });
  const legend = h(
    "div",
    { class: "legend" },
    partNames.map((name, j) => h("span", { class: `swatch ${j === 0 ? "dark" : "light"}` }, name)),
  );
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), svg, legend);
}

/**
 * The turns on a time axis, one lane per agent: a bar from each turn's start to its end, so
 * its length is its latency and parallel turns stand one above the other.
 * ``items``: ``{lane, start, end, text, onClick?}`` with times in ms.
 */
export function laneTimeline({ title, lanes, items, width = 860 }) {
  const t0 = Math.min(...items.map((i) => i.start));
  const span = niceMax(Math.max(1, ...items.map((i) => i.end - t0)));
  const plotW = width - LABEL_W - 16;
  const axisH = 20;
  const height = lanes.length * ROW + axisH + 4;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": title });
  lanes.forEach((lane, i) => {
    const y = i * ROW;
    svg.append(s("text", { x: LABEL_W - 6, y: y + ROW / 2 + 4, "text-anchor": "end", class: "axis-label" }, label(lane.name)));
    svg.append(s("line", { x1: LABEL_W, x2: width - 16, y1: y + ROW - 0.5, y2: y + ROW - 0.5, class: "gridline" }));
  });
  const laneIndex = new Map(lanes.map((lane, i) => [lane.name, i]));
  for (const item of items) {
    const i = laneIndex.get(item.lane) ?? 0;
    const x = LABEL_W + (plotW * (item.start - t0)) / span;
    const w = Math.max(2, (plotW * (item.end - item.start)) / span);
    const rect = s("rect", { x, y: i * ROW + 4, width: w, height: ROW - 8, rx: 2, fill: lanes[i].color, class: "bar turn-bar" });
    rect.append(s("title", {}, item.text));
    if (item.onClick) rect.addEventListener("click", item.onClick);
    svg.append(rect);
  }
  const axisY = lanes.length * ROW;
  for (let k = 0; k <= 4; k++) {
    const x = LABEL_W + (plotW * k) / 4;
    svg.append(s("line", { x1: x, x2: x, y1: 0, y2: axisY + 4, class: "gridline" }));
    svg.append(s("text", { x, y: axisY + 16, "text-anchor": k === 0 ? "start" : "middle", class: "axis-label" }, fmtMs((span * k) / 4)));
  }
  return h("figure", { class: "chart-box wide" }, h("figcaption", {}, title), svg);
}

/**
 * A line over rounds: ``points`` of ``{x, y, low?, high?}`` (x an integer, y a fraction), each
 * point a dot with its value, so a short campaign still reads at a glance; a point with
 * ``low`` and ``high`` gets its interval as a whisker.
 */
export function lineChart({ title, points, xLabel = (x) => String(x), format = (y) => y.toFixed(2), width = 420, height = 180 }) {
  const left = 36;
  const right = 16;
  const top = 14;
  const bottom = 24;
  const xs = points.map((p) => p.x);
  const x0 = Math.min(...xs);
  const x1 = Math.max(x0 + 1, ...xs);
  const yMax = Math.max(1, ...points.map((p) => (hasInterval(p) ? Math.max(p.y, p.high) : p.y)));
  const inset = 18; // keeps the first and last values clear of the axis labels
  const px = (x) => left + inset + ((width - left - right - 2 * inset) * (x - x0)) / (x1 - x0);
  const py = (y) => top + (height - top - bottom) * (1 - y / yMax);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": title });
  for (const k of [0, 0.5, 1]) {
    const y = py(yMax * k);
    svg.append(s("line", { x1: left, x2: width - right, y1: y, y2: y, class: "gridline" }));
    svg.append(s("text", { x: left - 4, y: y + 4, "text-anchor": "end", class: "axis-label" }, format(yMax * k)));
  }
  for (const x of new Set(xs)) {
    svg.append(s("text", { x: px(x), y: height - 6, "text-anchor": "middle", class: "axis-label" }, xLabel(x)));
  }
  if (points.length > 1) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(" ");
    svg.append(s("path", { d, fill: "none", stroke: "#4e79a7", "stroke-width": 2, class: "line" }));
  }
  for (const p of points.filter(hasInterval)) {
    const x = px(p.x);
    const whisker = s("g", { class: "interval", "data-x": p.x, "data-low": p.low, "data-high": p.high });
    whisker.append(
      s("line", { x1: x, x2: x, y1: py(p.low), y2: py(p.high), stroke: "#4e79a7", "stroke-width": 1.5 }),
      s("line", { x1: x - 5, x2: x + 5, y1: py(p.low), y2: py(p.low), stroke: "#4e79a7", "stroke-width": 1.5 }),
      s("line", { x1: x - 5, x2: x + 5, y1: py(p.high), y2: py(p.high), stroke: "#4e79a7", "stroke-width": 1.5 }),
    );
    svg.append(whisker);
  }
  for (const p of points) {
    const dot = s("circle", { cx: px(p.x), cy: py(p.y), r: 4, fill: "#4e79a7", class: "point", "data-x": p.x, "data-y": p.y });
    const interval = hasInterval(p) ? ` (${format(p.low)}–${format(p.high)})` : "";
    dot.append(s("title", {}, `${xLabel(p.x)}: ${format(p.y)}${interval}`));
    svg.append(dot);
    // beside the dot when a whisker runs through the space above it
    const at = hasInterval(p) ? { x: px(p.x) + 8, y: py(p.y) + 4, "text-anchor": "start" } : { x: px(p.x), y: py(p.y) - 8, "text-anchor": "middle" };
    svg.append(s("text", { ...at, class: "value-label" }, format(p.y)));
  }
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), svg);
}
