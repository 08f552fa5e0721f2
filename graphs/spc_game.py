"""One SPC self-play game between a sneaky generator and a step critic.

Take a correct solution (given, or generated and checked against the reference answer) -> pick
one of its steps that computes -> the sneaky generator rewrites that step into a subtly wrong
one and names the error type -> validity check: the solver completes the solution N times from
the original prefix and N times from the sneaky one, all at once; the rewrite is a real error
only if the original succeeds often enough (paper: >= 75%) and the sneaky one (almost) never
(paper: 0%) -> the critic judges the sneaky step and, as the paired sample, the untouched
original step, both at once -> the game is scored (critic +1 / sneaky -1 when the error is
caught, the reverse when the critic is fooled, sneaky -1 for an invalid rewrite; a verdict still
unreadable after one re-ask is its own result, see ``roles.spc.GAME_REWARDS``) and stored as an
``SpcGame``. A run that cannot finish a game (no correct solution, the budget) ends with that
stop reason and no record: a half-played game would teach nothing.

The sneaky generator and the critic are logical model names, so a campaign can pair the
round-k generator with the round-(k-1) critic (the paper's "balancing game") in the model map.
"""

from __future__ import annotations

import asyncio
import random
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import Field

from agents.calls import Agent, BudgetExhausted, RunContext, Turn, ask
from agents.model import SamplingParams
from graphs.common import (
    MAX_ANSWER_CHARS,
    MAX_CALL_TOKENS,
    MAX_NAME_CHARS,
    MAX_SOLUTION_CHARS,
    MAX_STEPS,
    PatternConfig,
    first_reason,
)
from graphs.spc_search import judge_step
from roles import spc as roles
from roles.answers import extract_answer
from roles.checking import answers_match


class SpcGameConfig(PatternConfig):
    """One game; the problem is the run's problem, its reference answer is required."""

    reference_answer: str = Field(
        min_length=1,
        max_length=MAX_ANSWER_CHARS,
        description="the problem's correct final answer (judges every solution)",
    )
    solution: str | None = Field(
        None,
        max_length=MAX_SOLUTION_CHARS,
        description="a correct solution to play on (default: generate and check one)",
    )
    solution_attempts: int = Field(
        4, ge=1, le=64, description="solutions generated before giving up on finding a correct one"
    )
    step_index: int | None = Field(
        None,
        ge=0,
        le=MAX_STEPS,
        description=(
            "0-based step to rewrite (default: a random step that computes; past the end: the last)"
        ),
    )
    rollouts: int = Field(
        8, ge=1, le=64, description="completions per prefix in the validity check (N)"
    )
    min_original_success: float = Field(
        0.75, ge=0.0, le=1.0, description="success rate the original prefix needs (paper: 0.75)"
    )
    max_sneaky_success: float = Field(
        0.0, ge=0.0, le=1.0, description="success rate the sneaky prefix may have (paper: 0)"
    )
    round: int = Field(0, ge=0, le=100_000, description="the campaign round this game belongs to")
    solver_model: str = Field(
        "policy", max_length=MAX_NAME_CHARS, description="logical model name of the solver"
    )
    sneaky_model: str = Field(
        "sneaky",
        max_length=MAX_NAME_CHARS,
        description="logical model name of the sneaky generator",
    )
    critic_model: str = Field(
        "critic", max_length=MAX_NAME_CHARS, description="logical model name of the critic"
    )
    solution_max_tokens: int = Field(
        512, ge=8, le=MAX_CALL_TOKENS, description="budget of each generated solution"
    )
    sneaky_max_tokens: int = Field(
        256, ge=8, le=MAX_CALL_TOKENS, description="budget of the sneaky generator's call"
    )
    rollout_max_tokens: int = Field(
        384, ge=8, le=MAX_CALL_TOKENS, description="budget of each validity roll-out"
    )
    critic_max_tokens: int = Field(
        512, ge=8, le=MAX_CALL_TOKENS, description="budget of each critic call"
    )
    critic_temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="the critic's sampling temperature (paper: greedy)"
    )
    token_budget: int | None = Field(
        16000,
        ge=16,
        le=10_000_000,
        description="generated tokens the whole run may spend, all agents together (null: no cap)",
    )


class SpcGameState(TypedDict, total=False):
    problem: str
    solution: str
    solution_source: str
    solver_model: str
    steps: list[str]
    step_index: int
    rewrite: dict[str, Any]
    validity: dict[str, Any]
    judgements: dict[str, dict[str, Any]]
    game: dict[str, Any]
    answer: str | None
    stop_reason: Annotated[str | None, first_reason]


def solver_agent(cfg: SpcGameConfig, name: str = "Solver") -> Agent:
    return Agent(name, "solver", cfg.solver_model)


def sneaky_agent(cfg: SpcGameConfig) -> Agent:
    return Agent("Sneaky Generator", "sneaky_generator", cfg.sneaky_model)


def critic_agent(cfg: SpcGameConfig) -> Agent:
    return Agent("Critic", "critic", cfg.critic_model)


def _prefix(state: SpcGameState) -> list[str]:
    return state["steps"][: state["step_index"]]


# --- nodes -------------------------------------------------------------------------------


async def prepare_solution(state: SpcGameState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """The first generated solution whose answer is the reference (a given one skips this)."""
    ctx, cfg = runtime.context, runtime.context.config
    params = SamplingParams(
        max_tokens=cfg.solution_max_tokens, temperature=cfg.temperature, top_p=cfg.top_p
    )
    for attempt in range(cfg.solution_attempts):
        try:
            turn = await ask(
                ctx,
                solver_agent(cfg),
                roles.solution_messages(state["problem"]),
                key=f"solution/{attempt}",
                node="prepare_solution",
                round=cfg.round,
                params=params,
            )
        except BudgetExhausted:
            return {"stop_reason": "token_budget"}
        answer = extract_answer(turn.text)
        check = answers_match(answer, cfg.reference_answer)
        await ctx.recorder.emit(
            ctx.run_id,
            "decision",
            {
                "by": "checker",
                "attempt": attempt,
                "answer": answer,
                "correct": check.correct,
                "reason": check.reason,
            },
        )
        if check.correct and roles.split_steps(turn.text):
            return {
                "solution": turn.text,
                "solution_source": "generated",
                "solver_model": turn.record.model,
            }
    return {"stop_reason": "no_correct_solution"}


async def pick_step(state: SpcGameState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    steps = roles.split_steps(state["solution"])
    if not steps:
        return {"stop_reason": "empty_solution"}
    if cfg.step_index is not None:
        index = min(cfg.step_index, len(steps) - 1)
    else:
        # Seeded by the run, so a resumed run picks the same step; among the steps that
        # compute (see roles.spc.rewritable_steps for why not any step, as the paper does).
        index = random.Random(ctx.run_id).choice(roles.rewritable_steps(steps))
    return {"steps": steps, "step_index": index}


async def sneaky_rewrite(state: SpcGameState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    original = state["steps"][state["step_index"]]
    params = SamplingParams(
        max_tokens=cfg.sneaky_max_tokens, temperature=cfg.temperature, top_p=cfg.top_p
    )
    try:
        turn = await ask(
            ctx,
            sneaky_agent(cfg),
            roles.sneaky_messages(state["problem"], _prefix(state), original),
            key="sneaky",
            node="sneaky_rewrite",
            round=cfg.round,
            params=params,
            parse=lambda text: roles.parse_sneaky_rewrite(text, original),
        )
    except BudgetExhausted:
        return {"stop_reason": "token_budget"}
    rewrite: roles.SneakyRewrite = turn.parsed
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {
            "by": "sneaky_generator",
            "step_index": state["step_index"],
            "steps": len(state["steps"]),
            "usable": rewrite.step is not None,
            "error_type": rewrite.error_type,
            "parse_error": rewrite.parse_error,
        },
    )
    return {
        "rewrite": {
            **rewrite.model_dump(),
            "model": turn.record.model,
            "adapter": turn.record.adapter,
            "turn": turn.record.key,
        }
    }


async def validate(state: SpcGameState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """2N completions at once: N from the original step, N from the sneaky one."""
    ctx, cfg = runtime.context, runtime.context.config
    needed = 2 * cfg.rollouts * cfg.rollout_max_tokens
    remaining = ctx.budget.remaining
    # A roll-out cut short by the budget would read as a failure and skew the check, so the
    # check runs only when every roll-out can have its full budget.
    if not ctx.resuming and remaining is not None and remaining < needed:
        return {"stop_reason": "token_budget"}
    prefix = _prefix(state)
    branches = {
        "original": [*prefix, state["steps"][state["step_index"]]],
        "sneaky": [*prefix, state["rewrite"]["step"]],
    }
    params = SamplingParams(
        max_tokens=cfg.rollout_max_tokens, temperature=cfg.temperature, top_p=cfg.top_p
    )

    async def rollout(branch: str, index: int) -> Turn:
        return await ask(
            ctx,
            solver_agent(cfg, f"Solver ({branch} roll-out {index})"),
            roles.continue_messages(state["problem"], branches[branch]),
            key=f"rollout/{branch}/{index}",
            node="validate",
            round=cfg.round,
            params=params,
        )

    jobs = [(branch, i) for branch in branches for i in range(cfg.rollouts)]
    results = await asyncio.gather(*(rollout(b, i) for b, i in jobs), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, BudgetExhausted):
            raise result
    turns = [r for r in results if isinstance(r, Turn)]
    cut = len(turns) < len(results) or any(
        t.record.params.get("max_tokens", 0) < cfg.rollout_max_tokens for t in turns
    )
    if cut:
        return {"stop_reason": "token_budget"}
    answers: dict[str, list[str | None]] = {"original": [], "sneaky": []}
    for (branch, _), turn in zip(jobs, results, strict=True):
        answers[branch].append(roles.completed_answer(branches[branch], turn.text))
    validity = roles.check_validity(
        answers["original"],
        answers["sneaky"],
        cfg.reference_answer,
        min_original_success=cfg.min_original_success,
        max_sneaky_success=cfg.max_sneaky_success,
    )
    await ctx.recorder.emit(ctx.run_id, "decision", {"by": "validity", **validity.model_dump()})
    return {
        "validity": {
            **validity.model_dump(),
            "original_answers": answers["original"],
            "sneaky_answers": answers["sneaky"],
        }
    }


async def critic_judge(state: SpcGameState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """The critic judges the sneaky step and the original step (the paired sample) at once."""
    ctx, cfg = runtime.context, runtime.context.config
    prefix = _prefix(state)
    params = SamplingParams(
        max_tokens=cfg.critic_max_tokens, temperature=cfg.critic_temperature, top_p=cfg.top_p
    )
    targets = {"sneaky": state["rewrite"]["step"], "original": state["steps"][state["step_index"]]}
    results = await asyncio.gather(
        *(
            judge_step(
                ctx,
                critic_agent(cfg),
                state["problem"],
                prefix,
                step,
                key=f"critic/{target}",
                node="critic_judge",
                round=cfg.round,
                params=params,
            )
            for target, step in targets.items()
        ),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, BudgetExhausted):
            raise result
    if any(isinstance(r, BudgetExhausted) for r in results):
        return {"stop_reason": "token_budget"}
    judgements = {
        target: {
            "judged_as": verdict.judged_as,
            "turn": turn.record.key,
            "model": turn.record.model,
            "adapter": turn.record.adapter,
        }
        for target, (verdict, turn) in zip(targets, results, strict=True)
    }
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {"by": "critic", **{target: j["judged_as"] for target, j in judgements.items()}},
    )
    return {"judgements": judgements}


async def score(state: SpcGameState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    rewrite = state["rewrite"]
    validity = state.get("validity")
    judgements = state.get("judgements", {})
    sneaky_judged = judgements.get("sneaky", {}).get("judged_as")
    original_judged = judgements.get("original", {}).get("judged_as")
    valid = bool(validity and validity["valid"])
    result = roles.game_result(valid, sneaky_judged)
    critic_reward, sneaky_reward = roles.game_rewards(result)
    critic = judgements.get("sneaky", {})
    game = roles.SpcGame(
        key="game",
        round=cfg.round,
        problem=state["problem"],
        reference_answer=cfg.reference_answer,
        solution_source=state["solution_source"],
        solver_model=state["solver_model"],
        step_index=state["step_index"],
        steps_total=len(state["steps"]),
        prefix=_prefix(state),
        original_step=state["steps"][state["step_index"]],
        sneaky_model=rewrite["model"],
        sneaky_adapter=rewrite["adapter"],
        sneaky_turn=rewrite["turn"],
        error_type=rewrite["error_type"],
        sneaky_plan=rewrite["plan"],
        sneaky_step=rewrite["step"],
        rollouts=cfg.rollouts,
        original_answers=validity["original_answers"] if validity else [],
        sneaky_answers=validity["sneaky_answers"] if validity else [],
        original_success_rate=validity["original_success_rate"] if validity else None,
        sneaky_success_rate=validity["sneaky_success_rate"] if validity else None,
        min_original_success=cfg.min_original_success,
        max_sneaky_success=cfg.max_sneaky_success,
        valid=valid,
        invalid_reason=None if valid else (validity["reason"] if validity else "unusable_rewrite"),
        critic_model=critic.get("model"),
        critic_adapter=critic.get("adapter"),
        critic_turn=critic.get("turn"),
        critic_verdict=sneaky_judged,
        critic_original_turn=judgements.get("original", {}).get("turn"),
        critic_original_verdict=original_judged,
        result=result,
        critic_reward=critic_reward,
        sneaky_reward=sneaky_reward,
        paired_reward=roles.paired_reward(original_judged),
    )
    await ctx.recorder.record_outcome(ctx.run_id, game)
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {
            "by": "game",
            "result": result,
            "valid": valid,
            "invalid_reason": game.invalid_reason,
            "critic_reward": critic_reward,
            "sneaky_reward": sneaky_reward,
            "paired_reward": game.paired_reward,
        },
    )
    return {"game": game.model_dump(), "answer": result, "stop_reason": "scored"}


# --- routing -----------------------------------------------------------------------------


def stop_or(next_node: str):
    def route(state: SpcGameState) -> str:
        return END if state.get("stop_reason") else next_node

    route.__name__ = f"stop_or_{next_node}"
    return route


def solution_given(state: SpcGameState) -> str:
    return "pick_step" if state.get("solution") else "prepare_solution"


def after_rewrite(state: SpcGameState) -> str:
    if state.get("stop_reason"):
        return END
    # An unusable rewrite (unreadable or unchanged) is an invalid one: nothing to validate.
    return "validate" if state["rewrite"]["step"] is not None else "score"


def after_validate(state: SpcGameState) -> str:
    if state.get("stop_reason"):
        return END
    return "critic_judge" if state["validity"]["valid"] else "score"


def build_graph() -> StateGraph:
    graph = StateGraph(SpcGameState, context_schema=RunContext)
    graph.add_node("prepare_solution", prepare_solution)
    graph.add_node("pick_step", pick_step)
    graph.add_node("sneaky_rewrite", sneaky_rewrite)
    graph.add_node("validate", validate)
    graph.add_node("critic_judge", critic_judge)
    graph.add_node("score", score)

    graph.add_conditional_edges(START, solution_given, ["pick_step", "prepare_solution"])
    graph.add_conditional_edges("prepare_solution", stop_or("pick_step"), ["pick_step", END])
    graph.add_conditional_edges("pick_step", stop_or("sneaky_rewrite"), ["sneaky_rewrite", END])
    graph.add_conditional_edges("sneaky_rewrite", after_rewrite, ["validate", "score", END])
    graph.add_conditional_edges("validate", after_validate, ["critic_judge", "score", END])
    graph.add_conditional_edges("critic_judge", stop_or("score"), ["score", END])
    graph.add_edge("score", END)
    return graph


def initial_state(problem: str, config: SpcGameConfig) -> SpcGameState:
    if config.solution:
        return SpcGameState(
            problem=problem,
            solution=config.solution,
            solution_source="given",
            solver_model="given",
            answer=None,
        )
    return SpcGameState(problem=problem, answer=None)


def recursion_limit(config: SpcGameConfig) -> int:
    return 15
