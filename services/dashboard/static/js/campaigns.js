// Self-play campaigns (GET /v1/campaigns): a table that follows them while they run, and one
// campaign with its learning curve (each round's headline metric with its interval, games,
// valid share, rewards and training loss, charted and tabled) and each round's steps, games,
// datasets, trained versions and game runs.

import { api } from "./api.js";
import { lineChart } from "./charts.js";
import { TERMINAL, append, clear, fmtAgo, fmtTime, h, statusBadge } from "./dom.js";
import { metricValue } from "./models.js";

// Quick while a campaign is going, slow otherwise: a key's requests per minute are limited.
const POLL_ACTIVE_MS = 3000;
const POLL_IDLE_MS = 10000;
// A round plays many games; its page links the first few and says how many there are.
const RUN_LINKS = 20;
// The metric each kind is judged by when no round has been evaluated yet (each round's report
// names its own: the papers' headline numbers).
const EVAL_METRIC = {
  spc: { name: "step accuracy" },
  rlad: { name: "solve rate" },
};
// The players whose mean game reward each kind reports.
const REWARDS = { spc: ["critic", "sneaky"], rlad: ["abstraction"] };

function campaignHref(campaign) {
  return `#/campaigns/${encodeURIComponent(campaign.id)}`;
}

function roundName(round) {
  return round === 0 ? "baseline" : `round ${round}`;
}

function muted(text = "—") {
  return h("span", { class: "muted" }, text);
}

function where(campaign) {
  return campaign.step ? `${roundName(campaign.round)} · ${campaign.step}` : roundName(campaign.round);
}

function versionLink(name) {
  return h("a", { href: `#/models/${encodeURIComponent(name)}`, class: "mono" }, name);
}

/** ``{model: version}`` as links, or a dash. */
function versionLinks(versions) {
  const entries = Object.entries(versions || {}).filter(([, v]) => typeof v === "string" && v);
  if (!entries.length) return muted();
  return entries.map(([model, name], i) => [i ? ", " : "", muted(model), " ", versionLink(name)]);
}

/** ``{name: value}`` as "name value, name value". */
function pairs(values) {
  const entries = Object.entries(values || {}).filter(([, v]) => v !== null && typeof v !== "object");
  if (!entries.length) return muted();
  return entries.map(([k, v], i) => [i ? ", " : "", muted(k.replaceAll("_", " ")), " ", metricValue(v)]);
}

function polling(load) {
  const controller = new AbortController();
  let timer = null;
  let backoffMs = 0;
  async function poll() {
    let active = false;
    if (!document.hidden) {
      try {
        active = await load(controller.signal);
      } catch (err) {
        if (err.name === "AbortError") return;
        if (err.retryAfterS) backoffMs = err.retryAfterS * 1000;
        else if (err.status >= 400 && err.status < 500) return; // asking again will not mend it
      }
    }
    if (controller.signal.aborted) return;
    timer = setTimeout(poll, Math.max(backoffMs, active ? POLL_ACTIVE_MS : POLL_IDLE_MS));
    backoffMs = 0;
  }
  poll();
  return {
    stop() {
      controller.abort();
      clearTimeout(timer);
    },
  };
}

// --- the list -------------------------------------------------------------------------------

function campaignRow(campaign, now) {
  return h(
    "tr",
    { dataset: { name: campaign.name, status: campaign.status } },
    h("td", {}, h("a", { href: campaignHref(campaign) }, campaign.name)),
    h("td", {}, campaign.kind),
    h("td", {}, statusBadge(campaign.status)),
    h("td", { class: "nowrap" }, where(campaign)),
    h("td", {}, versionLinks(campaign.versions)),
    h("td", { title: fmtTime(campaign.created_at), class: "nowrap" }, fmtAgo(campaign.created_at, now)),
  );
}

export function campaignsPage(root) {
  const body = h("tbody", { id: "campaigns-body" });
  const info = h("p", { class: "muted", id: "campaigns-info" }, "Loading…");
  const error = h("p", { class: "error", hidden: true, id: "campaigns-error" });
  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Campaigns"), h("span", { class: "live-dot", title: "updates every 3 s while campaigns are going" }, "live")),
    error,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "runs", id: "campaigns-table" },
        h("thead", {}, h("tr", {}, ["Name", "Kind", "Status", "Round", "Serving", "Created"].map((c) => h("th", { scope: "col" }, c)))),
        body,
      ),
    ),
    info,
  );
  return polling(async (signal) => {
    try {
      const page = await api.campaigns({ limit: 200 }, signal);
      error.hidden = true;
      const now = Date.now();
      clear(body).append(...page.items.map((c) => campaignRow(c, now)));
      info.textContent = page.items.length
        ? `${page.items.length} campaign${page.items.length === 1 ? "" : "s"}`
        : "No campaigns yet. Start one with `thinktank campaign start` or POST /v1/campaigns.";
      return page.items.some((c) => !TERMINAL.has(c.status));
    } catch (err) {
      if (err.name !== "AbortError") {
        info.textContent = "";
        error.hidden = false;
        error.textContent = `Could not load campaigns: ${err.message}`;
      }
      throw err;
    }
  });
}

// --- one campaign ---------------------------------------------------------------------------

function stepChips(steps) {
  const entries = Object.entries(steps || {});
  if (!entries.length) return muted();
  return entries.map(([step, info]) => {
    const status = (info && info.status) || "queued";
    const span = info && info.started_at ? `${fmtTime(info.started_at)} → ${fmtTime(info.finished_at)}` : "";
    return [h("span", { class: "step", dataset: { step }, title: span }, `${step} `, statusBadge(status)), " "];
  });
}

function datasetCounts(datasets) {
  const entries = Object.entries(datasets || {});
  if (!entries.length) return muted();
  return entries.map(([model, d], i) => [i ? ", " : "", muted(model), " ", d && d.records !== undefined ? `${metricValue(d.records)} records` : "—"]);
}

function trained(round) {
  const models = new Set([...Object.keys(round.training_runs || {}), ...Object.keys(round.versions || {})]);
  if (!models.size) return muted();
  return [...models].map((model, i) => {
    const run = (round.training_runs || {})[model] || {};
    const version = (round.versions || {})[model];
    let detail = "";
    if (run.skipped) detail = ` (skipped: ${run.skipped})`;
    else if (run.status) detail = ` (training ${run.status}${run.attempts > 1 ? `, ${run.attempts} attempts` : ""})`;
    return [i ? ", " : "", muted(model), " ", typeof version === "string" && version ? versionLink(version) : muted(), detail];
  });
}

function runLinks(runIds) {
  if (!runIds.length) return muted();
  const shown = runIds.slice(0, RUN_LINKS);
  return h(
    "span",
    { class: "run-links" },
    h("span", { class: "run-count" }, `${runIds.length} run${runIds.length === 1 ? "" : "s"}`),
    runIds.length > shown.length ? muted(` (first ${shown.length})`) : "",
    ": ",
    shown.map((id, i) => [i ? " " : "", h("a", { href: `#/runs/${encodeURIComponent(id)}`, class: "mono" }, id.slice(0, 8))]),
  );
}

/** The probe each new version answered once served: ``{model: {version, backend, latency_s}}``. */
function served(probes) {
  const entries = Object.entries(probes || {}).filter(([, p]) => p && typeof p.version === "string");
  if (!entries.length) return muted();
  return entries.map(([model, p], i) => [
    i ? ", " : "",
    muted(model),
    " ",
    versionLink(p.version),
    p.backend ? ` on ${p.backend}` : "",
    typeof p.latency_s === "number" ? ` (${metricValue(p.latency_s)} s)` : "",
  ]);
}

function roundTable(round) {
  const metrics = round.metrics || {};
  const rows = [
    ["steps", "Steps", stepChips(round.steps)],
    ["games", "Games", pairs(metrics.games)],
    ["eval", "Evaluation", pairs(metrics.eval)],
    ["served", "Served", served(metrics.served)],
    ["datasets", "Datasets", datasetCounts(round.datasets)],
    ["versions", "Trained", trained(round)],
    ["runs", "Game runs", runLinks(round.run_ids || [])],
  ];
  return h(
    "section",
    { class: "round", dataset: { round: round.round } },
    h("h2", {}, round.round === 0 ? "Baseline" : `Round ${round.round}`, " ", muted(`${fmtTime(round.started_at)} → ${fmtTime(round.finished_at)}`)),
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "runs round-table" }, h("tbody", {}, rows.map(([key, label, value]) => h("tr", { dataset: { field: key } }, h("th", { scope: "row" }, label), h("td", {}, value))))),
    ),
  );
}

// --- the learning curve: each round's report (GET /v1/campaigns/{id}) ----------------------

function headlineOf(round) {
  const headline = (round.report || {}).headline;
  return headline && typeof headline.value === "number" && Number.isFinite(headline.value) ? headline : null;
}

/** The metric's name: the rounds' own when they agree, else "metric" (each cell says). */
function metricName(campaign) {
  const names = new Set(campaign.rounds.map(headlineOf).filter(Boolean).map((hl) => hl.name));
  if (names.size === 1) return [...names][0];
  return names.size ? "metric" : (EVAL_METRIC[campaign.kind] || { name: "metric" }).name;
}

function capitalized(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function fixed(value, digits = 3) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "—";
}

function metricChart(campaign) {
  const name = metricName(campaign);
  const points = campaign.rounds
    .map((r) => [r.round, headlineOf(r)])
    .filter(([, hl]) => hl)
    .map(([x, hl]) => ({ x, y: hl.value, low: hl.low ?? undefined, high: hl.high ?? undefined }));
  if (!points.length) return h("p", { class: "muted", id: "campaign-chart" }, `No ${name} measured yet.`);
  const whiskers = points.some((p) => Number.isFinite(p.low) && Number.isFinite(p.high)) ? " (95% interval)" : "";
  const chart = lineChart({ title: `${capitalized(name)} per round${whiskers}`, points, xLabel: (x) => (x === 0 ? "base" : `r${x}`) });
  chart.id = "campaign-chart";
  return chart;
}

function headlineCells(round, name) {
  const hl = headlineOf(round);
  if (!hl) return [muted(), muted(), muted()];
  const value = name === "metric" ? `${hl.name} ${fixed(hl.value)}` : fixed(hl.value);
  const interval = typeof hl.low === "number" && typeof hl.high === "number" ? `${fixed(hl.low)}–${fixed(hl.high)}` : muted();
  return [value, interval, hl.n ? String(hl.n) : muted()];
}

function gamesCell(report) {
  if (typeof report.games !== "number") return muted();
  return report.failed_games ? [String(report.games), muted(` (+${report.failed_games} failed)`)] : String(report.games);
}

function lossesCell(report) {
  const entries = [
    ...Object.entries(report.losses || {}).map(([model, loss]) => [model, fixed(loss, 4)]),
    ...Object.entries(report.skipped || {}).map(([model, why]) => [model, h("span", { class: "muted", title: why }, "skipped")]),
  ];
  if (!entries.length) return muted();
  return entries.map(([model, value], i) => [i ? ", " : "", muted(model), " ", value]);
}

function rewardsCell(kind, report) {
  const rewards = report.rewards || {};
  const entries = (REWARDS[kind] || Object.keys(rewards)).filter((p) => typeof rewards[p] === "number").map((p) => [p, fixed(rewards[p])]);
  if (kind === "rlad" && typeof report.improvement === "number") entries.push(["gain", fixed(report.improvement)]);
  if (!entries.length) return muted();
  return entries.map(([player, value], i) => [i ? ", " : "", muted(player), " ", value]);
}

/** One line per round: what the CLI's ``campaign report`` prints. */
function curveTable(campaign) {
  const name = metricName(campaign);
  const rows = campaign.rounds.map((r) => {
    const report = r.report || {};
    const cells = [
      roundName(r.round),
      ...headlineCells(r, name),
      gamesCell(report),
      typeof report.valid_share === "number" ? `${Math.round(100 * report.valid_share)}%` : muted(),
      rewardsCell(campaign.kind, report),
      lossesCell(report),
    ];
    return h("tr", { dataset: { round: r.round } }, cells.map((cell, i) => h("td", { class: i >= 1 && i <= 5 ? "num" : null }, cell)));
  });
  const head = ["Round", capitalized(name), "95% CI", "n", "Games", "Valid", "Mean rewards", "Training loss"];
  return h(
    "div",
    { class: "table-wrap curve-table" },
    h("table", { class: "runs", id: "campaign-curve" }, h("thead", {}, h("tr", {}, head.map((c, i) => h("th", { scope: "col", class: i >= 1 && i <= 5 ? "num" : null }, c)))), h("tbody", {}, rows)),
  );
}

export function campaignPage(root, id) {
  root.append(h("p", {}, h("a", { href: "#/campaigns" }, "← All campaigns")));
  const content = h("div", { id: "campaign" });
  const error = h("p", { class: "error", hidden: true, id: "campaign-error" });
  root.append(error, content);

  function render(c) {
    const cancel = h("button", { type: "button", id: "cancel-campaign", class: "danger" }, "Cancel campaign");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        render(await api.cancelCampaign(c.id));
      } catch (err) {
        error.hidden = false;
        error.textContent = `Could not cancel: ${err.message}`;
        cancel.disabled = false;
      }
    });
    const facts = [
      ["Kind", c.kind],
      ["Round", h("span", { id: "campaign-where" }, where(c))],
      ["Serving now", h("span", { id: "campaign-serving" }, versionLinks(c.versions))],
      ["Created", fmtTime(c.created_at)],
      ["Finished", fmtTime(c.finished_at)],
    ];
    append(
      clear(content),
      h("div", { class: "page-head" }, h("h1", { id: "campaign-name" }, c.name), statusBadge(c.status), TERMINAL.has(c.status) ? null : cancel),
      c.error ? h("p", { class: "error", id: "campaign-failure" }, c.error) : null,
      h("dl", { class: "facts", id: "campaign-fields" }, facts.map(([k, v]) => h("div", { class: "fact" }, h("dt", {}, k), h("dd", {}, v)))),
      h("div", { class: "charts" }, metricChart(c)),
      c.rounds.length ? [curveTable(c), c.rounds.map(roundTable)] : h("p", { class: "muted" }, "No round has started yet."),
    );
  }

  return polling(async (signal) => {
    try {
      const c = await api.campaign(id, signal);
      error.hidden = true;
      render(c);
      return !TERMINAL.has(c.status);
    } catch (err) {
      if (err.name !== "AbortError") {
        error.hidden = false;
        error.textContent = `Could not load campaign ${id}: ${err.message}`;
      }
      throw err;
    }
  });
}
