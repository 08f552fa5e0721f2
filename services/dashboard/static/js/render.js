// How turns' text, parsed outputs, decisions and outcomes look. Known decision and outcome
// kinds get a sentence of their own; any other field, and any kind not known here, is still
// shown as key/value pairs, so a new pattern's decisions appear without a change here.

import { fmtInt, h } from "./dom.js";

// --- text -------------------------------------------------------------------------------

/**
 * A completion cut into answer text and reasoning: what stands inside <think>…</think> (or
 * before a lone </think>, or after a <think> the model never closed) is reasoning.
 */
export function splitThink(text) {
  const parts = [];
  let rest = String(text ?? "");
  const open = rest.indexOf("<think>");
  const close = rest.indexOf("</think>");
  if (close !== -1 && (open === -1 || close < open)) {
    parts.push({ think: true, text: rest.slice(0, close) });
    rest = rest.slice(close + "</think>".length);
  }
  for (;;) {
    const start = rest.indexOf("<think>");
    if (start === -1) break;
    parts.push({ think: false, text: rest.slice(0, start) });
    rest = rest.slice(start + "<think>".length);
    const end = rest.indexOf("</think>");
    if (end === -1) {
      parts.push({ think: true, text: rest, open: true });
      rest = "";
      break;
    }
    parts.push({ think: true, text: rest.slice(0, end) });
    rest = rest.slice(end + "</think>".length);
  }
  parts.push({ think: false, text: rest });
  return parts.filter((p) => p.text.trim() !== "");
}

function words(text) {
  return text.trim().split(/\s+/).length;
}

/** How much text shows before "Show all": in a panel of its own, and in a turn's card. */
export const CLAMP = { chars: 700, lines: 12, cls: "" };
export const CLAMP_BRIEF = { chars: 240, lines: 4, cls: "brief" };

/** Long text shows its start, with a button to show all of it. */
export function clampedText(text, cls = "text", limit = CLAMP) {
  const body = h("div", { class: cls }, text);
  const long = text.length > limit.chars || text.split("\n").length > limit.lines;
  if (!long) return body;
  body.classList.add("clamped");
  if (limit.cls) body.classList.add(limit.cls);
  const toggle = h("button", { class: "link more", type: "button" }, "Show all");
  toggle.addEventListener("click", () => {
    const clamped = body.classList.toggle("clamped");
    toggle.textContent = clamped ? "Show all" : "Show less";
  });
  return h("div", { class: "clamp-box" }, body, toggle);
}

export function completionView(text, limit = CLAMP) {
  const parts = splitThink(text);
  if (!parts.length) return h("div", { class: "text muted" }, "(empty)");
  return h(
    "div",
    { class: "completion" },
    parts.map((part) =>
      part.think
        ? h(
            "details",
            { class: "think" },
            h("summary", {}, `Reasoning · ${fmtInt(words(part.text))} words${part.open ? " (unfinished)" : ""}`),
            h("div", { class: "text" }, part.text.trim()),
          )
        : clampedText(part.text.trim(), "text", limit),
    ),
  );
}

// --- values -----------------------------------------------------------------------------

export function valueView(value, limit = CLAMP) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "—");
  if (typeof value === "boolean") {
    return h("span", { class: `flag ${value ? "yes" : "no"}` }, value ? "yes" : "no");
  }
  if (typeof value === "number") return h("span", { class: "num" }, String(value));
  if (typeof value === "string") {
    return value.length > 80 || value.includes("\n")
      ? clampedText(value, "text small", limit)
      : h("span", {}, value);
  }
  if (Array.isArray(value) && value.every((v) => typeof v !== "object" || v === null)) {
    return h("ol", { class: "plain-list" }, value.map((v) => h("li", {}, valueView(v, limit))));
  }
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function keyValues(object, cls = "kv") {
  const entries = Object.entries(object || {});
  if (!entries.length) return null;
  return h(
    "dl",
    { class: cls },
    entries.map(([key, value]) => [h("dt", {}, key.replaceAll("_", " ")), h("dd", {}, valueView(value))]),
  );
}

function chip(text, tone = "") {
  return h("span", { class: `chip ${tone}` }, text);
}

function signed(n) {
  return typeof n === "number" && n > 0 ? `+${n}` : String(n);
}

function pct(x) {
  return `${Math.round(x * 100)}%`;
}

/** Take the named fields out of ``rest``; the first one present is returned. */
function take(rest, ...names) {
  for (const name of names) {
    if (name in rest) {
      const value = rest[name];
      for (const other of names) delete rest[other];
      return value;
    }
  }
  return undefined;
}

// --- decisions --------------------------------------------------------------------------

/** Answers and their votes as bars, most votes first. */
function voteBars(votes) {
  const total = Object.values(votes).reduce((a, b) => a + b, 0) || 1;
  return h(
    "div",
    { class: "votes" },
    Object.entries(votes)
      .sort((a, b) => b[1] - a[1])
      .map(([option, count]) => {
        const bar = h("span", { class: "vote-bar" });
        bar.style.width = `${(100 * count) / total}%`;
        return h("div", { class: "vote" }, h("span", { class: "vote-label", title: option }, option), bar, h("span", { class: "num" }, String(count)));
      }),
  );
}

const DECISIONS = {
  ceo(rest) {
    const round = take(rest, "round");
    const decision = take(rest, "decision");
    const honoured = take(rest, "honoured");
    const recruit = take(rest, "recruit_number");
    const tokens = take(rest, "max_tokens");
    const direction = take(rest, "direction");
    const parseOk = take(rest, "parse_ok");
    const parseError = take(rest, "parse_error");
    const headline = [];
    if (decision === "stop") {
      headline.push(chip(honoured ? "Stop" : "Stop (not honoured)", honoured ? "bad" : "warn"));
    } else {
      headline.push(chip("Continue", "good"));
    }
    if (recruit !== undefined) headline.push(chip(`recruit ${recruit} experts`));
    if (tokens !== undefined) headline.push(chip(`${fmtInt(tokens)} tokens per expert call`, "budget"));
    if (parseOk === false) headline.push(chip("reply not parsed: defaults used", "warn"));
    const notes = [];
    if (direction && direction !== "No advice yet.") notes.push(["Direction", direction]);
    if (parseError) notes.push(["Parse error", parseError]);
    if (decision === "stop" && !honoured) {
      notes.push(["Why not honoured", round === 0 ? "there is no solution to stop on in round 0" : "the stop policy does not let the CEO stop"]);
    }
    return { title: `CEO · round ${round ?? "?"}`, headline, notes };
  },

  critics(rest) {
    const round = take(rest, "round");
    const inner = take(rest, "inner_turn");
    const agree = take(rest, "agree");
    const disagree = take(rest, "disagree");
    const abstain = take(rest, "abstain");
    const revise = take(rest, "revise");
    return {
      title: `Critics · round ${round ?? "?"}${inner ? `, revision ${inner}` : ""}`,
      headline: [
        chip(`${agree ?? 0} agree`, "good"),
        chip(`${disagree ?? 0} disagree`, disagree ? "bad" : ""),
        ...(abstain ? [chip(`${abstain} without an answer`, "warn")] : []),
        chip(revise ? "→ the solver revises" : "→ no revision", revise ? "warn" : ""),
      ],
      notes: [],
    };
  },

  evaluator(rest) {
    const round = take(rest, "round");
    const correct = take(rest, "correct");
    const stop = take(rest, "stop_reason");
    return {
      title: `Evaluator · round ${round ?? "?"}`,
      headline: [
        chip(correct ? "judged correct" : "judged not correct", correct ? "good" : "bad"),
        chip(stop ? `→ stop (${stop})` : "→ next round", stop ? "warn" : ""),
      ],
      notes: [],
    };
  },

  vote(rest) {
    const answer = take(rest, "answer");
    const votes = take(rest, "votes") || {};
    const samples = take(rest, "samples");
    const cancelled = take(rest, "cancelled");
    const headline = [chip(answer === null || answer === undefined ? "no majority answer" : `majority: ${answer}`, "good")];
    if (samples !== undefined) headline.push(chip(`${samples} samples counted`));
    if (cancelled) headline.push(chip(`${cancelled} cancelled once the vote was decided`, "warn"));
    return { title: "Majority vote", headline, notes: [], body: voteBars(votes) };
  },

  // FlexiVe's verifier (sdv): fast checks, escalated to slow ones when they disagree; also
  // a verifier that picks among candidate answers (rlad).
  verifier(rest) {
    const attempt = take(rest, "attempt");
    const mode = take(rest, "mode");
    const agreement = take(rest, "agreement");
    const fastAgreement = take(rest, "fast_agreement");
    const wrong = take(rest, "first_wrong");
    const correct = take(rest, "correct");
    const choice = take(rest, "choice");
    const answer = take(rest, "answer");
    const headline = [];
    if (mode === "slow") {
      const why = typeof fastAgreement === "number" ? ` (agreement ${pct(fastAgreement)})` : "";
      headline.push(chip(`fast checks disagreed${why} → slow check`, "warn"));
    } else if (mode === "fast") {
      headline.push(chip("fast checks agreed: no slow check", "good"));
    } else if (mode !== undefined) {
      headline.push(chip(`${mode} check`));
    }
    if (typeof agreement === "number") {
      headline.push(chip(mode === "slow" || mode === "fast" ? `${mode} checks agree ${pct(agreement)}` : `agreement ${pct(agreement)}`));
    }
    if (wrong === null) headline.push(chip("no usable verdict", "warn"));
    else if (typeof wrong === "number") {
      headline.push(chip(wrong < 0 ? "no step flagged" : `flagged step ${wrong}`, wrong < 0 ? "good" : "bad"));
    }
    if (typeof correct === "boolean") headline.push(chip(correct ? "solution verified" : "solution rejected", correct ? "good" : "bad"));
    if (choice !== undefined) headline.push(chip(choice === null ? "chose no candidate" : `chose candidate ${choice}`));
    if (answer !== undefined) headline.push(chip(answer === null ? "no answer" : `answer: ${answer}`, "good"));
    return { title: `Verifier${attempt !== undefined ? ` · attempt ${attempt}` : ""}`, headline, notes: [] };
  },

  // Solve-Detect-Verify's detector: at a hesitation cue, is the solution already complete?
  detector(rest) {
    const complete = take(rest, "complete");
    const stopped = take(rest, "stopped");
    const cue = take(rest, "cue");
    const pYes = take(rest, "p_yes");
    const headline = [];
    if (stopped) headline.push(chip("complete → stop writing", "warn"));
    else if (complete) headline.push(chip("complete, writing goes on"));
    else if (complete === false) headline.push(chip("not complete → keep writing"));
    if (cue) headline.push(chip(`at “${cue}”`));
    if (typeof pYes === "number") headline.push(chip(`p(yes) ${pYes.toFixed(2)}`));
    return { title: "Detector", headline, notes: [] };
  },

  refine(rest) {
    const attempt = take(rest, "attempt");
    const candidates = take(rest, "candidates");
    const answer = take(rest, "answer");
    const votes = take(rest, "votes") || {};
    const headline = [chip(`${candidates ?? "?"} refinements`), chip(answer === null || answer === undefined ? "no majority answer" : `majority: ${answer}`, "good")];
    return { title: `Refinement${attempt !== undefined ? ` · attempt ${attempt}` : ""}`, headline, notes: [], body: voteBars(votes) };
  },

  sdv(rest) {
    const answer = take(rest, "answer");
    const stop = take(rest, "stop_reason");
    const total = take(rest, "total_tokens");
    const tokens = take(rest, "tokens") || {};
    const saved = tokens.saved_by_early_stop;
    const headline = [chip(answer === null || answer === undefined ? "no answer" : `answer: ${answer}`, "good")];
    if (stop) headline.push(chip(`stop: ${stop}`));
    if (typeof total === "number") headline.push(chip(`${fmtInt(total)} tokens`, "budget"));
    if (saved) headline.push(chip(`${fmtInt(saved)} saved by stopping early`, "good"));
    const phases = Object.fromEntries(Object.entries(tokens).filter(([k]) => k !== "saved_by_early_stop"));
    return { title: "Solve-Detect-Verify", headline, notes: [], body: keyValues(phases, "kv inline") };
  },

  // a critic's verdict on one step (spc_search, spc_game)
  critic(rest) {
    const verdict = take(rest, "verdict");
    const action = take(rest, "action");
    const target = take(rest, "target");
    const step = take(rest, "step");
    const tone = { correct: "good", incorrect: "bad", unparsed: "warn" }[verdict] ?? "";
    const headline = [chip(`judged ${target ? `the ${target} step ` : ""}${verdict ?? "?"}`, tone)];
    if (action) headline.push(chip(`→ ${action.replaceAll("_", " ")}`, action === "accept" ? "" : "warn"));
    return { title: `Critic${typeof step === "number" ? ` · step ${step}` : ""}`, headline, notes: [] };
  },

  // SPC's validity roll-outs: is the sneaky step a real error?
  validity(rest) {
    const valid = take(rest, "valid");
    const original = take(rest, "original_success_rate");
    const sneaky = take(rest, "sneaky_success_rate");
    const headline = [chip(valid ? "a real error" : `not a real error${rest.reason ? ` (${take(rest, "reason")})` : ""}`, valid ? "good" : "warn")];
    if (typeof original === "number") headline.push(chip(`original step solves ${pct(original)}`));
    if (typeof sneaky === "number") headline.push(chip(`sneaky step solves ${pct(sneaky)}`));
    return { title: "Validity check", headline, notes: [] };
  },

  game(rest) {
    const result = take(rest, "result");
    const [text, tone] = GAME_RESULTS[result] || [result ?? "no result", ""];
    const headline = [
      chip(text, tone),
      rewardChip("critic", take(rest, "critic_reward")),
      rewardChip("sneaky", take(rest, "sneaky_reward")),
      rewardChip("paired", take(rest, "paired_reward")),
    ];
    return { title: "Game", headline, notes: [] };
  },

  rewards(rest) {
    const baseline = take(rest, "baseline_reward");
    const items = take(rest, "abstractions") || [];
    const headline = [rewardChip("baseline", baseline)];
    const best = items.reduce((a, b) => (a && a.reward >= b.reward ? a : b), null);
    if (best) headline.push(chip(`best: abstraction ${best.index}`, "good"));
    const body = h(
      "table",
      { class: "mini" },
      h("thead", {}, h("tr", {}, h("th", {}, "abstraction"), h("th", {}, "reward"), h("th", {}, "improvement"))),
      h(
        "tbody",
        {},
        items.map((a) =>
          h("tr", {}, h("td", {}, String(a.index)), h("td", { class: "num" }, a.reward ?? "—"), h("td", { class: "num" }, a.improvement === null || a.improvement === undefined ? "—" : signed(a.improvement))),
        ),
      ),
    );
    return { title: "Rewards", headline, notes: [], body: items.length ? body : null };
  },

  leak_filter(rest) {
    const proposed = take(rest, "proposed");
    const kept = take(rest, "kept");
    const dropped = take(rest, "dropped") || [];
    const headline = [chip(`kept ${kept ?? "?"} of ${proposed ?? "?"}`, dropped.length ? "warn" : "good")];
    const notes = dropped.map((d) => [`Dropped ${d.index}`, d.reason ?? "leak"]);
    return { title: "Leak filter", headline, notes };
  },

};

function titleCase(text) {
  const t = String(text ?? "decision").replaceAll("_", " ");
  return t.charAt(0).toUpperCase() + t.slice(1);
}

/** A decision event: who decided, what, and every other field it carried. */
export function decisionView(payload, color) {
  const rest = { ...payload };
  const by = take(rest, "by");
  const known = DECISIONS[by];
  const view = known ? known(rest) : { title: titleCase(by), headline: [], notes: [] };
  if (take(rest, "parse_ok") === false) view.headline.push(chip("reply not parsed", "warn"));
  // plain values stay in sight; nested ones (lists of records, maps) fold away
  const nested = (v) => v !== null && typeof v === "object" && (!Array.isArray(v) || v.some((x) => x !== null && typeof x === "object"));
  const plain = Object.fromEntries(Object.entries(rest).filter(([, v]) => !nested(v)));
  const folded = Object.fromEntries(Object.entries(rest).filter(([, v]) => nested(v)));
  const more = keyValues(folded);
  const el = h(
    "div",
    { class: "decision", dataset: { by: String(by ?? "") } },
    h("div", { class: "decision-head" }, h("span", { class: "decision-title" }, view.title), view.headline),
    view.notes.map(([label, text]) => h("div", { class: "note" }, h("span", { class: "note-label" }, `${label}: `), h("span", {}, text))),
    view.body,
    keyValues(plain, "kv inline"),
    more ? h("details", { class: "fields" }, h("summary", {}, `More: ${Object.keys(folded).join(", ").replaceAll("_", " ")}`), more) : null,
  );
  if (color) el.style.borderLeftColor = color;
  return el;
}

// --- outcomes ---------------------------------------------------------------------------

const GAME_RESULTS = {
  critic_detected: ["critic wins: it caught the error", "good"],
  critic_fooled: ["sneaky generator wins: the critic was fooled", "bad"],
  critic_unparsed: ["critic loses: no readable verdict", "warn"],
  invalid_rewrite: ["no game: the rewrite was not a real error", "warn"],
};

function rewardChip(label, value) {
  if (typeof value !== "number") return null;
  return chip(`${label} ${signed(value)}`, value > 0 ? "good" : value < 0 ? "bad" : "");
}

/** Two texts side by side, e.g. a step and its sneaky rewrite. */
function sideBySide(left, right) {
  return h(
    "div",
    { class: "pair" },
    [left, right].map(([label, text]) =>
      h("div", { class: "pair-side" }, h("div", { class: "note-label" }, label), clampedText(String(text ?? "—"), "text small")),
    ),
  );
}

const OUTCOMES = {
  spc_game(rest) {
    const result = take(rest, "result");
    const [resultText, tone] = GAME_RESULTS[result] || [result ?? "no result", ""];
    const stepIndex = take(rest, "step_index");
    const stepsTotal = take(rest, "steps_total");
    const verdict = take(rest, "critic_verdict");
    const headline = [
      chip(resultText, tone),
      verdict ? chip(`critic judged the sneaky step ${verdict}`) : null,
      rewardChip("critic", take(rest, "critic_reward")),
      rewardChip("sneaky", take(rest, "sneaky_reward")),
      rewardChip("paired", take(rest, "paired_reward")),
    ];
    if (typeof stepIndex === "number") headline.push(chip(`step ${stepIndex + 1}${stepsTotal ? ` of ${stepsTotal}` : ""} rewritten`));
    const errorType = take(rest, "error_type");
    if (errorType) headline.push(chip(errorType));
    const body = sideBySide(["Original step", take(rest, "original_step")], ["Sneaky step", take(rest, "sneaky_step")]);
    return { title: `SPC game${"round" in rest ? ` · round ${take(rest, "round")}` : ""}`, headline, body };
  },

  rlad_abstraction(rest) {
    const index = take(rest, "abstraction_index");
    const abstraction = take(rest, "abstraction");
    const solutions = take(rest, "solutions");
    const leaked = take(rest, "leaked");
    const headline = [
      rewardChip("reward", take(rest, "reward")),
      rewardChip("baseline", take(rest, "baseline_reward")),
      rewardChip("improvement", take(rest, "improvement")),
    ];
    if (Array.isArray(solutions)) {
      const solved = solutions.filter((x) => x.correct).length;
      headline.push(chip(`${solved} of ${solutions.length} solutions correct`));
    }
    if (leaked) headline.push(chip(`leaked the answer: ${take(rest, "leak_reason") ?? "dropped"}`, "bad"));
    const body = abstraction ? clampedText(abstraction, "text small") : null;
    const title = index === null || index === undefined ? "Baseline (no abstraction)" : `Abstraction ${index}`;
    return { title, headline, body };
  },
};

/** A structured result (an ``outcome`` event): its headline, then every field, folded. */
export function outcomeView(payload) {
  const rest = { ...payload };
  const kind = take(rest, "kind");
  take(rest, "key");
  const known = OUTCOMES[kind];
  const view = known ? known(rest) : { title: titleCase(kind ?? "outcome"), headline: [] };
  const fields = keyValues(rest);
  const folded = known && fields ? h("details", { class: "fields" }, h("summary", {}, "All fields"), fields) : fields;
  return h(
    "div",
    { class: "outcome", dataset: { kind: String(kind ?? "") } },
    h("div", { class: "decision-head" }, h("span", { class: "decision-title" }, view.title), view.headline),
    view.body,
    folded,
  );
}
