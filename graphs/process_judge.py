"""Process judge (ProcessBench): a verifier names the earliest wrong step of a given solution.

The solution's steps come in the config; the verifier sees them as ``<paragraph_i>`` in
ProcessBench's critique template (the prompt SDV's verifier uses, :mod:`roles.sdv`) and
answers with the index of the earliest wrong paragraph, or -1 when every step is right.
With ``samples`` > 1 the judgments are voted, as ProcessBench's majority-voting variant does.
The run's answer is that index as text; ``thinktank eval-critic`` scores it against labels.

Sampled at a temperature above 0 with a ``seed``, judgment ``i`` draws with seed ``seed + i``:
the samples of one prompt differ and repeat, which is the group FlexiVe's GRPO compares
(``thinktank data export --kind verifier``). Greedy judgments (the default) are all alike.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import Field

from agents.calls import Agent, BudgetExhausted, RunContext, ask
from agents.model import SamplingParams
from graphs.common import (
    MAX_ANSWER_CHARS,
    MAX_CALL_TOKENS,
    MAX_NAME_CHARS,
    MAX_STEPS,
    PatternConfig,
    first_reason,
)
from roles import sdv as roles


class ProcessJudgeConfig(PatternConfig):
    """One verifier (or a vote of several) over a solution given step by step."""

    steps: list[str] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        description="the solution's steps, judged as paragraphs 0, 1, ...",
    )
    judge_model: str = Field(
        "verifier", max_length=MAX_NAME_CHARS, description="logical model name of the judge"
    )
    mode: Literal["fast", "slow"] = Field(
        "slow", description="slow: critique paragraph by paragraph (ProcessBench); fast: at once"
    )
    samples: int = Field(1, ge=1, le=16, description="judgments to vote over")
    max_tokens: int = Field(512, ge=1, le=MAX_CALL_TOKENS, description="budget of each judgment")
    temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="sampling temperature (ProcessBench decodes greedily)"
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description="judgment i samples with seed + i (distinct and repeatable); null: the "
        "backend's own draw",
    )
    reference_answer: str | None = Field(
        None,
        max_length=MAX_ANSWER_CHARS,
        description="the labelled earliest wrong step (-1: none), which the run's answer is "
        "judged against (the API's answer_check)",
    )


class ProcessJudgeState(TypedDict, total=False):
    problem: str
    judgments: list[dict[str, Any]]
    answer: str | None
    stop_reason: Annotated[str | None, first_reason]


def judge_agent(cfg: ProcessJudgeConfig, index: int) -> Agent:
    name = "Judge" if cfg.samples == 1 else f"Judge {index}"
    return Agent(name, "verifier", cfg.judge_model, "names the earliest wrong step, or -1")


async def judge(state: ProcessJudgeState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, cfg = runtime.context, runtime.context.config
    messages = roles.verifier_messages(state["problem"], cfg.steps, cfg.mode)
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    calls = [
        ask(
            ctx,
            judge_agent(cfg, index),
            messages,
            key=f"judge/{index}",
            node="judge",
            params=params.model_copy(
                update={"seed": None if cfg.seed is None else cfg.seed + index}
            ),
            parse=lambda text: roles.parse_check(text, len(cfg.steps)),
        )
        for index in range(cfg.samples)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    judgments, budget_hit = [], False
    for index, result in enumerate(results):
        if isinstance(result, BudgetExhausted):
            budget_hit = True
            continue
        if isinstance(result, BaseException):
            raise result
        check: roles.Check = result.parsed
        judgments.append(
            {"index": index, "first_wrong": check.first_wrong, "error": check.parse_error}
        )
    vote = roles.agreement([j["first_wrong"] for j in judgments])
    await ctx.recorder.emit(
        ctx.run_id,
        "decision",
        {
            "by": "judge",
            "first_wrong": vote.first_wrong,
            "votes": vote.votes,
            "usable": vote.usable,
            "samples": cfg.samples,
        },
    )
    if vote.first_wrong is None:
        stop = "token_budget" if budget_hit else "no_verdict"
        return {"judgments": judgments, "answer": None, "stop_reason": stop}
    return {"judgments": judgments, "answer": str(vote.first_wrong), "stop_reason": "judged"}


def build_graph() -> StateGraph:
    graph = StateGraph(ProcessJudgeState, context_schema=RunContext)
    graph.add_node("judge", judge)
    graph.add_edge(START, "judge")
    graph.add_edge("judge", END)
    return graph


def initial_state(problem: str, config: ProcessJudgeConfig) -> ProcessJudgeState:
    return ProcessJudgeState(problem=problem)


def recursion_limit(config: ProcessJudgeConfig) -> int:
    return 5
