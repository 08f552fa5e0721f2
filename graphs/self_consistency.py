"""The self-consistency baseline: n independent samples, majority vote.

Sampling stops as soon as the vote can no longer change (the leader is ahead by more than the
samples still running), and those samples are cancelled. That needs cancellable siblings, which
``Send`` branches are not, so the samples are asyncio tasks inside one node; each is still a
stored turn keyed by its index, so a resumed run replays the ones already made.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import Field

from agents.calls import Agent, BudgetExhausted, RunContext, Turn, ask
from agents.model import SamplingParams
from graphs.common import MAX_CALL_TOKENS, PatternConfig, first_reason
from roles.answers import extract_answer, majority_answer, normalize_answer
from roles.baselines import solver_messages


class SelfConsistencyConfig(PatternConfig):
    """n samples of one solver, majority vote over their answers."""

    samples: int = Field(8, ge=1, le=64, description="independent solutions to vote over")
    max_tokens: int = Field(512, ge=8, le=MAX_CALL_TOKENS, description="budget of each sample")
    early_stop: bool = Field(True, description="stop once the majority can no longer change")


class SelfConsistencyState(TypedDict, total=False):
    problem: str
    answers: list[str | None]
    votes: int
    cancelled: int
    answer: str | None
    stop_reason: Annotated[str | None, first_reason]


def decided(answers: list[str | None], pending: int) -> bool:
    """True when no outcome of the ``pending`` samples can change the winner."""
    counts = Counter(normalize_answer(a) for a in answers if a is not None)
    ranked = counts.most_common(2)
    if not ranked:
        return False
    leader = ranked[0][1]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0
    return leader > runner_up + pending


async def sample_and_vote(
    state: SelfConsistencyState, runtime: Runtime[RunContext]
) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    messages = solver_messages(state["problem"])

    async def one(index: int) -> Turn:
        agent = Agent(f"Sampler {index}", "solver", "policy")
        return await ask(ctx, agent, messages, key=f"sample/{index}", node="sample", params=params)

    tasks = [asyncio.create_task(one(i)) for i in range(cfg.samples)]
    answers: list[str | None] = []
    stop_reason = "all_samples"
    try:
        for next_done in asyncio.as_completed(tasks):
            try:
                turn = await next_done
            except BudgetExhausted:
                stop_reason = "token_budget"
                continue
            answers.append(extract_answer(turn.text))
            pending = sum(not t.done() for t in tasks)
            if cfg.early_stop and pending and decided(answers, pending):
                stop_reason = "majority_decided"
                break
    finally:
        cancelled = sum(t.cancel() for t in tasks if not t.done())
        await asyncio.gather(*tasks, return_exceptions=True)
    answer, votes = majority_answer(answers)
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {
            "by": "vote",
            "answer": answer,
            "votes": votes,
            "samples": len(answers),
            "cancelled": cancelled,
        },
    )
    return {
        "answers": answers,
        "votes": votes,
        "cancelled": cancelled,
        "answer": answer,
        "stop_reason": stop_reason,
    }


def build_graph() -> StateGraph:
    graph = StateGraph(SelfConsistencyState, context_schema=RunContext)
    graph.add_node("sample_and_vote", sample_and_vote)
    graph.add_edge(START, "sample_and_vote")
    graph.add_edge("sample_and_vote", END)
    return graph


def initial_state(problem: str, config: SelfConsistencyConfig) -> SelfConsistencyState:
    return SelfConsistencyState(problem=problem)


def recursion_limit(config: SelfConsistencyConfig) -> int:
    return 5
