"""The floor of an orchestration benchmark: a bare LangGraph graph of the same shape.

A run of thinktank is a LangGraph graph whose steps wait on model calls. The least such a run
can cost on this machine is LangGraph itself driving a graph of the same shape, each call a
plain ``asyncio.sleep``: without a checkpointer, and with the saver thinktank uses on the same
database at the same durability. The benchmarks print both beside their own figures, so a
ratio can be read against what this machine allows, not against zero.

A shape is a list of levels, each a number of calls that run at once; the levels depend on
one another: ``[1] * 12`` is a chain of 12 calls, ``[4, 16]`` is RLAD's K=4 abstractions
and then their 16 solutions.
"""

from __future__ import annotations

import asyncio
import operator
import statistics
import time
import uuid
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from execution.checkpoints import open_checkpointer
from execution.runner import DURABILITY


class _State(TypedDict):
    level: int
    done: Annotated[list[int], operator.add]


def bare_graph(shape: list[int], latency_s: float, saver: object | None = None) -> object:
    async def call(_: dict[str, int]) -> dict[str, list[int]]:
        await asyncio.sleep(latency_s)
        return {"done": [1]}

    def next_level(state: _State) -> dict[str, int]:
        return {"level": state["level"] + 1}

    def fan_out(state: _State) -> list[Send] | str:
        if state["level"] >= len(shape):
            return END
        return [Send("call", {"i": i}) for i in range(shape[state["level"]])]

    graph = StateGraph(_State)
    graph.add_node("call", call)
    graph.add_node("join", next_level)
    graph.add_conditional_edges(START, fan_out, ["call", END])
    graph.add_edge("call", "join")
    graph.add_conditional_edges("join", fan_out, ["call", END])
    return graph.compile(checkpointer=saver)


async def _wall(shape: list[int], latency_s: float, database_url: str | None) -> float:
    if database_url is None:
        graph = bare_graph(shape, latency_s)
        started = time.perf_counter()
        await graph.ainvoke({"level": 0, "done": []})  # type: ignore[attr-defined]
        return time.perf_counter() - started
    async with open_checkpointer(database_url) as saver:
        graph = bare_graph(shape, latency_s, saver)
        thread = {"configurable": {"thread_id": uuid.uuid4().hex}}
        started = time.perf_counter()
        await graph.ainvoke(  # type: ignore[attr-defined]
            {"level": 0, "done": []}, thread, durability=DURABILITY
        )
        return time.perf_counter() - started


async def floor(
    shape: list[int], latency_s: float, database_url: str, repeats: int = 5
) -> dict[str, tuple[float, float]]:
    """(min, median) of wall / critical path, bare and with the saver on ``database_url``."""
    critical = len(shape) * latency_s
    figures = {}
    for name, url in (("bare", None), ("saver", database_url)):
        await _wall(shape, latency_s, url)  # warm: imports, the saver's tables and connection
        walls = [await _wall(shape, latency_s, url) for _ in range(repeats)]
        figures[name] = (min(walls) / critical, statistics.median(walls) / critical)
    return figures


def floor_line(figures: dict[str, tuple[float, float]]) -> str:
    bare, saver = figures["bare"], figures["saver"]
    return (
        f"floor: bare LangGraph {bare[0]:.3f} / {bare[1]:.3f}, "
        f"with the saver {saver[0]:.3f} / {saver[1]:.3f} (min / median)"
    )
