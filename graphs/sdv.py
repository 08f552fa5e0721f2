"""Solve-Detect-Verify with FlexiVe's flexible verifier, as a LangGraph state machine.

solve -> verify_fast -> (verify_slow when the fast checks disagree) -> verified: finalize;
wrong: refine (best-of-n, answer vote) -> verify again while refinement rounds are left ->
finalize. A solver (the first one and each refinement candidate) is streamed; whenever its
text ends on a hesitation cue the detector (the solver model itself) is asked whether the
solution is already complete, and on Yes the solver is stopped and asked to conclude. As
released, the last refinement is not verified again: a verdict after it could change nothing.
The run's token budget ends it at any point; the last solution stands.

What a researcher reads back: ``decision`` events by the detector (cue, position, P(yes),
stopped), the verifier (mode, agreement, first wrong paragraph), the refinement vote, and a
final ``{"by": "sdv"}`` event with the tokens spent per phase and those saved by stopping
early, which the final state's ``accounting`` also holds. Every model call is a stored turn.
"""

from __future__ import annotations

import asyncio
import hashlib
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import Field

from agents.calls import Agent, BudgetExhausted, RunContext, TextWatch, Turn, ask
from agents.model import ChatMessage, Completion, SamplingParams
from graphs.common import MAX_ANSWER_CHARS, MAX_CALL_TOKENS, PatternConfig, first_reason
from roles import sdv as roles
from roles.answers import extract_answer, majority_answer, normalize_answer
from roles.baselines import solver_messages
from roles.checking import answers_match

PHASES = ("solve", "detect", "fast_verify", "slow_verify", "refine")


class SdvConfig(PatternConfig):
    """Solve-Detect-Verify. Defaults follow the released FlexiVe code (k=4 fast checks,
    threshold 0.8, one refinement round of 4 candidates) with per-call budgets sized for a
    small local model; the paper's solver writes up to 32,768 tokens."""

    solve_max_tokens: int = Field(
        512, ge=8, le=MAX_CALL_TOKENS, description="budget of each solver stream"
    )
    conclude_max_tokens: int = Field(
        96,
        ge=8,
        le=MAX_CALL_TOKENS,
        description="budget of the answer a solver stopped early is asked for",
    )
    detect: bool = Field(True, description="probe the solver at hesitation cues (Detect)")
    cues: list[str] = Field(
        default_factory=lambda: list(roles.DEFAULT_CUES),
        max_length=64,
        description="hesitation cues that trigger the detector (whole words, any case)",
    )
    detect_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="stop the solver when P(Yes) exceeds this"
    )
    detect_top_logprobs: int = Field(
        10,
        ge=0,
        le=20,
        description="log-probabilities asked of the detector's one token (0: read its word)",
    )
    max_detects: int = Field(8, ge=0, le=256, description="most detector probes per stream")
    fast_checks: int = Field(4, ge=1, le=64, description="k fast verifications, in parallel")
    agreement_threshold: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="fast checks that agree less than this escalate to ceil(k/4) slow checks",
    )
    fast_max_tokens: int = Field(
        32, ge=1, le=MAX_CALL_TOKENS, description="budget of each fast check"
    )
    slow_max_tokens: int = Field(
        512, ge=8, le=MAX_CALL_TOKENS, description="budget of each slow check"
    )
    verify_temperature: float = Field(0.6, ge=0.0, le=2.0, description="verifier sampling")
    refine_rounds: int = Field(
        1, ge=0, le=10, description="refinements of a solution found wrong (as released: 1)"
    )
    refine_candidates: int = Field(
        4, ge=1, le=32, description="best-of-n candidates per refinement, voted by answer"
    )
    reference_answer: str | None = Field(
        None,
        max_length=MAX_ANSWER_CHARS,
        description="when known: the accounting says which answers were right",
    )


def add_counts(old: dict[str, int] | None, new: dict[str, int] | None) -> dict[str, int]:
    """Token counts from several nodes add up."""
    total = Counter(old or {})
    total.update(new or {})
    return dict(total)


class SdvState(TypedDict, total=False):
    problem: str
    solution: str
    attempt: int  # refinement rounds done
    paragraphs: list[str]
    fast: list[dict[str, Any]]
    escalate: bool
    verdict: dict[str, Any]
    verifications: Annotated[list[dict[str, Any]], operator.add]
    streams: Annotated[list[dict[str, Any]], operator.add]
    detect_events: Annotated[list[dict[str, Any]], operator.add]
    refinements: Annotated[list[dict[str, Any]], operator.add]
    tokens: Annotated[dict[str, int], add_counts]
    prompt_tokens: Annotated[dict[str, int], add_counts]
    answer: str | None
    accounting: dict[str, Any]
    stop_reason: Annotated[str | None, first_reason]


SOLVER = Agent("Solver", "solver", "policy")
DETECTOR = Agent(
    "Detector", "detector", "policy", "the solver model, asked whether its solution is complete"
)


def verifier_agent(mode: Literal["fast", "slow"], index: int) -> Agent:
    description = "answers at once" if mode == "fast" else "reasons through every paragraph"
    return Agent(f"{mode.capitalize()} verifier {index}", "verifier", "verifier", description)


# --- one solver stream, with detection -------------------------------------------------------


@dataclass
class Stream:
    """One solver stream: its solution (the whole text, or the text before the cue it was
    stopped at plus its conclusion), its detector probes and what it cost."""

    key: str
    phase: str
    text: str = ""
    stopped_at: roles.Cue | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    tokens: Counter[str] = field(default_factory=Counter)
    prompt_tokens: Counter[str] = field(default_factory=Counter)
    max_tokens: int = 0
    generated: int = 0  # by the solver stream itself
    saved: int = 0
    budget_hit: bool = False

    def spend(self, phase: str, turn: Turn) -> None:
        self.tokens[phase] += turn.record.completion_tokens
        self.prompt_tokens[phase] += turn.record.prompt_tokens

    def summary(self) -> dict[str, Any]:
        cue = self.stopped_at
        return {
            "key": self.key,
            "phase": self.phase,
            "stopped": cue is not None,
            "cue": cue.cue if cue else None,
            "position": cue.start if cue else None,
            "generated": self.generated,
            "max_tokens": self.max_tokens,
            "saved": self.saved,
            "probes": len(self.events),
            "answer": extract_answer(self.text) if self.text else None,
        }


class _CueWatch:
    """Finds hesitation cues in a stream's text as it arrives (on the event loop)."""

    def __init__(self, cues: list[str]) -> None:
        self.pattern = roles.cue_pattern(cues)
        self.longest = max((len(cue) for cue in cues), default=0)
        self.text = ""
        self.next_start = 0
        self.found: asyncio.Queue[roles.Cue] = asyncio.Queue()

    def on_text(self, piece: str) -> None:
        before = len(self.text)
        self.text += piece
        # a cue may begin in earlier pieces ("let me" + " check")
        start = max(self.next_start, before - self.longest)
        for cue in roles.find_cues(self.text, self.pattern, start):
            self.found.put_nowait(cue)
            self.next_start = cue.end

    async def next_cue(self, solver: asyncio.Task[Turn]) -> roles.Cue | None:
        """The next cue, or None once the solver has finished (its solution is whole then,
        so the cues still waiting are not worth a probe)."""
        if solver.done():
            return None
        if not self.found.empty():
            return self.found.get_nowait()
        getter = asyncio.ensure_future(self.found.get())
        await asyncio.wait({getter, solver}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        return None


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


async def _probe(
    ctx: RunContext, cfg: SdvConfig, problem: str, text_so_far: str, key: str, round: int
) -> tuple[roles.Detection, Turn]:
    """Ask the solver model whether ``text_so_far`` is a complete solution.

    The turn's key names the text it judged, so a resumed run replays the same probe for the
    same text; the decision is read from the stored parse, since log-probabilities are not
    stored.
    """

    def parse(completion: Completion) -> roles.Detection:
        top = completion.logprobs[0].top if completion.logprobs else None
        return roles.parse_detection(completion.text, top, cfg.detect_threshold)

    turn = await ask(
        ctx,
        DETECTOR,
        roles.detector_messages(problem, text_so_far),
        key=f"{key}/detect@{len(text_so_far)}-{_digest(text_so_far)}",
        node="detect",
        round=round,
        params=SamplingParams(max_tokens=1, temperature=0.0, top_logprobs=cfg.detect_top_logprobs),
        parse_completion=parse,
    )
    return roles.Detection.model_validate(turn.record.parsed or {}), turn


async def stream_with_detection(
    ctx: RunContext,
    cfg: SdvConfig,
    problem: str,
    messages: list[ChatMessage],
    *,
    key: str,
    phase: str,
    round: int,
) -> Stream:
    """Solve with ``messages`` while the detector watches; see the module docstring.

    Probes run one at a time, in the order the cues appear, each on the text up to its cue
    (the research pauses reading the stream while it probes; here the solver goes on, which
    only matters when the answer is Yes: the text after the cue is dropped, its tokens
    counted). Raises BudgetExhausted only when the solver itself cannot start; a budget that
    runs out later ends the stream with what it has.
    """
    stream = Stream(key=key, phase=phase)
    watcher = _CueWatch(cfg.cues if cfg.detect and cfg.max_detects else [])
    # Without detection nothing will stop the solver: a plain call, as other patterns make.
    watch = TextWatch(watcher.on_text) if watcher.pattern is not None else None
    params = SamplingParams(
        max_tokens=cfg.solve_max_tokens, temperature=cfg.temperature, top_p=cfg.top_p
    )
    solver = asyncio.create_task(
        ask(ctx, SOLVER, messages, key=key, node=phase, round=round, params=params, watch=watch)
    )
    probes = 0
    try:
        while watcher.pattern is not None and probes < cfg.max_detects:
            cue = await watcher.next_cue(solver)
            if cue is None:
                break
            probes += 1
            try:
                detection, turn = await _probe(
                    ctx, cfg, problem, watcher.text[: cue.end], key, round
                )
            except BudgetExhausted:
                stream.budget_hit = True
                break
            stream.spend("detect", turn)
            stopped = False
            if detection.complete and watch is not None:
                watch.stop()
                stopped = (await solver).record.finish_reason == "cancelled"
            await _detect_event(ctx, stream, cue, detection, stopped, probes - 1)
            if detection.complete:
                stream.stopped_at = cue if stopped else None
                break
        solved = await solver
    except BaseException:
        if watch is not None:
            watch.stop()  # the solver's turn is still recorded and its tokens counted
        await asyncio.gather(solver, return_exceptions=True)
        raise
    stream.spend(phase, solved)
    stream.max_tokens = int(solved.record.params.get("max_tokens", cfg.solve_max_tokens))
    stream.generated = solved.record.completion_tokens
    if solved.record.finish_reason == "cancelled" and stream.stopped_at is None:
        # A resumed run replays the stopped turn without its pieces: replay its probes (stored
        # by the text they judged) in order to find the cue it was stopped at.
        await _replay_stop(ctx, cfg, problem, stream, solved.text, round)
    stream.text = solved.text
    if stream.stopped_at is not None:
        await _conclude(ctx, cfg, problem, stream, solved, round)
    return stream


async def _replay_stop(
    ctx: RunContext, cfg: SdvConfig, problem: str, stream: Stream, text: str, round: int
) -> None:
    cues = roles.find_cues(text, roles.cue_pattern(cfg.cues))[: cfg.max_detects]
    for number, cue in enumerate(cues):
        try:
            detection, turn = await _probe(ctx, cfg, problem, text[: cue.end], stream.key, round)
        except BudgetExhausted:
            return
        stream.spend("detect", turn)
        await _detect_event(ctx, stream, cue, detection, detection.complete, number)
        if detection.complete:
            stream.stopped_at = cue
            return


async def _conclude(
    ctx: RunContext, cfg: SdvConfig, problem: str, stream: Stream, solved: Turn, round: int
) -> None:
    """The solver, stopped at a cue, states its answer from the text before the cue."""
    assert stream.stopped_at is not None
    partial = solved.text[: stream.stopped_at.start].rstrip()
    try:
        turn = await ask(
            ctx,
            SOLVER,
            roles.conclude_messages(problem, partial),
            key=f"{stream.key}/conclude",
            node="conclude",
            round=round,
            params=SamplingParams(
                max_tokens=cfg.conclude_max_tokens, temperature=cfg.temperature, top_p=cfg.top_p
            ),
        )
    except BudgetExhausted:
        stream.budget_hit = True
        stream.text = partial
        stream.saved = max(0, stream.max_tokens - stream.generated)
        return
    stream.spend(stream.phase, turn)
    stream.text = f"{partial}\n\n{turn.text.strip()}" if partial else turn.text.strip()
    # An upper bound: the stream might have ended on its own before its max_tokens.
    stream.saved = max(0, stream.max_tokens - stream.generated - turn.record.completion_tokens)


async def _detect_event(
    ctx: RunContext,
    stream: Stream,
    cue: roles.Cue,
    detection: roles.Detection,
    stopped: bool,
    number: int,
) -> None:
    event = {
        "by": "detector",
        "phase": stream.phase,
        "stream": stream.key,
        "probe": number,
        "cue": cue.cue,
        "position": cue.start,
        "p_yes": detection.p_yes,
        "answer": detection.answer,
        "source": detection.source,
        "complete": detection.complete,
        "stopped": stopped,
    }
    stream.events.append(event)
    await ctx.recorder.emit(ctx.run_id, "decision", event)


def _stream_update(streams: list[Stream]) -> dict[str, Any]:
    tokens: Counter[str] = Counter()
    prompt_tokens: Counter[str] = Counter()
    tokens["saved_by_early_stop"] = 0
    for stream in streams:
        tokens.update(stream.tokens)
        prompt_tokens.update(stream.prompt_tokens)
        tokens["saved_by_early_stop"] += stream.saved
    return {
        "streams": [stream.summary() for stream in streams],
        "detect_events": [event for stream in streams for event in stream.events],
        "tokens": dict(tokens),
        "prompt_tokens": dict(prompt_tokens),
    }


# --- nodes -------------------------------------------------------------------------------------


async def solve(state: SdvState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    problem = state["problem"]
    try:
        stream = await stream_with_detection(
            ctx, cfg, problem, solver_messages(problem), key="solve", phase="solve", round=0
        )
    except BudgetExhausted:
        return {"solution": "", "stop_reason": "token_budget"}
    update = {"solution": stream.text, **_stream_update([stream])}
    if stream.budget_hit:
        update["stop_reason"] = "token_budget"
    return update


@dataclass
class _Checks:
    """The outcome of k parallel checks of one mode."""

    checks: list[dict[str, Any]]
    texts: list[str]
    tokens: int = 0
    prompt_tokens: int = 0
    budget_hit: bool = False


async def _run_checks(
    ctx: RunContext,
    cfg: SdvConfig,
    state: SdvState,
    paragraphs: list[str],
    mode: Literal["fast", "slow"],
    count: int,
) -> _Checks:
    """``count`` checks at once, each a stored turn with its parsed index. All of them are
    waited for, so a failure or a spent budget leaves no call unrecorded."""
    attempt = state.get("attempt", 0)
    messages = roles.verifier_messages(state["problem"], paragraphs, mode)
    params = SamplingParams(
        max_tokens=cfg.fast_max_tokens if mode == "fast" else cfg.slow_max_tokens,
        temperature=cfg.verify_temperature,
        top_p=cfg.top_p,
    )
    calls = [
        ask(
            ctx,
            verifier_agent(mode, index),
            messages,
            key=f"verify/a{attempt}/{mode}/{index}",
            node=f"verify_{mode}",
            round=attempt,
            params=params,
            parse=lambda text: roles.parse_check(text, len(paragraphs)),
        )
        for index in range(count)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    outcome = _Checks(checks=[], texts=[])
    for index, result in enumerate(results):
        if isinstance(result, BudgetExhausted):
            outcome.budget_hit = True
            continue
        if isinstance(result, BaseException):
            raise result
        check: roles.Check = result.parsed
        outcome.checks.append(
            {"index": index, "first_wrong": check.first_wrong, "parse_ok": check.parse_ok}
        )
        outcome.texts.append(result.text)
        outcome.tokens += result.record.completion_tokens
        outcome.prompt_tokens += result.record.prompt_tokens
    return outcome


def _verdict(
    attempt: int,
    mode: str,
    agreed: roles.Agreement,
    checks: _Checks,
    paragraphs: list[str],
) -> dict[str, Any]:
    """The decided index, with the feedback of one check that gave it (FlexiVe)."""
    text = next(
        (
            text
            for check, text in zip(checks.checks, checks.texts, strict=True)
            if check["first_wrong"] == agreed.first_wrong
        ),
        "",
    )
    return {
        "attempt": attempt,
        "mode": mode,
        "first_wrong": agreed.first_wrong,
        "correct": agreed.first_wrong == -1,
        "agreement": agreed.ratio,
        "feedback": roles.verifier_feedback(agreed.first_wrong, paragraphs, text),
    }


async def verify_fast(state: SdvState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    attempt = state.get("attempt", 0)
    paragraphs = roles.split_paragraphs(state.get("solution", ""), cfg.cues)
    if not paragraphs:  # nothing to verify: as wrong as a solution gets
        verdict = _verdict(attempt, "none", roles.Agreement(), _Checks([], []), paragraphs)
        await _verifier_event(ctx, verdict, fast=[])
        return {**_after_verdict(state, cfg, verdict), "paragraphs": [], "escalate": False}
    fast = await _run_checks(ctx, cfg, state, paragraphs, "fast", cfg.fast_checks)
    update: dict[str, Any] = {
        "paragraphs": paragraphs,
        "fast": fast.checks,
        "tokens": {"fast_verify": fast.tokens},
        "prompt_tokens": {"fast_verify": fast.prompt_tokens},
        "escalate": False,
    }
    if fast.budget_hit:
        return {**update, "stop_reason": "token_budget"}
    agreed = roles.agreement([check["first_wrong"] for check in fast.checks])
    if agreed.ratio < cfg.agreement_threshold:
        return {**update, "escalate": True}
    verdict = _verdict(attempt, "fast", agreed, fast, paragraphs)
    await _verifier_event(ctx, verdict, fast=fast.checks)
    return {**update, **_after_verdict(state, cfg, verdict)}


async def verify_slow(state: SdvState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    attempt = state.get("attempt", 0)
    paragraphs = state["paragraphs"]
    slow = await _run_checks(
        ctx, cfg, state, paragraphs, "slow", roles.slow_check_count(cfg.fast_checks)
    )
    update: dict[str, Any] = {
        "tokens": {"slow_verify": slow.tokens},
        "prompt_tokens": {"slow_verify": slow.prompt_tokens},
    }
    if slow.budget_hit and not slow.checks:
        return {**update, "stop_reason": "token_budget"}
    agreed = roles.agreement([check["first_wrong"] for check in slow.checks])
    fast = state.get("fast", [])
    verdict = _verdict(attempt, "slow", agreed, slow, paragraphs)
    verdict["fast_agreement"] = roles.agreement([c["first_wrong"] for c in fast]).ratio
    await _verifier_event(ctx, verdict, fast=fast, slow=slow.checks)
    update.update(_after_verdict(state, cfg, verdict))
    if slow.budget_hit:
        update.setdefault("stop_reason", "token_budget")
    return update


def _after_verdict(state: SdvState, cfg: SdvConfig, verdict: dict[str, Any]) -> dict[str, Any]:
    update: dict[str, Any] = {"verdict": verdict, "verifications": [verdict]}
    if verdict["correct"]:
        update["stop_reason"] = "verified"
    elif state.get("attempt", 0) >= cfg.refine_rounds:
        update["stop_reason"] = "found_wrong"
    return update


async def _verifier_event(
    ctx: RunContext,
    verdict: dict[str, Any],
    *,
    fast: list[dict[str, Any]],
    slow: list[dict[str, Any]] | None = None,
) -> None:
    event = {
        "by": "verifier",
        "attempt": verdict["attempt"],
        "mode": verdict["mode"],
        "agreement": verdict["agreement"],
        "first_wrong": verdict["first_wrong"],
        "correct": verdict["correct"],
        "fast_checks": [check["first_wrong"] for check in fast],
    }
    if slow is not None:
        event["fast_agreement"] = verdict.get("fast_agreement")
        event["slow_checks"] = [check["first_wrong"] for check in slow]
    await ctx.recorder.emit(ctx.run_id, "decision", event)


async def refine(state: SdvState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Best-of-n refinements at once, each streamed with detection; the first candidate
    with the majority answer becomes the solution (FlexiVe)."""
    ctx, cfg = runtime.context, runtime.context.config
    attempt = state.get("attempt", 0)
    messages = roles.refine_messages(
        state["problem"], state.get("solution", ""), state["verdict"]["feedback"]
    )
    runs = [
        stream_with_detection(
            ctx,
            cfg,
            state["problem"],
            messages,
            key=f"refine/a{attempt}/c{index}",
            phase="refine",
            round=attempt + 1,
        )
        for index in range(cfg.refine_candidates)
    ]
    results = await asyncio.gather(*runs, return_exceptions=True)
    failure = next(
        (r for r in results if isinstance(r, BaseException) and not isinstance(r, BudgetExhausted)),
        None,
    )
    if failure is not None:
        raise failure
    streams = [result for result in results if isinstance(result, Stream)]
    budget_hit = len(streams) < len(results) or any(stream.budget_hit for stream in streams)
    answers = [extract_answer(stream.text) if stream.text else None for stream in streams]
    answer, votes = majority_answer(answers)
    chosen = next(
        (
            index
            for index, candidate in enumerate(answers)
            if answer is not None
            and candidate is not None
            and normalize_answer(candidate) == normalize_answer(answer)
        ),
        0 if streams else None,
    )
    refinement = {
        "attempt": attempt + 1,
        "candidates": len(streams),
        "answers": answers,
        "answer": answer,
        "votes": votes,
        "chosen": chosen,
    }
    await ctx.recorder.emit(ctx.run_id, "decision", {"by": "refine", **refinement})
    update: dict[str, Any] = {
        **_stream_update(streams),
        "attempt": attempt + 1,
        "refinements": [refinement],
    }
    if chosen is not None:
        update["solution"] = streams[chosen].text
    if budget_hit:
        update["stop_reason"] = "token_budget"
    elif attempt + 1 >= cfg.refine_rounds:
        update["stop_reason"] = "refined"
    return update


async def finalize(state: SdvState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    solution = state.get("solution") or ""
    answer = extract_answer(solution) if solution else None
    spent = state.get("tokens", {})
    tokens = {phase: spent.get(phase, 0) for phase in PHASES}
    tokens["saved_by_early_stop"] = spent.get("saved_by_early_stop", 0)
    streams = state.get("streams", [])
    accounting: dict[str, Any] = {
        "tokens": tokens,
        "total_tokens": sum(tokens[phase] for phase in PHASES),
        "prompt_tokens": {phase: state.get("prompt_tokens", {}).get(phase, 0) for phase in PHASES},
        "probes": len(state.get("detect_events", [])),
        "early_stops": sum(stream["stopped"] for stream in streams),
        "streams": streams,
        "verifications": state.get("verifications", []),
        "refinements": state.get("attempt", 0),
    }
    if cfg.reference_answer is not None:
        accounting["correct"] = answers_match(answer, cfg.reference_answer).correct
        accounting["streams"] = [
            {**stream, "correct": answers_match(stream["answer"], cfg.reference_answer).correct}
            for stream in streams
        ]
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {
            "by": "sdv",
            "answer": answer,
            "stop_reason": state.get("stop_reason"),
            **{key: value for key, value in accounting.items() if key != "streams"},
        },
    )
    return {"answer": answer, "accounting": accounting}


# --- wiring ------------------------------------------------------------------------------------


def after_solve(state: SdvState) -> str:
    return "finalize" if state.get("stop_reason") else "verify_fast"


def after_fast(state: SdvState) -> str:
    if state.get("stop_reason"):
        return "finalize"
    return "verify_slow" if state.get("escalate") else "refine"


def after_slow(state: SdvState) -> str:
    return "finalize" if state.get("stop_reason") else "refine"


def after_refine(state: SdvState) -> str:
    return "finalize" if state.get("stop_reason") else "verify_fast"


def build_graph() -> StateGraph:
    graph = StateGraph(SdvState, context_schema=RunContext)
    graph.add_node("solve", solve)
    graph.add_node("verify_fast", verify_fast)
    graph.add_node("verify_slow", verify_slow)
    graph.add_node("refine", refine)
    graph.add_node("finalize", finalize)

    graph.add_edge(START, "solve")
    graph.add_conditional_edges("solve", after_solve, ["verify_fast", "finalize"])
    graph.add_conditional_edges("verify_fast", after_fast, ["verify_slow", "refine", "finalize"])
    graph.add_conditional_edges("verify_slow", after_slow, ["refine", "finalize"])
    graph.add_conditional_edges("refine", after_refine, ["verify_fast", "finalize"])
    graph.add_edge("finalize", END)
    return graph


def initial_state(problem: str, config: SdvConfig) -> SdvState:
    return SdvState(problem=problem, attempt=0)


def recursion_limit(config: SdvConfig) -> int:
    return 3 * (config.refine_rounds + 1) + 10
