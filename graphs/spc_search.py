"""SPC-guided search: a solver writes one step at a time and a step critic vets each one.

One trajectory: the solver proposes the next step -> the critic judges it given the problem
and the steps so far -> ``Correct``: the step is accepted; otherwise the step is resampled, up
to ``max_retries`` times, after which the last sample is kept and flagged (the paper leaves
this case open; keeping it lets the trajectory finish). A trajectory ends at a step with a
``\\boxed{}`` answer, at ``max_steps``, or when the token budget runs out. Several trajectories
run in parallel (one ``Send`` each) and a majority vote over their answers picks the run's
answer, as the paper's "SC + SPC" does.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import Field

from agents.calls import Agent, BudgetExhausted, RunContext, Turn, ask
from agents.model import SamplingParams
from graphs.common import MAX_CALL_TOKENS, MAX_NAME_CHARS, PatternConfig
from roles import spc as roles
from roles.answers import extract_answer, last_boxed, majority_answer, shared_text


class SpcSearchConfig(PatternConfig):
    """Step-level rejection sampling with the SPC critic, several trajectories, one vote."""

    trajectories: int = Field(4, ge=1, le=32, description="solutions searched in parallel")
    max_retries: int = Field(
        5, ge=0, le=20, description="resamples of a step the critic rejects (paper: 5)"
    )
    max_steps: int = Field(12, ge=1, le=100, description="most steps in one solution")
    step_max_tokens: int = Field(
        128, ge=8, le=MAX_CALL_TOKENS, description="budget of each proposed step"
    )
    critic_max_tokens: int = Field(
        256, ge=8, le=MAX_CALL_TOKENS, description="budget of each critic call"
    )
    critic_temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="the critic's sampling temperature (paper: greedy)"
    )
    solver_model: str = Field(
        "policy", max_length=MAX_NAME_CHARS, description="logical model name of the solver"
    )
    critic_model: str = Field(
        "critic", max_length=MAX_NAME_CHARS, description="logical model name of the critic"
    )
    token_budget: int | None = Field(
        16000,
        ge=16,
        le=10_000_000,
        description="generated tokens the whole run may spend, all agents together (null: no cap)",
    )


Action = Literal["accept", "resample", "accept_fallback"]


class TrajectoryPacket(TypedDict):
    """What one parallel trajectory starts from."""

    problem: str
    trajectory: int


class TrajectoryResult(TypedDict):
    trajectory: int
    steps: list[str]
    answer: str | None
    stop: str
    rejected: int
    fallbacks: int


class TrajectoryState(TypedDict, total=False):
    problem: str
    trajectory: int
    steps: list[str]
    candidate: str
    retry: int
    action: Action
    rejected: int
    fallbacks: int
    stop: str | None
    trajectories: Annotated[list[TrajectoryResult], operator.add]


class TrajectoryOutput(TypedDict):
    trajectories: Annotated[list[TrajectoryResult], operator.add]


class SpcSearchState(TypedDict, total=False):
    problem: str
    trajectories: Annotated[list[TrajectoryResult], operator.add]
    votes: int
    answer: str | None
    stop_reason: str | None


def solver_agent(model: str, trajectory: int) -> Agent:
    return Agent(f"Solver {trajectory}", "solver", model)


def critic_agent(model: str) -> Agent:
    return Agent("Critic", "critic", model)


async def judge_step(
    ctx: RunContext,
    agent: Agent,
    problem: str,
    prefix: list[str],
    step: str,
    *,
    key: str,
    node: str,
    params: SamplingParams,
    round: int = 0,
) -> tuple[roles.CriticVerdict, Turn]:
    """The critic's verdict on ``step`` after ``prefix``, asked again once if unreadable.

    Returns the verdict that counts and the turn it came from; a second unreadable reply
    stays unreadable (``verdict`` None): the caller records it as such, never as a guess.
    """
    messages = roles.critic_messages(problem, prefix, step)
    turn = await ask(
        ctx,
        agent,
        messages,
        key=key,
        node=node,
        round=round,
        params=params,
        parse=roles.parse_critic_verdict,
    )
    if turn.parsed.parse_ok:
        return turn.parsed, turn
    again = await ask(
        ctx,
        agent,
        roles.critic_reask_messages(messages, turn.text),
        key=f"{key}/reask",
        node=node,
        round=round,
        params=params,
        parse=roles.parse_critic_verdict,
    )
    return again.parsed, again


def _step_key(state: TrajectoryState) -> str:
    return f"t{state['trajectory']}/s{len(state.get('steps', []))}/r{state.get('retry', 0)}"


# --- one trajectory ------------------------------------------------------------------------


async def propose_step(state: TrajectoryState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    params = SamplingParams(
        max_tokens=cfg.step_max_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        stop=[roles.STEP_SEPARATOR],
    )
    try:
        turn = await ask(
            ctx,
            solver_agent(cfg.solver_model, state["trajectory"]),
            roles.next_step_messages(state["problem"], state.get("steps", [])),
            key=f"{_step_key(state)}/step",
            node="propose_step",
            params=params,
        )
    except BudgetExhausted:
        return {"stop": "token_budget"}
    candidate = shared_text(turn.text)
    if not candidate:
        return {"stop": "solver_finished"}
    return {"candidate": candidate}


async def critic_step(state: TrajectoryState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    steps, retry = state.get("steps", []), state.get("retry", 0)
    params = SamplingParams(
        max_tokens=cfg.critic_max_tokens, temperature=cfg.critic_temperature, top_p=cfg.top_p
    )
    try:
        verdict, _ = await judge_step(
            ctx,
            critic_agent(cfg.critic_model),
            state["problem"],
            steps,
            state["candidate"],
            key=f"{_step_key(state)}/critic",
            node="critic_step",
            params=params,
        )
    except BudgetExhausted:
        return {"stop": "token_budget"}
    action: Action
    if verdict.verdict == "correct":
        action = "accept"
    elif retry < cfg.max_retries:
        action = "resample"
    else:
        action = "accept_fallback"
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {
            "by": "critic",
            "trajectory": state["trajectory"],
            "step": len(steps),
            "retry": retry,
            "verdict": verdict.judged_as,
            "action": action,
        },
    )
    update: dict[str, Any] = {"action": action}
    if action != "accept":
        update["rejected"] = state.get("rejected", 0) + 1
    if action == "resample":
        update["retry"] = retry + 1
    return update


async def accept_step(state: TrajectoryState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    cfg = runtime.context.config
    steps = [*state.get("steps", []), state["candidate"]]
    update: dict[str, Any] = {"steps": steps, "retry": 0}
    if state["action"] == "accept_fallback":
        update["fallbacks"] = state.get("fallbacks", 0) + 1
    if last_boxed(state["candidate"]) is not None:
        update["stop"] = "answered"
    elif len(steps) >= cfg.max_steps:
        update["stop"] = "max_steps"
    return update


async def finish_trajectory(state: TrajectoryState) -> dict[str, Any]:
    steps = state.get("steps", [])
    result = TrajectoryResult(
        trajectory=state["trajectory"],
        steps=steps,
        answer=extract_answer(roles.join_steps(steps)) if steps else None,
        stop=state.get("stop") or "answered",
        rejected=state.get("rejected", 0),
        fallbacks=state.get("fallbacks", 0),
    )
    return {"trajectories": [result]}


def after_propose(state: TrajectoryState) -> str:
    return "finish_trajectory" if state.get("stop") else "critic_step"


def after_critic(state: TrajectoryState) -> str:
    if state.get("stop"):
        return "finish_trajectory"
    return "propose_step" if state["action"] == "resample" else "accept_step"


def after_accept(state: TrajectoryState) -> str:
    return "finish_trajectory" if state.get("stop") else "propose_step"


def build_trajectory_graph() -> StateGraph:
    graph = StateGraph(
        TrajectoryState,
        input_schema=TrajectoryPacket,
        output_schema=TrajectoryOutput,
        context_schema=RunContext,
    )
    graph.add_node("propose_step", propose_step)
    graph.add_node("critic_step", critic_step)
    graph.add_node("accept_step", accept_step)
    graph.add_node("finish_trajectory", finish_trajectory)

    graph.add_edge(START, "propose_step")
    graph.add_conditional_edges("propose_step", after_propose, ["critic_step", "finish_trajectory"])
    graph.add_conditional_edges(
        "critic_step", after_critic, ["propose_step", "accept_step", "finish_trajectory"]
    )
    graph.add_conditional_edges("accept_step", after_accept, ["propose_step", "finish_trajectory"])
    graph.add_edge("finish_trajectory", END)
    return graph


# --- the search ----------------------------------------------------------------------------


def fan_out(state: SpcSearchState, runtime: Runtime[RunContext]) -> list[Send]:
    """One ``Send`` per trajectory, so M trajectories cost about one trajectory of wall time."""
    return [
        Send("trajectory", TrajectoryPacket(problem=state["problem"], trajectory=index))
        for index in range(runtime.context.config.trajectories)
    ]


async def vote(state: SpcSearchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    results = sorted(state.get("trajectories", []), key=lambda r: r["trajectory"])
    answer, votes = majority_answer(r["answer"] for r in results)
    cut = any(r["stop"] == "token_budget" for r in results)
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {
            "by": "vote",
            "answer": answer,
            "votes": votes,
            "samples": len(results),
            "cancelled": 0,
            "trajectories": [
                {k: r[k] for k in ("trajectory", "answer", "stop", "rejected", "fallbacks")}
                for r in results
            ],
        },
    )
    return {
        "answer": answer,
        "votes": votes,
        "stop_reason": "token_budget" if cut else "voted",
    }


def build_graph() -> StateGraph:
    graph = StateGraph(SpcSearchState, context_schema=RunContext)
    graph.add_node("trajectory", build_trajectory_graph().compile())
    graph.add_node("vote", vote)

    graph.add_conditional_edges(START, fan_out, ["trajectory"])
    graph.add_edge("trajectory", "vote")
    graph.add_edge("vote", END)
    return graph


def initial_state(problem: str, config: SpcSearchConfig) -> SpcSearchState:
    return SpcSearchState(problem=problem, trajectories=[])


def recursion_limit(config: SpcSearchConfig) -> int:
    """Supersteps of one trajectory: per step up to (retries + 1) proposals and verdicts,
    then the acceptance."""
    per_step = 2 * (config.max_retries + 1) + 1
    return config.max_steps * per_step + 10
