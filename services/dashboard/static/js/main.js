// The dashboard's shell: the API key box and a router over the URL's hash
// (#/runs?filters, #/runs/ID, #/models, #/models/NAME, #/campaigns, #/campaigns/ID), so the
// static files need no server-side routes.

import { apiKey, setApiKey } from "./api.js";
import { campaignPage, campaignsPage } from "./campaigns.js";
import { clear, h } from "./dom.js";
import { modelPage, modelsPage } from "./models.js";
import { runPage } from "./run.js";
import { runsPage } from "./runs.js";

const view = document.getElementById("view");
const keybox = document.getElementById("keybox");
let current = null; // the page shown: {stop()}
let unauthorizedReason = null;

function renderKeybox() {
  clear(keybox);
  const key = apiKey();
  if (key) {
    keybox.append(
      h("span", { class: "muted", title: "kept for this browser session only" }, `API key …${key.slice(-4)}`),
      h("button", { class: "link", type: "button", id: "forget-key", onclick: () => setApiKey(null) }, "Forget"),
    );
  } else {
    keybox.append(h("button", { class: "link", type: "button", onclick: () => showKeyForm(null) }, "Enter API key"));
  }
}

/** The form that asks for the key: shown when the API answers 401, or on request. */
function showKeyForm(reason) {
  stopCurrent();
  const input = h("input", {
    type: "password",
    id: "api-key",
    name: "api-key",
    autocomplete: "off",
    placeholder: "tt_…",
    required: true,
    "aria-label": "API key",
  });
  const form = h(
    "form",
    { class: "keyform", id: "key-form" },
    h("h2", {}, "This server needs an API key"),
    h("p", { class: "muted" }, "Create one with ", h("code", {}, "thinktank keys create NAME"), ". It is kept in this browser tab's session storage and sent only to this server."),
    reason ? h("p", { class: "error", id: "key-error" }, reason) : null,
    h("div", { class: "row" }, input, h("button", { type: "submit" }, "Use key")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    unauthorizedReason = null;
    setApiKey(key);
    route();
  });
  clear(view).append(form);
  input.focus();
}

function stopCurrent() {
  if (current) current.stop();
  current = null;
}

function route() {
  stopCurrent();
  const hash = location.hash.replace(/^#/, "") || "/runs";
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === parts[0]);
  }
  clear(view);
  if (parts[0] === "runs" && parts.length === 2) {
    current = runPage(view, decodeURIComponent(parts[1]));
  } else if (parts[0] === "runs" || parts.length === 0) {
    current = runsPage(view, new URLSearchParams(query));
  } else if (parts[0] === "models" && parts.length === 2) {
    current = modelPage(view, decodeURIComponent(parts[1]));
  } else if (parts[0] === "models" && parts.length === 1) {
    current = modelsPage(view);
  } else if (parts[0] === "campaigns" && parts.length === 2) {
    current = campaignPage(view, decodeURIComponent(parts[1]));
  } else if (parts[0] === "campaigns" && parts.length === 1) {
    current = campaignsPage(view);
  } else {
    view.append(h("p", { class: "error" }, "No such page. "), h("a", { href: "#/runs" }, "All runs"));
  }
}

window.addEventListener("thinktank:unauthorized", (event) => {
  if (unauthorizedReason !== null) return; // one form at a time
  unauthorizedReason = event.detail;
  const refused = apiKey() !== null;
  if (refused) setApiKey(null); // a key the server refuses is of no further use
  showKeyForm(refused ? unauthorizedReason : null); // why, when it was the key's fault
});
window.addEventListener("thinktank:key", renderKeybox);
window.addEventListener("hashchange", () => {
  unauthorizedReason = null;
  route();
});

renderKeybox();
route();
