// The runs table: filters and search (kept in the URL), pages, and live updates by polling
// while the tab is visible.

import { api } from "./api.js";
import {
  clear,
  fmtAgo,
  fmtCost,
  fmtInt,
  fmtMs,
  fmtTime,
  h,
  runDurationMs,
  statusBadge,
  truncate,
} from "./dom.js";

const PAGE = 50;
// Quick while something runs, slow otherwise: a key's requests per minute are limited.
const POLL_ACTIVE_MS = 2000;
const POLL_IDLE_MS = 5000;
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

function correctness(run) {
  const check = run.answer_check;
  if (!check) return h("span", { class: "muted", title: "no reference answer, or not finished" }, "—");
  return h(
    "span",
    { class: `flag ${check.correct ? "yes" : "no"}`, title: `reference ${check.reference}: ${check.reason}` },
    check.correct ? "correct" : "wrong",
  );
}

/** Why a run has no answer: still going, cancelled (its error field only says so), or failed. */
export function noAnswer(run) {
  if (run.status === "cancelled") return h("span", { class: "muted", title: run.error ?? "" }, "cancelled");
  if (run.status === "failed") return h("span", { class: "error", title: run.error ?? "" }, "error");
  return h("span", { class: "muted" }, "—");
}

function runRow(run, now) {
  const link = `#/runs/${encodeURIComponent(run.id)}`;
  const duration = runDurationMs(run, now);
  return h(
    "tr",
    { dataset: { runId: run.id, status: run.status } },
    h("td", { title: fmtTime(run.created_at), class: "nowrap" }, fmtAgo(run.created_at, now)),
    h("td", {}, h("a", { href: link, class: "mono" }, run.id.slice(0, 8))),
    h("td", { class: "pattern" }, run.pattern),
    h("td", {}, statusBadge(run.status)),
    h("td", { class: "problem" }, h("a", { href: link, title: truncate(run.problem, 600) }, truncate(run.problem, 90))),
    h("td", { class: "answer" }, run.answer === null ? noAnswer(run) : truncate(run.answer, 40)),
    h("td", { class: "correct" }, correctness(run)),
    h("td", { class: "num tokens", title: `${fmtInt(run.usage.prompt_tokens)} prompt + ${fmtInt(run.usage.completion_tokens)} completion` }, fmtInt(run.usage.total_tokens)),
    h("td", { class: "num" }, fmtCost(run.cost_usd)),
    h("td", { class: "num nowrap" }, duration === null ? "—" : fmtMs(duration)),
  );
}

export function runsPage(root, params) {
  const filters = {
    pattern: params.get("pattern") || "",
    status: params.get("status") || "",
    q: params.get("q") || "",
    created_after: params.get("created_after") || "",
    created_before: params.get("created_before") || "",
  };
  const controller = new AbortController();
  let runs = [];
  let nextCursor = null;
  let timer = null;
  let searchTimer = null;
  let generation = 0; // answers to a superseded query are dropped
  let backoffMs = 0; // set by a 429

  const patternSelect = h("select", { id: "filter-pattern", name: "pattern", "aria-label": "pattern" }, h("option", { value: "" }, "all patterns"));
  const statusSelect = h(
    "select",
    { id: "filter-status", name: "status", "aria-label": "status" },
    h("option", { value: "" }, "any status"),
    STATUSES.map((st) => h("option", { value: st }, st)),
  );
  const search = h("input", { id: "filter-q", type: "search", name: "q", placeholder: "search problems or run id", "aria-label": "search" });
  const after = h("input", { id: "filter-after", type: "datetime-local", name: "created_after", "aria-label": "created after" });
  const before = h("input", { id: "filter-before", type: "datetime-local", name: "created_before", "aria-label": "created before" });
  statusSelect.value = filters.status;
  search.value = filters.q;
  after.value = filters.created_after;
  before.value = filters.created_before;

  const body = h("tbody", { id: "runs-body" });
  const info = h("p", { class: "muted", id: "runs-info" });
  const error = h("p", { class: "error", hidden: true, id: "runs-error" });
  const more = h("button", { type: "button", id: "load-more", hidden: true }, "Load older runs");
  const live = h("span", { class: "live-dot", title: "updates every 2 s while runs are going, every 5 s otherwise" }, "live");

  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Runs"), live),
    h(
      "form",
      { class: "filters", id: "filters", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Pattern ", patternSelect),
      h("label", {}, "Status ", statusSelect),
      h("label", {}, "After ", after),
      h("label", {}, "Before ", before),
      h("label", { class: "grow" }, search),
    ),
    error,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "runs", id: "runs-table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Created", "Run", "Pattern", "Status", "Problem", "Answer", "Correct", "Tokens", "Cost", "Duration"].map((c) => h("th", { scope: "col" }, c)),
          ),
        ),
        body,
      ),
    ),
    info,
    more,
  );

  function query(extra = {}) {
    const toIso = (v) => (v ? new Date(v).toISOString() : "");
    return {
      pattern: filters.pattern,
      status: filters.status,
      q: filters.q,
      created_after: toIso(filters.created_after),
      created_before: toIso(filters.created_before),
      ...extra,
    };
  }

  function render() {
    const now = Date.now();
    clear(body).append(...runs.map((run) => runRow(run, now)));
    const anyFilter = Object.values(filters).some(Boolean);
    info.textContent = runs.length
      ? `${runs.length} run${runs.length === 1 ? "" : "s"}${nextCursor ? " shown" : ""}`
      : anyFilter
        ? "No run matches these filters."
        : "No runs yet. Submit one with `thinktank solve` or POST /v1/runs.";
    more.hidden = !nextCursor;
  }

  function showError(err) {
    if (err.name === "AbortError") return;
    if (err.retryAfterS) backoffMs = err.retryAfterS * 1000;
    error.hidden = false;
    error.textContent = `Could not load runs: ${err.message}`;
  }

  // The first pages again, as many runs as are shown, so live updates keep older pages too.
  async function refresh() {
    const mine = generation;
    try {
      const limit = Math.min(200, Math.max(PAGE, runs.length));
      const page = await api.runs(query({ limit }), controller.signal);
      if (mine !== generation) return;
      error.hidden = true;
      runs = page.items;
      nextCursor = page.next_cursor;
      render();
    } catch (err) {
      if (mine === generation) showError(err);
    }
  }

  async function loadMore() {
    const mine = generation;
    try {
      const page = await api.runs(query({ limit: PAGE, cursor: nextCursor }), controller.signal);
      if (mine !== generation) return;
      const seen = new Set(runs.map((r) => r.id));
      runs = runs.concat(page.items.filter((r) => !seen.has(r.id)));
      nextCursor = page.next_cursor;
      render();
    } catch (err) {
      showError(err);
    }
  }

  function filtersChanged() {
    filters.pattern = patternSelect.value;
    filters.status = statusSelect.value;
    filters.q = search.value.trim();
    filters.created_after = after.value;
    filters.created_before = before.value;
    const qs = new URLSearchParams(Object.entries(filters).filter(([, v]) => v)).toString();
    history.replaceState(null, "", `#/runs${qs ? `?${qs}` : ""}`);
    generation += 1;
    runs = [];
    refresh();
  }

  async function poll() {
    if (!document.hidden) await refresh();
    if (controller.signal.aborted) return;
    const active = runs.some((r) => r.status === "queued" || r.status === "running");
    timer = setTimeout(poll, Math.max(backoffMs, active ? POLL_ACTIVE_MS : POLL_IDLE_MS));
    backoffMs = 0;
  }

  patternSelect.addEventListener("change", filtersChanged);
  statusSelect.addEventListener("change", filtersChanged);
  after.addEventListener("change", filtersChanged);
  before.addEventListener("change", filtersChanged);
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(filtersChanged, 250);
  });
  more.addEventListener("click", loadMore);

  api
    .patterns(controller.signal)
    .then((patterns) => {
      patternSelect.append(...patterns.map((p) => h("option", { value: p.name, title: p.summary }, p.name)));
      patternSelect.value = filters.pattern;
    })
    .catch(showError);
  poll();

  return {
    stop() {
      controller.abort();
      clearTimeout(timer);
      clearTimeout(searchTimer);
    },
  };
}
