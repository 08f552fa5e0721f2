// The public JSON API under /v1, with the API key the user entered (kept for the browser
// session only), and the run's server-sent events read with fetch: EventSource cannot send
// an Authorization header.

const KEY_ITEM = "thinktank.apiKey";
const API = new URL("../../v1/", import.meta.url).href; // /ui/js/api.js -> /v1/

export class ApiError extends Error {
  constructor(status, detail, retryAfterS = null) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.retryAfterS = retryAfterS; // a 429's Retry-After
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
  window.dispatchEvent(new Event("thinktank:key"));
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function failure(response) {
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (typeof body.detail === "string") detail = body.detail;
    else if (body.detail) detail = JSON.stringify(body.detail);
  } catch {
    // not JSON: keep the status line
  }
  const retry = Number(response.headers.get("Retry-After"));
  const error = new ApiError(response.status, detail, Number.isFinite(retry) && retry > 0 ? retry : null);
  if (response.status === 401) window.dispatchEvent(new CustomEvent("thinktank:unauthorized", { detail }));
  return error;
}

export async function request(method, path, { query, body, signal } = {}) {
  const url = new URL(path, API);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  const init = { method, headers: headers({ Accept: "application/json" }), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (!response.ok) throw await failure(response);
  return response.json();
}

export const api = {
  runs: (query, signal) => request("GET", "runs", { query, signal }),
  run: (id, signal) => request("GET", `runs/${encodeURIComponent(id)}`, { signal }),
  turns: (id, signal) => request("GET", `runs/${encodeURIComponent(id)}/turns`, { signal }),
  cancel: (id) => request("POST", `runs/${encodeURIComponent(id)}/cancel`),
  patterns: (signal) => request("GET", "patterns", { signal }),
  modelVersions: (query, signal) => request("GET", "model-versions", { query, signal }),
  modelVersion: (name, signal) => request("GET", `model-versions/${encodeURIComponent(name)}`, { signal }),
  campaigns: (query, signal) => request("GET", "campaigns", { query, signal }),
  campaign: (id, signal) => request("GET", `campaigns/${encodeURIComponent(id)}`, { signal }),
  cancelCampaign: (id) => request("POST", `campaigns/${encodeURIComponent(id)}/cancel`),
};

/**
 * Follow a run's events until ``run_finished``: ``onEvent({id, type, data})`` for each.
 * A broken stream is reopened with ``Last-Event-ID``, so no stored event is missed or repeated.
 * ``onState`` hears "live", "reconnecting" and "ended". Resolves when the run has finished or
 * ``signal`` aborts; rejects on an HTTP error (401, 404), which reconnecting cannot mend.
 */
export async function followEvents(runId, { onEvent, onState = () => {}, signal }) {
  let lastId = null;
  let delay = 500;
  const url = new URL(`runs/${encodeURIComponent(runId)}/events`, API);
  while (!signal.aborted) {
    let finished = false;
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId !== null) extra["Last-Event-ID"] = lastId;
      const response = await fetch(url, { headers: headers(extra), signal, cache: "no-store" });
      if (!response.ok) throw await failure(response);
      onState("live");
      delay = 500;
      for await (const event of sseEvents(response.body)) {
        if (event.id !== null) lastId = event.id;
        let data = {};
        try {
          data = JSON.parse(event.data || "{}");
        } catch {
          data = { text: event.data };
        }
        onEvent({ id: event.id === null ? null : Number(event.id), type: event.type, data });
        if (event.type === "run_finished") finished = true;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError) throw error;
      // a network failure: try again below
    }
    if (finished) {
      onState("ended");
      return;
    }
    if (signal.aborted) return;
    onState("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 8000);
  }
}

/** The events of a text/event-stream body (the WHATWG parsing rules, without retry). */
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let type = "";
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // a final \r may be the first half of a \r\n split between two reads
    const cut = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
    const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
    buffer = lines.pop() + buffer.slice(cut); // an incomplete line waits for the rest
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { id, type: type || "message", data: data.join("\n") };
        type = "";
        data = [];
        id = null;
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: the server's keep-alive ping
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id" && !value.includes("\0")) id = value;
    }
  }
}
