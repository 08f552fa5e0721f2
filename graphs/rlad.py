"""RLAD: abstractions first, then solutions conditioned on each (arXiv 2510.02263).

propose (the abstraction player writes K abstractions; the leak filter drops any that give the
answer away) -> solve (one ``Send`` per abstraction and sample: K x M solution-player calls at
once, plus M with no abstraction as the baseline) -> vote (majority over every solution) ->
verify (optional: the verifier picks among the distinct answers) -> score (with a reference
answer, each solution's 0/1 reward, each abstraction's mean reward and its improvement over the
baseline; every abstraction is stored as an ``RladAbstraction`` record, rewards or not).
"""

from __future__ import annotations

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
        256, ge=8, le=MAX_CALL_TOKENS, description="budget of the abstraction call"
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
    abstractions: list[dict[str, Any]]
    generator: dict[str, Any]
    baseline: bool
    solutions: Annotated[list[dict[str, Any]], operator.add]
    answer: str | None
    votes: int
    verify: bool
    stop_reason: Annotated[str | None, first_reason]


class SolvePacket(TypedDict):
    """The private input of one parallel solution call."""

    problem: str
    abstraction_index: int | None
    abstraction: str | None
    sample: int


ABSTRACTION_PLAYER = Agent("Abstraction player", "abstraction_player", "abstraction")
VERIFIER = Agent("Verifier", "verifier", "verifier")


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


async def propose(state: RladState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    plan = cfg.plan()
    await ctx.recorder.emit(ctx.run_id, "decision", {"by": "split", **plan.model_dump()})
    update: dict[str, Any] = {"plan": plan.model_dump(), "abstractions": [], "baseline": False}
    try:
        turn = await ask(
            ctx,
            ABSTRACTION_PLAYER,
            roles.abstraction_messages(state["problem"], plan.abstractions),
            key="abstractions",
            node="propose",
            params=_params(cfg, cfg.abstraction_max_tokens),
            parse=lambda text: roles.parse_abstractions(text, plan.abstractions),
        )
    except BudgetExhausted:
        return {**update, "stop_reason": "token_budget"}
    abstractions = []
    for index, text in enumerate(turn.parsed.abstractions):
        leak = roles.check_leak(text, cfg.reference_answer)
        abstractions.append(
            {"index": index, "text": text, "leaked": leak.leaked, "leak_reason": leak.reason}
        )
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
            "baseline": baseline,
        },
    )
    return {
        **update,
        "abstractions": abstractions,
        "generator": {"model": turn.record.model, "adapter": turn.record.adapter},
        "baseline": baseline,
    }


def fan_out_solutions(state: RladState) -> list[Send] | str:
    """One ``Send`` per (abstraction, sample) and per baseline sample: all run at once."""
    if state.get("stop_reason"):
        return "vote"
    samples = state["plan"]["solutions_per_abstraction"]
    branches: list[tuple[int | None, str | None]] = [
        (a["index"], a["text"]) for a in state["abstractions"] if not a["leaked"]
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
    generator = state.get("generator", {})
    records = [
        roles.RladAbstraction(
            key=f"abstraction/{a['index']}",
            problem=state["problem"],
            abstraction_index=a["index"],
            abstraction=a["text"],
            generator_model=generator.get("model"),
            generator_adapter=generator.get("adapter"),
            leaked=a["leaked"],
            leak_reason=a["leak_reason"],
            solutions=by_branch.get(a["index"], []),
            reference_answer=reference,
            reward=reward_of(a["index"]),
            baseline_reward=baseline_reward,
            improvement=roles.improvement(reward_of(a["index"]), baseline_reward),
        )
        for a in state.get("abstractions", [])
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
    for record in records:
        await ctx.recorder.record_outcome(ctx.run_id, record)
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
    graph.add_node("propose", propose)
    graph.add_node("solve", solve)
    graph.add_node("vote", vote)
    graph.add_node("verify", verify)
    graph.add_node("score", score)

    graph.add_edge(START, "propose")
    graph.add_conditional_edges("propose", fan_out_solutions, ["solve", "vote"])
    graph.add_edge("solve", "vote")
    graph.add_conditional_edges("vote", after_vote, ["verify", "score"])
    graph.add_edge("verify", "score")
    graph.add_edge("score", END)
    return graph


def initial_state(problem: str, config: RladConfig) -> RladState:
    return RladState(problem=problem)


def recursion_limit(config: RladConfig) -> int:
    return 10
