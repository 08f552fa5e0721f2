// One run: its summary, charts, and the conversation. Each agent has a lane, a colour and a
// name in the legend; its turns flow as cards in the order things happened, read left to right
// and top to bottom, so a long discussion fills the width instead of one row per turn. Turns
// of one step (the critics, the samples) stand side by side, and a decision sits under the
// turns that made it. The timeline is built from the run's event stream: stored events replay
// first, then live ones arrive (a turn's text streams into its card while the model writes).
// Turns are read from /turns too, for their prompts and timestamps.

import { ApiError, api, followEvents } from "./api.js";
import { laneTimeline, stackedBars } from "./charts.js";
import {
  TERMINAL,
  append,
  clear,
  fmtCost,
  fmtInt,
  fmtMs,
  fmtTime,
  h,
  laneColor,
  parseTime,
  runDurationMs,
  safeHref,
  statusBadge,
} from "./dom.js";
import { CLAMP_BRIEF, clampedText, completionView, decisionView, keyValues, outcomeView, valueView } from "./render.js";

const SYNC_MS = 1500; // at most one /turns read per this while turns stream in

/** A turn as the stream announces it, in the shape /turns gives (less prompt and time). */
function turnFromEvent(data) {
  const { latency_s: latency, run_id: _run, ...rest } = data;
  return { ...rest, latency_ms: (latency || 0) * 1000 };
}

function messageView(message) {
  return h("div", { class: "message" }, h("div", { class: "message-role" }, message.role), clampedText(String(message.content ?? ""), "text small"));
}

function noAnswer(run) {
  if (run.status === "cancelled") return h("span", { class: "muted" }, "none: cancelled");
  if (run.status === "failed") return h("span", { class: "muted" }, "none: the run failed");
  return h("span", { class: "muted" }, "—");
}

/**
 * A turn's parsed output on a line or two: "agree: no  answer: 5". Fields that only repeat
 * the completion (a critic's "text", a recruiter's list of roles) say nothing new and are left
 * out; long values are cut short like the completion.
 */
function parsedView(turn) {
  const completion = String(turn.completion ?? "");
  const quoted = (v) => typeof v === "string" && completion.includes(v.trim());
  const repeats = (v) =>
    (typeof v === "string" && v.trim().length > 40 && quoted(v)) ||
    (Array.isArray(v) && v.length > 0 && v.join("").length > 40 && v.every(quoted));
  const fields = Object.entries(turn.parsed || {}).filter(([k, v]) => k !== "parse_ok" && k !== "parse_error" && !repeats(v));
  if (!fields.length) return null;
  return h(
    "div",
    { class: "parsed" },
    h("span", { class: "note-label" }, "Parsed"),
    " ",
    fields.map(([key, value]) => h("span", { class: "field" }, h("span", { class: "key" }, `${key.replaceAll("_", " ")}:`), " ", valueView(value, CLAMP_BRIEF), " ")),
  );
}

export function runPage(root, runId) {
  const controller = new AbortController();
  const { signal } = controller;
  let run = null;
  const turns = new Map(); // key -> turn
  const receivedAt = new Map(); // key -> when the stream brought it (until /turns has its time)
  const lanes = [];
  const laneByName = new Map();
  let lastStep = null; // the latest group of turns: {node, round, lanes, el, closed: a decision ended it}
  const cards = new Map(); // turn key -> its card
  const pending = new Map(); // turn key -> {card, text}
  const seen = new Set(); // event ids already shown
  let lastRound = null;
  let syncTimer = null;
  let chartTimer = null;
  let tick = null;
  let streaming = false;

  const header = h("div", { class: "page-head" });
  const summary = h("section", { class: "summary", id: "run-summary" });
  const problem = h("section", { class: "problem-box" });
  const charts = h("section", { class: "charts", id: "charts" });
  const legend = h("div", { class: "lanes", id: "timeline-lanes" });
  const timeline = h("div", { class: "timeline", id: "timeline" });
  const liveStep = h("div", { class: "turn-group live" }); // turns being written, always last
  timeline.append(liveStep);
  const streamState = h("span", { class: "stream-state", id: "stream-state" });
  const follow = h("input", { type: "checkbox", id: "follow" });
  const notice = h("p", { class: "error", hidden: true, id: "run-error" });

  root.append(
    h("p", {}, h("a", { href: "#/runs" }, "← All runs")),
    header,
    notice,
    summary,
    problem,
    charts,
    h(
      "div",
      { class: "section-head" },
      h("h2", {}, "Conversation"),
      streamState,
      h("label", { class: "follow" }, follow, " follow live"),
    ),
    legend,
    timeline,
  );

  function fail(message) {
    notice.hidden = false;
    notice.textContent = message;
  }

  // --- summary --------------------------------------------------------------------------

  function renderHeader() {
    clear(header);
    const cancel = h("button", { type: "button", id: "cancel-run", class: "danger" }, "Cancel run");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        run = await api.cancel(run.id);
        renderSummary();
      } catch (err) {
        fail(`Could not cancel: ${err.message}`);
      }
    });
    append(
      header,
      h("h1", {}, "Run ", h("code", { class: "mono" }, run.id.slice(0, 12))),
      statusBadge(run.status),
      !TERMINAL.has(run.status) && !run.cancel_requested ? cancel : null,
      run.cancel_requested && !TERMINAL.has(run.status) ? h("span", { class: "muted" }, "cancel requested") : null,
    );
  }

  function renderSummary() {
    renderHeader();
    // While the run goes on, its tokens are counted from the turns the stream has brought.
    let usage = run.usage;
    if (!TERMINAL.has(run.status)) {
      const seen = [...turns.values()];
      const prompt = seen.reduce((a, t) => a + t.prompt_tokens, 0);
      const completion = seen.reduce((a, t) => a + t.completion_tokens, 0);
      if (prompt + completion > usage.total_tokens) {
        usage = { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
      }
    }
    const duration = runDurationMs(run);
    const check = run.answer_check;
    const href = run.trace_url ? safeHref(run.trace_url) : null;
    const items = [
      ["Pattern", run.pattern],
      ["Answer", run.answer === null ? noAnswer(run) : h("strong", { id: "run-answer" }, run.answer)],
      [
        "Correct",
        check
          ? h("span", { class: `flag ${check.correct ? "yes" : "no"}`, title: check.reason }, `${check.correct ? "correct" : "wrong"} (reference ${check.reference})`)
          : h("span", { class: "muted" }, "unknown"),
      ],
      ["Stop reason", run.stop_reason ?? "—"],
      ["Tokens", h("span", { title: `${fmtInt(usage.prompt_tokens)} prompt + ${fmtInt(usage.completion_tokens)} completion` }, `${fmtInt(usage.total_tokens)} (${fmtInt(usage.completion_tokens)} generated)`)],
      ["Cost", fmtCost(run.cost_usd)],
      ["Duration", h("span", { id: "run-duration" }, duration === null ? "—" : fmtMs(duration))],
      ["Created", fmtTime(run.created_at)],
      [
        "Trace",
        href
          ? h("a", { href, target: "_blank", rel: "noopener noreferrer", id: "trace-link" }, `open trace ${run.trace_id.slice(0, 8)}…`)
          : run.trace_id
            ? h("code", { class: "mono" }, run.trace_id)
            : h("span", { class: "muted" }, "not traced"),
      ],
    ];
    // a cancelled run's error field only says that it was cancelled: no error to show
    if (run.error && run.status !== "cancelled") items.push(["Error", h("span", { class: "error" }, run.error)]);
    clear(summary).append(h("dl", { class: "facts" }, items.map(([k, v]) => h("div", { class: "fact" }, h("dt", {}, k), h("dd", {}, v)))));
    clearInterval(tick);
    if (run.started_at && !run.finished_at) {
      tick = setInterval(() => {
        const el = document.getElementById("run-duration");
        if (el) el.textContent = fmtMs(runDurationMs(run));
      }, 1000);
    }
  }

  function renderProblem() {
    clear(problem).append(
      h("h2", {}, "Problem"),
      clampedText(run.problem, "text problem-text"),
      Object.keys(run.config).length
        ? h("details", { class: "config" }, h("summary", {}, "Config"), keyValues(run.config))
        : null,
    );
  }

  // --- lanes and steps -------------------------------------------------------------------

  /** "Critic 2" -> ["Critic", 2]: numbered agents of one kind sit side by side, in order. */
  function laneKind(name) {
    const match = /^(.*?)\s*(\d+)$/.exec(name);
    return match ? [match[1], Number(match[2])] : [name, -1];
  }

  function lane(agent, role) {
    let found = laneByName.get(agent);
    if (found) return found;
    found = { name: agent, role, color: laneColor(lanes.length) };
    const [kind, number] = laneKind(agent);
    let at = lanes.length;
    const sameKind = lanes.map((l, i) => [laneKind(l.name), i]).filter(([[k]]) => k === kind);
    if (sameKind.length) {
      const after = sameKind.filter(([[, n]]) => n < number);
      at = after.length ? after.at(-1)[1] + 1 : sameKind[0][1];
    }
    lanes.splice(at, 0, found);
    laneByName.set(agent, found);
    clear(legend).append(
      ...lanes.map((l) => {
        const head = h("div", { class: "lane-head", dataset: { lane: l.name } }, h("span", { class: "lane-name" }, l.name), l.role && l.role !== l.name.toLowerCase() ? h("span", { class: "lane-role" }, l.role) : null);
        head.style.borderTopColor = l.color;
        return head;
      }),
    );
    return found;
  }

  /** Whether a decision made ``by`` someone ("ceo", "critics", "verifier") is this lane's. */
  function decidedBy(l, by) {
    const name = String(by ?? "").toLowerCase();
    return l.role === name || l.name.toLowerCase() === name || `${l.role}s` === name;
  }

  function follows(el) {
    if (follow.checked) el.scrollIntoView({ block: "nearest" });
  }

  /** A full-width line: a new round, a resumed run. */
  function divider(text) {
    lastStep = null;
    timeline.insertBefore(h("div", { class: "round-divider" }, text), liveStep);
  }

  /** A decision goes under the step its decider's turns were in, or on its own after it. */
  function placeDecision(el, by) {
    const here = lastStep ? [...lastStep.lanes].map((name) => laneByName.get(name)).find((l) => decidedBy(l, by)) : null;
    const decider = here ?? lanes.find((l) => decidedBy(l, by));
    if (decider) el.style.borderLeftColor = decider.color;
    if (here) {
      el.classList.add("under");
      lastStep.el.append(el);
      lastStep.closed = true; // later turns of the same node are a new step
    } else {
      timeline.insertBefore(el, liveStep);
      lastStep = null;
    }
    follows(el);
  }

  function sized(step) {
    step.style.setProperty("--n", String(Math.max(1, step.querySelectorAll(":scope > .turn").length)));
  }

  function turnCard(turn, laneInfo) {
    const stats = `${fmtInt(turn.prompt_tokens)} → ${fmtInt(turn.completion_tokens)} tokens · ${fmtMs(turn.latency_ms)}`;
    const prompt = h("details", { class: "prompt" }, h("summary", {}, "Prompt"));
    prompt.addEventListener("toggle", () => showPrompt(prompt, turn.key), { once: true });
    const parsed = parsedView(turn);
    const footer = [turn.model + (turn.adapter ? ` + ${turn.adapter}` : "")];
    if (turn.params?.max_tokens) footer.push(`max ${fmtInt(turn.params.max_tokens)} tokens`);
    const card = h(
      "article",
      { class: "turn", dataset: { key: turn.key, agent: turn.agent, role: turn.role, lane: turn.agent } },
      h(
        "header",
        {},
        h("span", { class: "agent", title: turn.role_description || null }, turn.agent),
        h("span", { class: "where" }, `${turn.node} · round ${turn.round}`),
        h("span", { class: "stats" }, stats),
      ),
      turn.error ? h("p", { class: "error" }, turn.error) : null,
      completionView(turn.completion, CLAMP_BRIEF),
      turn.finish_reason === "length" ? h("p", { class: "chip warn" }, "cut off at its token budget") : null,
      turn.parse_ok === false ? h("p", { class: "chip warn" }, `not parsed: ${turn.parse_error ?? "no reason given"}`) : null,
      parsed,
      h("footer", {}, prompt, h("span", { class: "muted model" }, footer.join(" · "))),
    );
    card.style.borderTopColor = laneInfo.color;
    return card;
  }

  async function showPrompt(details, key) {
    let turn = turns.get(key);
    if (!turn?.messages) {
      await syncTurns();
      turn = turns.get(key);
    }
    const messages = turn?.messages || [];
    append(details, messages.length ? messages.map(messageView) : h("p", { class: "muted" }, "No prompt stored."));
  }

  function addTurn(turn) {
    const laneInfo = lane(turn.agent, turn.role);
    const shown = cards.get(turn.key);
    if (shown) {
      // the same turn from both the event stream and a store read (whichever came first drew
      // it): renew the card where it stands, never a second card
      const card = turnCard(turn, laneInfo);
      shown.replaceWith(card);
      cards.set(turn.key, card);
      return;
    }
    if (lastRound !== null && turn.round !== lastRound) divider(`Round ${turn.round}`);
    lastRound = turn.round;
    // parallel calls of one step (critics, samples) share a group, one card per agent
    const step = lastStep;
    if (!(step && !step.closed && step.node === turn.node && step.round === turn.round && !step.lanes.has(laneInfo.name))) {
      const el = h("div", { class: "turn-group", dataset: { node: turn.node, round: String(turn.round) } });
      timeline.insertBefore(el, liveStep);
      lastStep = { node: turn.node, round: turn.round, lanes: new Set(), el, closed: false };
    }
    lastStep.lanes.add(laneInfo.name);
    const card = turnCard(turn, laneInfo);
    const decided = lastStep.el.querySelector(":scope > .under");
    lastStep.el.insertBefore(card, decided);
    sized(lastStep.el);
    const live = pending.get(turn.key);
    if (live) {
      live.card.remove();
      pending.delete(turn.key);
      sized(liveStep);
    }
    cards.set(turn.key, card);
    follows(card);
  }

  function pendingCard(key, agent, role) {
    let live = pending.get(key);
    if (live || cards.has(key)) return live;
    const laneInfo = lane(agent, role || laneByName.get(agent)?.role);
    const text = h("div", { class: "text live-text" });
    const card = h(
      "article",
      { class: "turn pending", dataset: { key, agent, lane: agent } },
      h("header", {}, h("span", { class: "agent" }, agent), h("span", { class: "where" }, "writing…")),
      text,
    );
    card.style.borderTopColor = laneInfo.color;
    liveStep.append(card);
    sized(liveStep);
    live = { card, text };
    pending.set(key, live);
    follows(card);
    return live;
  }

  // --- events ---------------------------------------------------------------------------

  function onEvent({ id, type, data }) {
    if (id !== null) {
      if (seen.has(id)) return;
      seen.add(id);
    }
    switch (type) {
      case "turn_started":
        pendingCard(data.key, data.agent, data.role);
        break;
      case "token": {
        const live = pendingCard(data.key, data.agent);
        if (live) live.text.textContent += data.text;
        break;
      }
      case "turn_finished": {
        const known = turns.get(data.key);
        const turn = { ...known, ...turnFromEvent(data) };
        turns.set(turn.key, turn);
        if (!receivedAt.has(turn.key)) receivedAt.set(turn.key, Date.now());
        addTurn(turn);
        if (!known?.created_at) scheduleSync(); // its prompt and time are not here yet
        scheduleCharts();
        break;
      }
      case "decision":
        placeDecision(decisionView(data), data.by);
        break;
      case "outcome":
        placeDecision(outcomeView(data), null);
        break;
      case "run_finished":
        for (const { card } of pending.values()) card.remove();
        pending.clear();
        sized(liveStep);
        refreshRun();
        break;
      case "run_started":
        if (data.resuming) divider("Resumed from its last checkpoint");
        refreshRun();
        break;
      default:
        placeDecision(h("div", { class: "decision" }, h("div", { class: "decision-head" }, h("span", { class: "decision-title" }, type)), keyValues(data, "kv inline")), null);
    }
  }

  function setStreamState(state) {
    streaming = state === "live";
    streamState.dataset.state = state;
    streamState.textContent = { live: "● live", reconnecting: "reconnecting…", ended: "", failed: "" }[state] ?? "";
  }

  async function refreshRun() {
    try {
      run = await api.run(runId, signal);
      renderSummary();
      await syncTurns();
    } catch (err) {
      if (err.name !== "AbortError") fail(`Could not reload the run: ${err.message}`);
    }
  }

  async function syncTurns() {
    clearTimeout(syncTimer);
    syncTimer = null;
    try {
      for (const turn of await api.turns(runId, signal)) turns.set(turn.key, { ...turns.get(turn.key), ...turn });
      scheduleCharts();
    } catch (err) {
      if (err.name !== "AbortError") fail(`Could not load the turns: ${err.message}`);
    }
  }

  function scheduleSync() {
    if (syncTimer === null && streaming) syncTimer = setTimeout(syncTurns, SYNC_MS);
  }

  // --- charts ---------------------------------------------------------------------------

  function scheduleCharts() {
    clearTimeout(chartTimer);
    chartTimer = setTimeout(renderCharts, 150);
  }

  function renderCharts() {
    if (run && !TERMINAL.has(run.status)) renderSummary();
    const all = [...turns.values()].filter((t) => cards.has(t.key));
    clear(charts);
    if (!all.length) return;
    const tokenParts = (list) => [
      { value: list.reduce((a, t) => a + t.completion_tokens, 0) },
      { value: list.reduce((a, t) => a + t.prompt_tokens, 0) },
    ];
    const byAgent = lanes
      .map((l) => ({ label: l.name, color: l.color, parts: tokenParts(all.filter((t) => t.agent === l.name)) }))
      .filter((r) => r.parts.some((p) => p.value));
    const rounds = [...new Set(all.map((t) => t.round))].sort((a, b) => a - b);
    const byRound = rounds.map((r) => ({ label: `round ${r}`, parts: tokenParts(all.filter((t) => t.round === r)) }));
    const names = ["completion", "prompt"];
    charts.append(stackedBars({ title: "Tokens per agent", rows: byAgent, partNames: names }));
    if (rounds.length > 1) charts.append(stackedBars({ title: "Tokens per round", rows: byRound, partNames: names }));
    const items = all.map((t) => {
      const end = t.created_at ? parseTime(t.created_at) : receivedAt.get(t.key) ?? Date.now();
      return {
        lane: t.agent,
        start: end - t.latency_ms,
        end,
        text: `${t.agent} · ${t.node} · round ${t.round}: ${fmtMs(t.latency_ms)}, ${fmtInt(t.completion_tokens)} tokens`,
        onClick: () => cards.get(t.key)?.scrollIntoView({ block: "center", behavior: "smooth" }),
      };
    });
    const used = lanes.filter((l) => all.some((t) => t.agent === l.name));
    const width = Math.max(600, charts.clientWidth - 32);
    charts.append(laneTimeline({ title: "Latency per turn (click a bar to see the turn)", lanes: used, items, width }));
  }

  // --- start ------------------------------------------------------------------------------

  async function start() {
    try {
      run = await api.run(runId, signal);
    } catch (err) {
      if (err.name === "AbortError") return;
      if (err instanceof ApiError && err.status === 404) fail(`There is no run ${runId}.`);
      else if (!(err instanceof ApiError && err.status === 401)) fail(`Could not load the run: ${err.message}`);
      return;
    }
    follow.checked = !TERMINAL.has(run.status);
    renderSummary();
    renderProblem();
    await syncTurns();
    try {
      await followEvents(runId, { onEvent, onState: setStreamState, signal });
    } catch (err) {
      if (err.name === "AbortError" || (err instanceof ApiError && err.status === 401)) return;
      setStreamState("failed");
      fail(`The live stream failed (${err.message}); showing the stored turns.`);
      for (const turn of turns.values()) if (!cards.has(turn.key)) addTurn(turn);
      renderCharts();
    }
  }

  start();

  return {
    stop() {
      controller.abort();
      clearTimeout(syncTimer);
      clearTimeout(chartTimer);
      clearInterval(tick);
    },
  };
}
