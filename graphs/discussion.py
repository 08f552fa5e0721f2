"""The CEO-managed discussion (M1 / MAS-TTS), as a LangGraph state machine.

One round: the CEO allocates it -> the recruiter names the experts -> the solver writes ->
critics review in parallel -> on disagreement the solver revises (up to ``max_inner_turns``)
-> the evaluator scores and advises. The run ends when the stop policy says so, at the round
cap, or when the token budget cannot pay for another call; the answer is the last solution's
``\\boxed{}``.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import Field, model_validator

from agents.calls import Agent, BudgetExhausted, RunContext, ask
from agents.model import SamplingParams
from graphs.common import (
    MAX_ANSWER_CHARS,
    MAX_CALL_TOKENS,
    PatternConfig,
    extend_or_clear,
    first_reason,
)
from roles import discussion as roles
from roles.answers import extract_answer, shared_text
from roles.checking import answers_match


class DiscussionConfig(PatternConfig):
    """A CEO-managed discussion. Defaults are sized for the embedded 0.5B model on two cores;
    the paper's settings are ``max_inner_turns=3`` and a token menu of
    ``[2048, 4096, 8192, 16384, 32000]``."""

    agents: int = Field(
        3, ge=2, le=16, description="most experts the CEO may recruit (solver + critics)"
    )
    max_rounds: int = Field(2, ge=1, le=20, description="round cap")
    max_inner_turns: int = Field(
        1, ge=0, le=10, description="solver revisions after critiques within one round"
    )
    stop_policy: Literal["ceo", "evaluator", "either"] = Field(
        "either",
        description="who may end the run early: the CEO's Stop, the evaluator's 'correct', either",
    )
    token_budget: int | None = Field(
        6000,
        ge=16,
        le=10_000_000,
        description="generated tokens the whole run may spend, all agents together (null: no cap)",
    )
    token_menu: list[int] = Field(
        default_factory=lambda: [384, 768],
        min_length=1,
        max_length=16,
        description="budgets the CEO may give the solver and critics per call",
        json_schema_extra={"items": {"type": "integer", "minimum": 8, "maximum": MAX_CALL_TOKENS}},
    )
    ceo_max_tokens: int = Field(96, ge=8, le=MAX_CALL_TOKENS, description="budget of each CEO call")
    recruiter_max_tokens: int = Field(
        96, ge=8, le=MAX_CALL_TOKENS, description="budget of each recruiter call"
    )
    evaluator_max_tokens: int = Field(
        128, ge=8, le=MAX_CALL_TOKENS, description="budget of each evaluator call"
    )
    conclude_max_tokens: int = Field(
        48,
        ge=0,
        le=MAX_CALL_TOKENS,
        description="a solver cut off at its token limit is asked for its final answer in this "
        "many tokens (M1's budget forcing; 0: never)",
    )
    solver_history: int = Field(5, ge=0, le=100, description="history entries the solver sees")
    critic_history: int = Field(
        3, ge=0, le=100, description="history entries a critic sees (critic_view 'history')"
    )
    critic_view: Literal["history", "independent"] = Field(
        "history",
        description="what a critic sees: 'history', the chat history it compares its own "
        "answer with (the paper); 'independent', the problem alone, solved on its own and "
        "compared by answers",
    )
    reference_answer: str | None = Field(
        None,
        max_length=MAX_ANSWER_CHARS,
        description="the known answer, never shown to the agents: the run is judged against "
        "it (the API's answer_check, `data export --only-correct`)",
    )

    @model_validator(mode="after")
    def _menu_positive(self) -> DiscussionConfig:
        if any(not 8 <= t <= MAX_CALL_TOKENS for t in self.token_menu):
            raise ValueError(f"token_menu entries must be from 8 to {MAX_CALL_TOKENS} tokens")
        return self


class DiscussionState(TypedDict, total=False):
    problem: str
    round: int
    inner_turn: int
    ceo: dict[str, Any]
    roles: list[str]
    history: list[str]
    solution: str
    complete: bool
    critiques: Annotated[list[dict[str, Any]], extend_or_clear]
    revise: bool
    evaluation: dict[str, Any]
    advice: str
    decisions: Annotated[list[dict[str, Any]], operator.add]
    stop_reason: Annotated[str | None, first_reason]
    answer: str | None


class CritiquePacket(TypedDict):
    """The private input of one parallel critic."""

    problem: str
    round: int
    inner_turn: int
    index: int
    role: str
    history: list[str]
    max_tokens: int
    answer: str | None


CEO = Agent("CEO", "ceo", "ceo")
RECRUITER = Agent("Recruiter", "recruiter", "recruiter")
EVALUATOR = Agent("Evaluator", "evaluator", "evaluator")


def solver_agent(description: str) -> Agent:
    return Agent("Solver", "solver", "policy", description)


def critic_agent(index: int, description: str) -> Agent:
    return Agent(f"Critic {index}", "critic", "policy", description)


def _params(cfg: DiscussionConfig, max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=cfg.temperature, top_p=cfg.top_p)


def _resources(state: DiscussionState) -> str:
    ceo = state.get("ceo")
    if not ceo:
        return roles.NO_RESOURCES
    return f"recruit_number: {ceo['recruit_number']}, maximum_tokens: {ceo['max_tokens']}"


# --- nodes -------------------------------------------------------------------------------


async def ceo(state: DiscussionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    rnd = state["round"]
    messages = roles.ceo_messages(
        state["problem"],
        state.get("solution", roles.NO_SOLUTION),
        state.get("advice", roles.NO_ADVICE),
        _resources(state),
        max_experts=cfg.agents,
        token_menu=cfg.token_menu,
    )
    try:
        turn = await ask(
            ctx,
            CEO,
            messages,
            key=f"ceo/r{rnd}",
            node="ceo",
            round=rnd,
            params=_params(cfg, cfg.ceo_max_tokens),
            parse=lambda text: roles.parse_ceo_decision(
                text, max_experts=cfg.agents, token_menu=cfg.token_menu
            ),
        )
    except BudgetExhausted:
        return {"stop_reason": "token_budget"}
    decision: roles.CeoDecision = turn.parsed
    # A Stop before any solution exists has nothing to stop on; the paper's CEO sees round 0
    # with "No solution yet." and is asked to set the team up.
    stops = decision.decision == "stop" and rnd > 0 and cfg.stop_policy in ("ceo", "either")
    logged = {"round": rnd, **decision.model_dump(), "honoured": stops}
    await ctx.recorder.emit(ctx.run_id, "decision", {"by": "ceo", **logged})
    update: dict[str, Any] = {"ceo": decision.model_dump(), "decisions": [logged]}
    if stops:
        update["stop_reason"] = "ceo_stop"
    return update


async def recruit(state: DiscussionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    rnd, decision = state["round"], state["ceo"]
    count = decision["recruit_number"]
    try:
        turn = await ask(
            ctx,
            RECRUITER,
            roles.recruiter_messages(state["problem"], state.get("advice", roles.NO_ADVICE), count),
            key=f"recruit/r{rnd}",
            node="recruit",
            round=rnd,
            params=_params(cfg, cfg.recruiter_max_tokens),
            parse=lambda text: roles.parse_roles(text, count),
        )
    except BudgetExhausted:
        return {"stop_reason": "token_budget"}
    history = list(state.get("history", []))
    if decision["direction"] != roles.NO_ADVICE:
        history.append(roles.history_entry("CEO", decision["direction"]))
    return {"roles": turn.parsed.roles, "history": history, "inner_turn": 0, "critiques": None}


async def solve(state: DiscussionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    rnd, inner = state["round"], state["inner_turn"]
    description = state["roles"][0]
    agent = solver_agent(description)
    messages = roles.solver_messages(
        state["problem"],
        description,
        state["ceo"]["direction"],
        state.get("history", []),
        last=cfg.solver_history,
    )
    key = f"solve/r{rnd}/i{inner}"
    try:
        turn = await ask(
            ctx,
            agent,
            messages,
            key=key,
            node="solve",
            round=rnd,
            params=_params(cfg, state["ceo"]["max_tokens"]),
        )
        solution = turn.text
        if turn.record.finish_reason == "length" and cfg.conclude_max_tokens:
            concluded = await ask(
                ctx,
                agent,
                roles.conclude_messages(messages, turn.text),
                key=f"{key}/conclude",
                node="conclude",
                round=rnd,
                params=_params(cfg, cfg.conclude_max_tokens),
            )
            solution = f"{turn.text.rstrip()}\n\n{concluded.text.strip()}"
    except BudgetExhausted:
        return {"stop_reason": "token_budget"}
    # Only a solution that states a final answer is reviewed, judged or returned: one cut off
    # before its answer has nothing to agree with (the evaluator of a small model would pass it).
    complete = extract_answer(solution) is not None
    history = [*state.get("history", []), roles.history_entry("Solver", shared_text(solution))]
    return {"solution": solution, "complete": complete, "history": history, "critiques": None}


def fan_out_critics(state: DiscussionState) -> list[Send] | str:
    """One ``Send`` per critic, so k critics cost about one call of wall time."""
    if state.get("stop_reason"):
        return "finalize"
    return [
        Send(
            "critique",
            CritiquePacket(
                problem=state["problem"],
                round=state["round"],
                inner_turn=state["inner_turn"],
                index=index,
                role=description,
                history=state["history"],
                max_tokens=state["ceo"]["max_tokens"],
                answer=extract_answer(state["solution"]),
            ),
        )
        for index, description in enumerate(state["roles"][1:], start=1)
    ]


async def critique(packet: CritiquePacket, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    rnd, inner, index = packet["round"], packet["inner_turn"], packet["index"]
    agent = critic_agent(index, packet["role"])
    independent = cfg.critic_view == "independent"
    if independent:
        messages = roles.independent_critic_messages(packet["problem"], packet["role"])
        parse = roles.parse_own_solution
    else:
        messages = roles.critic_messages(
            packet["problem"], packet["role"], packet["history"], last=cfg.critic_history
        )
        parse = roles.parse_critique
    try:
        turn = await ask(
            ctx,
            agent,
            messages,
            key=f"critique/r{rnd}/i{inner}/c{index}",
            node="critique",
            round=rnd,
            params=_params(cfg, packet["max_tokens"]),
            parse=parse,
        )
    except BudgetExhausted:
        return {"stop_reason": "token_budget"}
    verdict: roles.Critique = turn.parsed
    agree: bool | None = verdict.agree
    if independent and verdict.answer is None:
        agree = None  # it never reached an answer: no verdict either way
    elif independent:
        agree = packet["answer"] is not None and (
            answers_match(verdict.answer, packet["answer"]).correct
        )
    elif verdict.answer is not None and packet["answer"] is not None:
        # Departure from the paper (which reads the marker alone): a critic that solved the
        # problem itself agrees when its own final answer is the solution's. Small models'
        # markers often contradict the answers they just wrote; the answers are what counts.
        agree = answers_match(verdict.answer, packet["answer"]).correct
    text = shared_text(verdict.text) if independent else verdict.text
    return {
        "critiques": [
            {
                "index": index,
                "agent": agent.name,
                "agree": agree,
                "marker_agrees": None if independent else verdict.agree,
                "answer": verdict.answer,
                "text": text,
            }
        ]
    }


async def consensus(state: DiscussionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    if state.get("stop_reason"):
        return {}
    critiques = sorted(state.get("critiques", []), key=lambda c: c["index"])
    disagreeing = [c for c in critiques if c["agree"] is False]
    abstaining = sum(c["agree"] is None for c in critiques)
    revise = bool(disagreeing) and state["inner_turn"] < cfg.max_inner_turns
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {
            "by": "critics",
            "round": state["round"],
            "inner_turn": state["inner_turn"],
            "agree": len(critiques) - len(disagreeing) - abstaining,
            "disagree": len(disagreeing),
            "abstain": abstaining,
            "revise": revise,
        },
    )
    if not revise:
        return {"revise": False}
    if cfg.critic_view == "independent":
        entries = [
            roles.own_solution_entry(c["agent"], c["text"], c["answer"], agree=c["agree"])
            for c in critiques
            if c["agree"] is not None
        ]
    else:
        entries = [roles.critique_entry(c["agent"], c["text"]) for c in disagreeing]
    history = [*state["history"], *entries]
    return {"history": history, "inner_turn": state["inner_turn"] + 1, "revise": True}


def after_consensus(state: DiscussionState) -> str:
    if state.get("stop_reason"):
        return "finalize"
    return "solve" if state.get("revise") else "evaluate"


async def evaluate(state: DiscussionState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    rnd = state["round"]
    if not state.get("complete"):
        return await _judged(ctx, cfg, rnd, roles.Evaluation(advice=NO_ANSWER_ADVICE), called=False)
    try:
        turn = await ask(
            ctx,
            EVALUATOR,
            roles.evaluator_messages(
                state["problem"], shared_text(state["solution"]), state["roles"]
            ),
            key=f"evaluate/r{rnd}",
            node="evaluate",
            round=rnd,
            params=_params(cfg, cfg.evaluator_max_tokens),
            parse=roles.parse_evaluation,
        )
    except BudgetExhausted:
        return {"stop_reason": "token_budget"}
    return await _judged(ctx, cfg, rnd, turn.parsed, called=True)


NO_ANSWER_ADVICE = (
    "The solution stopped before stating a final answer: solve it again more briefly and put "
    "the final answer in \\boxed{}."
)


async def _judged(
    ctx: RunContext, cfg: DiscussionConfig, rnd: int, evaluation: roles.Evaluation, *, called: bool
) -> dict[str, Any]:
    """The evaluation's effect: stop on a correct verdict, else the next round (or the cap)."""
    update: dict[str, Any] = {"evaluation": evaluation.model_dump(), "advice": evaluation.advice}
    if evaluation.correct and cfg.stop_policy in ("evaluator", "either"):
        update["stop_reason"] = "evaluator_correct"
    elif rnd + 1 >= cfg.max_rounds:
        update["stop_reason"] = "max_rounds"
    else:
        update["round"] = rnd + 1
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {
            "by": "evaluator",
            "round": rnd,
            "correct": evaluation.correct,
            "judged": called,  # False: the solution had no final answer, nothing to judge
            "stop_reason": update.get("stop_reason"),
        },
    )
    return update


async def finalize(state: DiscussionState) -> dict[str, Any]:
    solution = state.get("solution")
    complete = solution is not None and state.get("complete", False)
    return {"answer": extract_answer(solution) if complete else None}


def stop_or(next_node: str):
    def route(state: DiscussionState) -> str:
        return "finalize" if state.get("stop_reason") else next_node

    route.__name__ = f"stop_or_{next_node}"
    return route


def build_graph() -> StateGraph:
    graph = StateGraph(DiscussionState, context_schema=RunContext)
    graph.add_node("ceo", ceo)
    graph.add_node("recruit", recruit)
    graph.add_node("solve", solve)
    graph.add_node("critique", critique)
    graph.add_node("consensus", consensus)
    graph.add_node("evaluate", evaluate)
    graph.add_node("finalize", finalize)

    graph.add_edge(START, "ceo")
    graph.add_conditional_edges("ceo", stop_or("recruit"), ["recruit", "finalize"])
    graph.add_conditional_edges("recruit", stop_or("solve"), ["solve", "finalize"])
    graph.add_conditional_edges("solve", fan_out_critics, ["critique", "finalize"])
    graph.add_edge("critique", "consensus")
    graph.add_conditional_edges("consensus", after_consensus, ["solve", "evaluate", "finalize"])
    graph.add_conditional_edges("evaluate", stop_or("ceo"), ["ceo", "finalize"])
    graph.add_edge("finalize", END)
    return graph


def initial_state(problem: str, config: DiscussionConfig) -> DiscussionState:
    return DiscussionState(
        problem=problem, round=0, inner_turn=0, solution=roles.NO_SOLUTION, history=[]
    )


def recursion_limit(config: DiscussionConfig) -> int:
    per_round = 5 + 3 * (config.max_inner_turns + 1)
    return config.max_rounds * per_round + 10
