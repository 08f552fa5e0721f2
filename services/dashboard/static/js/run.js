// One run: its summary, charts, and the conversation as a timeline with one lane per agent.
// The timeline is built from the run's event stream, in the order things happened: stored
// events replay first, then live ones arrive (a turn's text streams into its lane while the
// model writes). Turns are read from /turns too, for their prompts and timestamps.

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
  runDurationMs,
  safeHref,
  statusBadge,
} from "./dom.js";
import { clampedText, completionView, decisionView, keyValues, outcomeView } from "./render.js";

const SYNC_MS = 1500; // at most one /turns read per this while turns stream in

/** A turn as the stream announces it, in the shape /turns gives (less prompt and time). */
function turnFromEvent(data) {
  const { latency_s: latency, run_id: _run, ...rest } = data;
  return { ...rest, latency_ms: (latency || 0) * 1000 };
}

function messageView(message) {
  return h("div", { class: "message" }, h("div", { class: "message-role" }, message.role), clampedText(String(message.content ?? ""), "text small"));
}

export function runPage(root, runId) {
  const controller = new AbortController();
  const { signal } = controller;
  let run = null;
  const turns = new Map(); // key -> turn
  const receivedAt = new Map(); // key -> when the stream brought it (until /turns has its time)
  const lanes = [];
  const laneByName = new Map();
  const rows = []; // grid rows after the heads: {kind: "turns", node, round, lanes, index} | {kind: "full"}
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
  const timeline = h("div", { class: "timeline", id: "timeline" });
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
    h("div", { class: "timeline-wrap" }, timeline),
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
      ["Answer", run.answer === null ? h("span", { class: "muted" }, "—") : h("strong", { id: "run-answer" }, run.answer)],
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
    if (run.error) items.push(["Error", h("span", { class: "error" }, run.error)]);
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

  // --- lanes and rows -------------------------------------------------------------------

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
    const head = h("div", { class: "lane-head", dataset: { lane: agent } }, h("span", { class: "lane-name" }, agent), role && role !== agent.toLowerCase() ? h("span", { class: "lane-role" }, role) : null);
    head.style.borderTopColor = found.color;
    timeline.append(head);
    timeline.style.gridTemplateColumns = `repeat(${lanes.length}, minmax(170px, 1fr))`;
    lanes.forEach((l, i) => {
      l.index = i;
    });
    if (at !== lanes.length - 1) {
      // a lane went in between: everything in the lanes after it moves one column right
      for (const el of timeline.querySelectorAll("[data-lane]")) {
        el.style.gridColumn = String(laneByName.get(el.dataset.lane).index + 1);
      }
    } else {
      head.style.gridColumn = String(found.index + 1);
    }
    return found;
  }

  /** The lane colour of whoever made a decision (``by``), if one lane is theirs. */
  function deciderColor(by) {
    const name = String(by ?? "").toLowerCase();
    const match = lanes.find((l) => l.role === name || l.name.toLowerCase() === name || `${l.role}s` === name);
    return match ? match.color : null;
  }

  function nextRow() {
    return rows.length + 2; // grid row 1 holds the lane heads
  }

  function placePending() {
    for (const { card } of pending.values()) card.style.gridRow = String(nextRow());
  }

  function fullRow(el) {
    el.style.gridColumn = "1 / -1";
    el.style.gridRow = String(nextRow());
    rows.push({ kind: "full" });
    timeline.append(el);
    placePending();
    if (follow.checked) el.scrollIntoView({ block: "nearest" });
  }

  function turnCard(turn, laneInfo) {
    const stats = `${fmtInt(turn.prompt_tokens)} → ${fmtInt(turn.completion_tokens)} tokens · ${fmtMs(turn.latency_ms)}`;
    const prompt = h("details", { class: "prompt" }, h("summary", {}, "Prompt"));
    prompt.addEventListener("toggle", () => showPrompt(prompt, turn.key), { once: true });
    const parsed = turn.parsed && Object.keys(turn.parsed).length
      ? h("div", { class: "parsed" }, h("div", { class: "note-label" }, "Parsed output"), keyValues(Object.fromEntries(Object.entries(turn.parsed).filter(([k]) => k !== "parse_ok" && k !== "parse_error"))))
      : null;
    const footer = [turn.model + (turn.adapter ? ` + ${turn.adapter}` : "")];
    if (turn.params?.max_tokens) footer.push(`max ${fmtInt(turn.params.max_tokens)} tokens`);
    const card = h(
      "article",
      { class: "turn", dataset: { key: turn.key, agent: turn.agent, role: turn.role, lane: turn.agent } },
      h(
        "header",
        {},
        h("span", { class: "agent" }, turn.agent),
        h("span", { class: "where" }, `${turn.node} · round ${turn.round}`),
        h("span", { class: "stats" }, stats),
      ),
      turn.role_description ? h("p", { class: "desc" }, turn.role_description) : null,
      turn.error ? h("p", { class: "error" }, turn.error) : null,
      completionView(turn.completion),
      turn.finish_reason === "length" ? h("p", { class: "chip warn" }, "cut off at its token budget") : null,
      turn.parse_ok === false ? h("p", { class: "chip warn" }, `not parsed: ${turn.parse_error ?? "no reason given"}`) : null,
      parsed,
      prompt,
      h("footer", { class: "muted" }, footer.join(" · ")),
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
      // it): renew the card where it stands, never a second card in a row of its own
      const card = turnCard(turn, laneInfo);
      card.style.gridColumn = shown.style.gridColumn;
      card.style.gridRow = shown.style.gridRow;
      shown.replaceWith(card);
      cards.set(turn.key, card);
      return;
    }
    if (lastRound !== null && turn.round !== lastRound) {
      fullRow(h("div", { class: "round-divider" }, `Round ${turn.round}`));
    }
    lastRound = turn.round;
    const last = rows.at(-1);
    let index;
    // parallel calls of one step (critics, samples) share a row, one card per lane
    if (last && last.kind === "turns" && last.node === turn.node && last.round === turn.round && !last.lanes.has(laneInfo.name)) {
      last.lanes.add(laneInfo.name);
      index = last.index;
    } else {
      index = nextRow();
      rows.push({ kind: "turns", node: turn.node, round: turn.round, lanes: new Set([laneInfo.name]), index });
    }
    const card = turnCard(turn, laneInfo);
    card.style.gridColumn = String(laneInfo.index + 1);
    card.style.gridRow = String(index);
    const live = pending.get(turn.key);
    if (live) {
      live.card.remove();
      pending.delete(turn.key);
    }
    timeline.append(card);
    cards.set(turn.key, card);
    placePending();
    if (follow.checked) card.scrollIntoView({ block: "nearest" });
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
    card.style.gridColumn = String(laneInfo.index + 1);
    card.style.gridRow = String(nextRow());
    card.style.borderTopColor = laneInfo.color;
    timeline.append(card);
    live = { card, text };
    pending.set(key, live);
    if (follow.checked) card.scrollIntoView({ block: "nearest" });
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
        fullRow(decisionView(data, deciderColor(data.by)));
        break;
      case "outcome":
        fullRow(outcomeView(data));
        break;
      case "run_finished":
        for (const { card } of pending.values()) card.remove();
        pending.clear();
        refreshRun();
        break;
      case "run_started":
        if (data.resuming) fullRow(h("div", { class: "round-divider" }, "Resumed from its last checkpoint"));
        refreshRun();
        break;
      default:
        fullRow(h("div", { class: "decision" }, h("div", { class: "decision-head" }, h("span", { class: "decision-title" }, type)), keyValues(data, "kv inline")));
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
      const end = t.created_at ? Date.parse(t.created_at) : receivedAt.get(t.key) ?? Date.now();
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
