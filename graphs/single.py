"""The single-agent baseline: one chain of thought, one answer."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import Field

from agents.calls import Agent, BudgetExhausted, RunContext, ask
from agents.model import SamplingParams
from graphs.common import MAX_CALL_TOKENS, PatternConfig, first_reason
from roles.answers import extract_answer
from roles.baselines import solver_messages


class SingleConfig(PatternConfig):
    """One solver, one sample."""

    max_tokens: int = Field(
        512, ge=8, le=MAX_CALL_TOKENS, description="budget of the solver's one call"
    )


class SingleState(TypedDict, total=False):
    problem: str
    solution: str
    answer: str | None
    stop_reason: Annotated[str | None, first_reason]


SOLVER = Agent("Solver", "solver", "policy")


async def solve(state: SingleState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    try:
        turn = await ask(
            ctx, SOLVER, solver_messages(state["problem"]), key="solve", node="solve", params=params
        )
    except BudgetExhausted:
        return {"stop_reason": "token_budget", "answer": None}
    return {"solution": turn.text, "answer": extract_answer(turn.text), "stop_reason": "done"}


def build_graph() -> StateGraph:
    graph = StateGraph(SingleState, context_schema=RunContext)
    graph.add_node("solve", solve)
    graph.add_edge(START, "solve")
    graph.add_edge("solve", END)
    return graph


def initial_state(problem: str, config: SingleConfig) -> SingleState:
    return SingleState(problem=problem)


def recursion_limit(config: SingleConfig) -> int:
    return 5
