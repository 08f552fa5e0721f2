// Building the page. Every piece of data goes in as a text node or an attribute value, never
// as markup: model and user text is untrusted.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.setAttribute("class", value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** Append children: nodes as they are, anything else as text. */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** A link only for web addresses, so a stored value can never become a javascript: URL. */
export function safeHref(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

export function fmtInt(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

export function fmtCost(usd) {
  if (!usd) return "$0";
  if (usd < 0.01) return `$${usd.toFixed(4)}`;
  return `$${usd.toFixed(2)}`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms % 60_000) / 1000);
  return `${minutes} min ${seconds} s`;
}

const ZONED = /(Z|[+-]\d\d:?\d\d)$/i;

/**
 * Milliseconds since the epoch of a time the API sent. The server keeps UTC; a time written
 * without a zone is UTC too (JavaScript would read it as the browser's local time, hours off
 * east or west of Greenwich). Fractions finer than milliseconds are dropped, since
 * ``Date.parse`` promises only three digits.
 */
export function parseTime(iso) {
  if (iso === null || iso === undefined || iso === "") return NaN;
  let text = String(iso).trim().replace(" ", "T");
  text = text.replace(/(\.\d{3})\d+/, "$1");
  if (/T\d\d:\d\d/.test(text) && !ZONED.test(text)) text += "Z";
  return Date.parse(text);
}

/** How long a run took, or has taken so far while it runs. */
export function runDurationMs(run, now = Date.now()) {
  if (!run.started_at) return null;
  const end = run.finished_at ? parseTime(run.finished_at) : now;
  return Math.max(0, end - parseTime(run.started_at));
}

export function fmtAgo(iso, now = Date.now()) {
  const at = parseTime(iso);
  if (Number.isNaN(at)) return "—";
  const seconds = Math.max(0, Math.round((now - at) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(at).toLocaleDateString();
}

export function fmtTime(iso) {
  const at = parseTime(iso);
  return Number.isNaN(at) ? "—" : new Date(at).toLocaleString();
}

export function truncate(text, max) {
  const flat = String(text ?? "").replace(/\s+/g, " ").trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status);
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

// Lane colours: distinct enough side by side, readable on light and dark backgrounds.
const PALETTE = [
  "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#7f7f7f",
];

export function laneColor(index) {
  return PALETTE[index % PALETTE.length];
}
