"""RLAD: abstractions first, then solutions conditioned on each (arXiv 2510.02263).

plan (K and M, given or split from a budget) -> propose (one ``Send`` per abstraction: the
abstraction player is sampled K times at once on one single-abstraction prompt, each sample its
own seed and its own stored turn, as the paper samples z ~ pi_abs(z|x)) -> leak_filter (drops
any that give the answer away) -> solve (one ``Send`` per abstraction and sample: K x M
solution-player calls at once, plus M with no abstraction as the baseline) -> vote (majority
over every solution) -> verify (optional: the verifier picks among the distinct answers) ->
score (with a reference answer, each solution's 0/1 reward, each abstraction's mean reward and
its improvement over the baseline; every abstraction is stored as an ``RladAbstraction``
record, rewards or not). Each abstraction is thus exactly one sampled turn, which the
abstraction player's training data is made of (on-policy), not a piece of a longer reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from agents.calls import Agent, BudgetExhausted, RunContext, ask
from agents.model import SamplingParams
from graphs.common import MAX_ANSWER_CHARS, MAX_CALL_TOKENS, PatternConfig, first_reason
from roles import rlad as roles
from roles.answers import extract_answer, majority_answer, normalize_answer, shared_text

MAX_ABSTRACTIONS = 16


class RladConfig(PatternConfig):
    """K abstractions x M solutions each, given directly or split from a total budget.

    Defaults are sized for the small local model; the paper trains with K=4, M=16 and lets
    solutions think for up to 32K tokens.
    """

    # what _total_alone checks, so that the JSON schema admits only what it accepts
    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "properties": {"total_solutions": {"type": "integer"}},
                "required": ["total_solutions"],
            },
            "then": {
                "properties": {
                    "abstractions": {"type": "null"},
                    "solutions_per_abstraction": {"type": "null"},
                }
            },
        }
    )

    abstractions: int | None = Field(
        None,
        ge=1,
        le=MAX_ABSTRACTIONS,
        description="K, abstractions to propose (null: 4, or split from total_solutions)",
    )
    solutions_per_abstraction: int | None = Field(
        None,
        ge=1,
        le=64,
        description="M, solutions per abstraction (null: 2, or split from total_solutions)",
    )
    total_solutions: int | None = Field(
        None,
        ge=1,
        le=MAX_ABSTRACTIONS * 64,
        description="budget mode: split this many solutions into K x M (more abstractions "
        "first at large budgets); the baseline's M solutions come on top",
    )
    baseline: bool | None = Field(
        None,
        description="also solve M times with no abstraction (null: exactly when "
        "reference_answer is given, since improvements need it)",
    )
    reference_answer: str | None = Field(
        None,
        max_length=MAX_ANSWER_CHARS,
        description="the known answer: enables rewards and the reference leak check",
    )
    use_verifier: bool = Field(
        False, description="the verifier picks the final answer among the candidates"
    )
    abstraction_max_tokens: int = Field(
        256, ge=8, le=MAX_CALL_TOKENS, description="budget of each abstraction sample"
    )
    # Its own knob, not the run's temperature: the K abstractions are independent samples of
    # one prompt, so at temperature 0 they would be one abstraction K times.
    abstraction_temperature: float = Field(
        0.7,
        gt=0.0,
        le=2.0,
        description="sampling temperature of the K abstraction samples (with top_p; 0.7 and "
        "0.95 are what RLAD's abstraction sampling uses)",
    )
    solution_max_tokens: int = Field(
        256, ge=8, le=MAX_CALL_TOKENS, description="budget of each solution"
    )
    verifier_max_tokens: int = Field(
        128, ge=8, le=MAX_CALL_TOKENS, description="budget of the verifier call"
    )
    verifier_candidates: int = Field(
        4, ge=2, le=16, description="most distinct answers (by votes) the verifier sees"
    )

    @field_validator("total_solutions")
    @classmethod
    def _total_alone(cls, total: int | None, info: ValidationInfo) -> int | None:
        given = [
            name
            for name in ("abstractions", "solutions_per_abstraction")
            if info.data.get(name) is not None
        ]
        if total is not None and given:
            raise ValueError(
                f"total_solutions cannot be combined with {' or '.join(given)}: give the "
                "total for the pattern to split, or the split itself"
            )
        return total

    def plan(self) -> roles.SolutionPlan:
        if self.total_solutions is not None:
            return roles.split_budget(self.total_solutions, max_abstractions=MAX_ABSTRACTIONS)
        return roles.SolutionPlan(
            abstractions=self.abstractions or 4,
            solutions_per_abstraction=self.solutions_per_abstraction or 2,
            rule="given",
        )

    @property
    def runs_baseline(self) -> bool:
        return self.baseline if self.baseline is not None else self.reference_answer is not None


class RladState(TypedDict, total=False):
    problem: str
    plan: dict[str, Any]
    seed: int
    abstractions: Annotated[list[dict[str, Any]], operator.add]
    baseline: bool
    solutions: Annotated[list[dict[str, Any]], operator.add]
    answer: str | None
    votes: int
    verify: bool
    stop_reason: Annotated[str | None, first_reason]


class ProposePacket(TypedDict):
    """The private input of one abstraction sample."""

    problem: str
    index: int
    seed: int


class SolvePacket(TypedDict):
    """The private input of one parallel solution call."""

    problem: str
    abstraction_index: int | None
    abstraction: str | None
    sample: int


VERIFIER = Agent("Verifier", "verifier", "verifier")


def abstraction_player(index: int) -> Agent:
    return Agent(f"Abstraction player (sample {index})", "abstraction_player", "abstraction")


def abstraction_key(index: int) -> str:
    """The key of abstraction ``index``'s turn and of its ``RladAbstraction`` record alike."""
    return f"abstraction/{index}"


def run_seed(run_id: str) -> int:
    """The seed of a run's first abstraction sample (sample k uses it + k): fixed by the run,
    so runs differ from one another and a rerun of the same run samples the same."""
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:7], 16)


def solution_player(index: int | None, sample: int) -> Agent:
    branch = "baseline" if index is None else f"abstraction {index}"
    return Agent(f"Solution player ({branch}, sample {sample})", "solution_player", "policy")


def solution_key(index: int | None, sample: int) -> str:
    return f"baseline/{sample}" if index is None else f"solve/{index}/{sample}"


def _params(cfg: RladConfig, max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=cfg.temperature, top_p=cfg.top_p)


def _in_order(solutions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Abstraction branches by index and sample, the baseline last: ties in the vote go to
    the first answer seen, so the order must not depend on which call finished first."""
    return sorted(
        solutions,
        key=lambda s: (s["abstraction_index"] is None, s["abstraction_index"] or 0, s["sample"]),
    )


# --- nodes -------------------------------------------------------------------------------


async def plan(state: RladState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    split = cfg.plan()
    await ctx.recorder.emit(ctx.run_id, "decision", {"by": "split", **split.model_dump()})
    return {"plan": split.model_dump(), "seed": run_seed(ctx.run_id), "baseline": False}


def fan_out_abstractions(state: RladState) -> list[Send]:
    """One ``Send`` per abstraction sample: K calls of the same prompt at once."""
    return [
        Send("propose", ProposePacket(problem=state["problem"], index=k, seed=state["seed"] + k))
        for k in range(state["plan"]["abstractions"])
    ]


async def propose(packet: ProposePacket, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    index = packet["index"]
    # Distinct seeds keep the K samples apart on every backend. (The transformers engine
    # batches a seeded request only with its own seed, so there the K run one after another;
    # llama.cpp, vLLM and OpenAI-compatible servers seed each request apart in one batch.)
    params = SamplingParams(
        max_tokens=cfg.abstraction_max_tokens,
        temperature=cfg.abstraction_temperature,
        top_p=cfg.top_p,
        seed=packet["seed"],
    )
    try:
        turn = await ask(
            ctx,
            abstraction_player(index),
            roles.abstraction_messages(packet["problem"]),
            key=abstraction_key(index),
            node="propose",
            params=params,
            parse=roles.parse_abstraction,
        )
    except BudgetExhausted:
        return {"stop_reason": "token_budget"}
    text = turn.parsed.abstraction
    # The whole visible reply is checked, not only the abstraction read from it: the reply is
    # what the player is trained on, and an answer beside the abstraction must not earn reward.
    leak = roles.check_leak(shared_text(turn.text), cfg.reference_answer) if text else None
    return {
        "abstractions": [
            {
                "index": index,
                "text": text,
                "leaked": leak is not None and leak.leaked,
                "leak_reason": leak.reason if leak is not None else None,
                "model": turn.record.model,
                "adapter": turn.record.adapter,
            }
        ]
    }


def _proposed(state: RladState) -> list[dict[str, Any]]:
    """The abstractions by sample index (not by which call finished first), unreadable
    replies (no abstraction in them) left out."""
    return sorted(
        (a for a in state.get("abstractions", []) if a["text"] is not None),
        key=lambda a: a["index"],
    )


async def leak_filter(state: RladState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    abstractions = _proposed(state)
    kept = [a["index"] for a in abstractions if not a["leaked"]]
    # With nothing left to condition on, the bare problem still gets its M solutions, so the
    # run answers instead of ending empty.
    baseline = cfg.runs_baseline or not kept
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {
            "by": "leak_filter",
            "proposed": len(abstractions),
            "kept": kept,
            "dropped": [
                {"index": a["index"], "reason": a["leak_reason"]}
                for a in abstractions
                if a["leaked"]
            ],
            "unreadable": sorted(
                a["index"] for a in state.get("abstractions", []) if a["text"] is None
            ),
            "baseline": baseline,
        },
    )
    return {"baseline": baseline}


def fan_out_solutions(state: RladState) -> list[Send]:
    """One ``Send`` per (abstraction, sample) and per baseline sample: all run at once.

    An abstraction sample that found the budget spent leaves the others standing: they are
    solved with whatever the budget has left, each solution reserving its own tokens."""
    samples = state["plan"]["solutions_per_abstraction"]
    branches: list[tuple[int | None, str | None]] = [
        (a["index"], a["text"]) for a in _proposed(state) if not a["leaked"]
    ]
    if state["baseline"]:
        branches.append((None, None))
    return [
        Send(
            "solve",
            SolvePacket(
                problem=state["problem"], abstraction_index=index, abstraction=text, sample=m
            ),
        )
        for index, text in branches
        for m in range(samples)
    ]


async def solve(packet: SolvePacket, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    index, sample = packet["abstraction_index"], packet["sample"]
    try:
        turn = await ask(
            ctx,
            solution_player(index, sample),
            roles.solution_messages(packet["problem"], packet["abstraction"]),
            key=solution_key(index, sample),
            node="solve",
            params=_params(cfg, cfg.solution_max_tokens),
        )
    except BudgetExhausted:
        return {"stop_reason": "token_budget"}
    record = turn.record
    return {
        "solutions": [
            {
                "key": record.key,
                "abstraction_index": index,
                "sample": sample,
                "text": shared_text(turn.text),
                "answer": extract_answer(turn.text),
                "completion_tokens": record.completion_tokens,
                "finish_reason": record.finish_reason,
                "model": record.model,
                "adapter": record.adapter,
            }
        ]
    }


async def vote(state: RladState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    solutions = _in_order(state.get("solutions", []))
    answer, votes = majority_answer(s["answer"] for s in solutions)
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {"by": "vote", "answer": answer, "votes": votes, "samples": len(solutions), "cancelled": 0},
    )
    # One distinct answer leaves the verifier nothing to choose.
    verify = cfg.use_verifier and len(candidates(solutions, 2)) > 1
    return {"answer": answer, "votes": votes, "verify": verify, "stop_reason": "all_solutions"}


def candidates(solutions: list[dict[str, Any]], limit: int) -> list[roles.Candidate]:
    """Distinct answers by votes (first seen wins ties), each with the first solution to it."""
    grouped: dict[str, roles.Candidate] = {}
    for s in _in_order(solutions):
        if s["answer"] is None:
            continue
        key = normalize_answer(s["answer"])
        if key in grouped:
            grouped[key].votes += 1
        else:
            grouped[key] = roles.Candidate(answer=s["answer"], votes=1, solution=s["text"])
    return sorted(grouped.values(), key=lambda c: -c.votes)[:limit]


def after_vote(state: RladState) -> str:
    return "verify" if state.get("verify") else "score"


async def verify(state: RladState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    solutions = state.get("solutions", [])
    options = candidates(solutions, cfg.verifier_candidates)
    try:
        turn = await ask(
            ctx,
            VERIFIER,
            roles.verifier_messages(state["problem"], options, len(solutions)),
            key="verify",
            node="verify",
            params=_params(cfg, cfg.verifier_max_tokens),
            parse=lambda text: roles.parse_verifier_choice(text, len(options)),
        )
    except BudgetExhausted:
        return {"stop_reason": "token_budget"}
    choice: roles.VerifierChoice = turn.parsed
    # An unreadable pick leaves the majority's answer standing.
    answer = options[choice.choice - 1].answer if choice.choice else state.get("answer")
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {
            "by": "verifier",
            "candidates": [c.answer for c in options],
            "choice": choice.choice,
            "answer": answer,
            "parse_ok": choice.parse_ok,
            "parse_error": choice.parse_error,
        },
    )
    return {"answer": answer}


async def score(state: RladState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Reward every solution and abstraction (with a reference) and store the records."""
    ctx, cfg = runtime.context, runtime.context.config
    reference = cfg.reference_answer
    by_branch: dict[int | None, list[roles.RladSolution]] = {}
    for s in _in_order(state.get("solutions", [])):
        solution = roles.RladSolution(
            key=s["key"],
            sample=s["sample"],
            answer=s["answer"],
            completion_tokens=s["completion_tokens"],
            finish_reason=s["finish_reason"],
            model=s["model"],
            adapter=s["adapter"],
        )
        if reference is not None:
            solution.reward, solution.check = roles.solution_reward(s["answer"], reference)
            solution.correct = solution.reward == 1.0
        by_branch.setdefault(s["abstraction_index"], []).append(solution)

    def reward_of(branch: int | None) -> float | None:
        if reference is None:
            return None
        return roles.abstraction_reward([s.reward or 0.0 for s in by_branch.get(branch, [])])

    baseline_reward = reward_of(None)
    records = [
        roles.RladAbstraction(
            key=abstraction_key(a["index"]),
            problem=state["problem"],
            abstraction_index=a["index"],
            abstraction=a["text"],
            generator_model=a["model"],
            generator_adapter=a["adapter"],
            leaked=a["leaked"],
            leak_reason=a["leak_reason"],
            solutions=by_branch.get(a["index"], []),
            reference_answer=reference,
            reward=reward_of(a["index"]),
            baseline_reward=baseline_reward,
            improvement=roles.improvement(reward_of(a["index"]), baseline_reward),
        )
        for a in _proposed(state)
    ]
    if state.get("baseline"):
        records.append(
            roles.RladAbstraction(
                key="baseline",
                problem=state["problem"],
                abstraction_index=None,
                abstraction=None,
                solutions=by_branch.get(None, []),
                reference_answer=reference,
                reward=baseline_reward,
                baseline_reward=baseline_reward,
            )
        )
    # at once, so the store commits them in one transaction
    await asyncio.gather(*(ctx.recorder.record_outcome(ctx.run_id, r) for r in records))
    if reference is not None:
        await ctx.recorder.emit(
            ctx.run_id,
            "decision",
            {
                "by": "rewards",
                "baseline_reward": baseline_reward,
                "abstractions": [
                    {"index": r.abstraction_index, "reward": r.reward, "improvement": r.improvement}
                    for r in records
                    if r.abstraction_index is not None
                ],
            },
        )
    return {}


def build_graph() -> StateGraph:
    graph = StateGraph(RladState, context_schema=RunContext)
    graph.add_node("plan", plan)
    graph.add_node("propose", propose)
    graph.add_node("leak_filter", leak_filter)
    graph.add_node("solve", solve)
    graph.add_node("vote", vote)
    graph.add_node("verify", verify)
    graph.add_node("score", score)

    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", fan_out_abstractions, ["propose"])
    graph.add_edge("propose", "leak_filter")
    graph.add_conditional_edges("leak_filter", fan_out_solutions, ["solve"])
    graph.add_edge("solve", "vote")
    graph.add_conditional_edges("vote", after_vote, ["verify", "score"])
    graph.add_edge("verify", "score")
    graph.add_edge("score", END)
    return graph


def initial_state(problem: str, config: RladConfig) -> RladState:
    return RladState(problem=problem)


def recursion_limit(config: RladConfig) -> int:
    return 10
