// Model versions: the trained adapters the registry holds (GET /v1/model-versions), as a table
// newest first, and one version with all its fields. Read once: versions change only when
// training registers a new one.

import { api } from "./api.js";
import { clear, fmtAgo, fmtTime, h } from "./dom.js";

// The list shows a few metrics; the version's page shows them all.
const LISTED_METRICS = 3;

function versionHref(name) {
  return `#/models/${encodeURIComponent(name)}`;
}

export function metricValue(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
  return typeof value === "string" ? value : JSON.stringify(value);
}

function mainMetrics(metrics) {
  const entries = Object.entries(metrics || {});
  if (!entries.length) return h("span", { class: "muted" }, "—");
  const shown = entries.slice(0, LISTED_METRICS);
  return h(
    "span",
    { title: entries.map(([k, v]) => `${k} ${metricValue(v)}`).join("\n") },
    shown.map(([k, v], i) => [i ? ", " : "", h("span", { class: "muted" }, k.replaceAll("_", " ")), " ", metricValue(v)]),
    entries.length > shown.length ? ` (+${entries.length - shown.length})` : "",
  );
}

function parentLink(parent) {
  return parent ? h("a", { href: versionHref(parent), class: "mono" }, parent) : h("span", { class: "muted" }, "—");
}

function versionRow(version, now) {
  return h(
    "tr",
    { dataset: { name: version.name } },
    h("td", {}, h("a", { href: versionHref(version.name), class: "mono" }, version.name)),
    h("td", {}, version.role),
    h("td", {}, version.kind),
    h("td", { class: "mono" }, version.base_model),
    h("td", {}, parentLink(version.parent)),
    h("td", { title: fmtTime(version.created_at), class: "nowrap" }, fmtAgo(version.created_at, now)),
    h("td", { class: "metrics" }, mainMetrics(version.metrics)),
  );
}

function failed(root, what, err) {
  if (err.name === "AbortError") return;
  root.append(h("p", { class: "error", id: "models-error" }, `Could not load ${what}: ${err.message}`));
}

export function modelsPage(root) {
  const controller = new AbortController();
  const body = h("tbody", { id: "models-body" });
  const info = h("p", { class: "muted", id: "models-info" }, "Loading…");
  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Model versions")),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "runs", id: "models-table" },
        h("thead", {}, h("tr", {}, ["Name", "Role", "Kind", "Base", "Parent", "Created", "Metrics"].map((c) => h("th", { scope: "col" }, c)))),
        body,
      ),
    ),
    info,
  );
  api
    .modelVersions({ limit: 200 }, controller.signal)
    .then((page) => {
      const now = Date.now();
      clear(body).append(...page.items.map((v) => versionRow(v, now)));
      info.textContent = page.items.length
        ? `${page.items.length} version${page.items.length === 1 ? "" : "s"}`
        : "No model versions yet. Train one with `thinktank train`.";
    })
    .catch((err) => {
      info.textContent = "";
      failed(root, "model versions", err);
    });
  return { stop: () => controller.abort() };
}

export function modelPage(root, name) {
  const controller = new AbortController();
  root.append(h("p", {}, h("a", { href: "#/models" }, "← All model versions")));
  api
    .modelVersion(name, controller.signal)
    .then((v) => {
      const fields = [
        ["Role", v.role],
        ["Kind", v.kind],
        ["Base model", h("span", { class: "mono" }, v.base_model)],
        ["Adapter path", h("span", { class: "mono" }, v.adapter_path)],
        ["Dataset hash", h("span", { class: "mono" }, v.dataset_hash)],
        ["Parent", parentLink(v.parent)],
        ["Training run", v.training_run_id ? h("span", { class: "mono" }, v.training_run_id) : h("span", { class: "muted" }, "—")],
        ["Created", fmtTime(v.created_at)],
      ];
      const metrics = Object.entries(v.metrics || {});
      root.append(
        h("div", { class: "page-head" }, h("h1", { id: "model-name" }, v.name)),
        h("dl", { class: "kv", id: "model-fields" }, fields.map(([k, value]) => [h("dt", {}, k), h("dd", {}, value)])),
        h("h2", {}, "Metrics"),
        metrics.length
          ? h(
              "div",
              { class: "table-wrap" },
              h(
                "table",
                { class: "runs", id: "model-metrics" },
                h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Metric"), h("th", { scope: "col" }, "Value"))),
                h("tbody", {}, metrics.map(([k, value]) => h("tr", { dataset: { metric: k } }, h("td", {}, k), h("td", {}, metricValue(value))))),
              ),
            )
          : h("p", { class: "muted" }, "No metrics recorded."),
      );
    })
    .catch((err) => failed(root, `model version ${name}`, err));
  return { stop: () => controller.abort() };
}
