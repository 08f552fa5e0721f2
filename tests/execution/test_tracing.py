"""A run's trace, recorded in memory: workflow -> node -> invoke_agent -> chat, GenAI attributes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agents.backends.openai_compat import OpenAIBackend, OpenAIModelConfig
from agents.backends.scripted import ScriptedBackend
from agents.model import ModelError
from agents.model_map import ModelRouter
from execution.runner import execute_run
from execution.tracing import configure_tracing, trace_nodes
from tests.agents.test_openai_backend import FaultServer, fault_server  # noqa: F401
from tests.conftest import RunHarness
from tests.graphs.test_discussion import AGREE, PROBLEM, backend

ROOT = Path(__file__).resolve().parents[2]


STARTED: dict[int, dict[str, Any]] = {}
"""Span id -> the span's attributes when it started, as a sampler sees them."""


class GatedProcessor(SimpleSpanProcessor):
    """Exports only while a test of this module is running: the provider is process-wide."""

    enabled = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.enabled:
            STARTED[span.context.span_id] = dict(span.attributes or {})

    def on_end(self, span: ReadableSpan) -> None:
        if self.enabled:
            super().on_end(span)


@pytest.fixture(scope="session")
def span_processor() -> GatedProcessor:
    """One SDK provider for the session (``set_tracer_provider`` works once per process)."""
    processor = GatedProcessor(InMemorySpanExporter())
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    installed = trace.get_tracer_provider()
    if not isinstance(installed, TracerProvider):
        pytest.skip("a non-SDK tracer provider is installed in this process")
    installed.add_span_processor(processor)
    return processor


@pytest.fixture
def spans(span_processor: GatedProcessor) -> Iterator[InMemorySpanExporter]:
    exporter = span_processor.span_exporter
    assert isinstance(exporter, InMemorySpanExporter)
    exporter.clear()
    STARTED.clear()
    span_processor.enabled = True
    yield exporter
    span_processor.enabled = False
    exporter.clear()
    STARTED.clear()


@pytest.fixture(scope="session")
def metric_reader() -> InMemoryMetricReader:
    """One SDK meter provider for the session, read in deltas: each read holds what was
    recorded since the one before."""
    reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)
    if metrics.get_meter_provider() is not provider:
        pytest.skip("another meter provider is installed in this process")
    return reader


class Measured:
    """The histograms recorded from the moment a test starts, by metric name."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader
        self.reader.get_metrics_data()  # what earlier tests recorded is read and dropped

    def read(self) -> dict[str, tuple[str, list[HistogramDataPoint]]]:
        """metric name -> (unit, data points)."""
        found: dict[str, tuple[str, list[HistogramDataPoint]]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = [
                        p
                        for p in metric.data.data_points
                        if isinstance(p, HistogramDataPoint) and p.count
                    ]
                    unit, before = found.get(metric.name, (metric.unit or "", []))
                    found[metric.name] = (unit, before + points)
        return found


@pytest.fixture
def measured(metric_reader: InMemoryMetricReader) -> Measured:
    return Measured(metric_reader)


def points(
    recorded: dict[str, tuple[str, list[HistogramDataPoint]]], name: str, **where: Any
) -> list[HistogramDataPoint]:
    """The data points of one metric whose attributes include ``where`` (dots as __)."""
    wanted = {key.replace("__", "."): value for key, value in where.items()}
    return [
        p
        for p in recorded.get(name, ("", []))[1]
        if all((p.attributes or {}).get(k) == v for k, v in wanted.items())
    ]


# The explicit bucket boundaries the GenAI conventions advise for each histogram.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)  # fmt: skip
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
AGENT_BUCKETS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 102.4, 204.8, 409.6)


def named(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def parent_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    matches = [s for s in spans if s.context.span_id == span.parent.span_id]
    assert len(matches) == 1, f"the parent of {span.name} was not recorded"
    return matches[0]


async def test_a_discussion_is_traced_from_the_run_down_to_each_model_call(
    harness: RunHarness, spans: InMemorySpanExporter
) -> None:
    run_id, outcome = await harness.run(backend(), "discussion", PROBLEM, max_rounds=1)
    assert outcome["status"] == "succeeded"
    recorded = list(spans.get_finished_spans())

    (workflow,) = named(recorded, "invoke_workflow")
    assert workflow.name == "invoke_workflow discussion"
    assert workflow.kind == SpanKind.INTERNAL
    assert workflow.parent is None
    assert dict(workflow.attributes or {}) == {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.agent.name": "discussion",
        "gen_ai.conversation.id": run_id,
        "session.id": run_id,
        "thinktank.run.resumed": False,
        "thinktank.run.status": "succeeded",
        "thinktank.run.stop_reason": "max_rounds",
    }
    assert workflow.status.status_code == StatusCode.UNSET
    trace_id = workflow.context.trace_id
    assert all(s.context.trace_id == trace_id for s in recorded)
    run = await harness.store.get_run(run_id)
    assert run.trace_id == format(trace_id, "032x")

    nodes = named(recorded, "node ")
    by_node: dict[str, list[ReadableSpan]] = {}
    for node in nodes:
        assert parent_of(node, recorded) is workflow
        assert node.attributes["gen_ai.conversation.id"] == run_id
        assert node.attributes["thinktank.round"] == 0
        by_node.setdefault(str(node.attributes["langgraph.node"]), []).append(node)
    assert {"ceo", "recruit", "solve", "critique", "evaluate"} <= set(by_node)
    assert len(by_node["critique"]) == 2
    assert {n.name for n in by_node["solve"]} == {"node solve"}

    turns = {t.key: t for t in await harness.store.turns(run_id)}
    agents = named(recorded, "invoke_agent ")
    chats = named(recorded, "chat ")
    assert len(agents) == len(chats) == len(turns) == 6
    for agent_span in agents:
        attrs = agent_span.attributes or {}
        turn = turns[str(attrs["thinktank.turn.key"])]
        assert agent_span.name == f"invoke_agent {turn.agent}"
        assert agent_span.kind == SpanKind.INTERNAL
        assert attrs["gen_ai.operation.name"] == "invoke_agent"
        assert attrs["gen_ai.agent.name"] == turn.agent
        assert attrs["thinktank.agent.role"] == turn.role
        assert attrs["gen_ai.conversation.id"] == run_id
        assert attrs["gen_ai.usage.input_tokens"] == turn.prompt_tokens
        assert attrs["gen_ai.usage.output_tokens"] == turn.completion_tokens
        assert attrs["gen_ai.response.finish_reasons"] == (turn.finish_reason,)
        # an agent of this process: no provider and no agent id (internal agent spans)
        assert "gen_ai.provider.name" not in attrs
        assert "gen_ai.agent.id" not in attrs
        if turn.role_description:  # the recruited experts
            assert attrs["gen_ai.agent.description"] == turn.role_description
        else:
            assert "gen_ai.agent.description" not in attrs
        # what a sampler may read is there when the span starts, before any model call
        started = STARTED[agent_span.context.span_id]
        assert started["gen_ai.agent.name"] == turn.agent
        assert started["gen_ai.request.model"] == "scripted"
        node = parent_of(agent_span, recorded)
        assert node.attributes["langgraph.node"] == turn.node

        (chat,) = [c for c in chats if c.parent.span_id == agent_span.context.span_id]
        chat_attrs = chat.attributes or {}
        assert chat.name == "chat scripted"
        assert chat.kind == SpanKind.CLIENT
        assert chat.status.status_code == StatusCode.UNSET
        assert chat_attrs["gen_ai.operation.name"] == "chat"
        assert chat_attrs["gen_ai.provider.name"] == "scripted"
        assert chat_attrs["gen_ai.request.model"] == "scripted"
        assert chat_attrs["gen_ai.response.model"] == turn.model
        assert chat_attrs["gen_ai.conversation.id"] == run_id
        assert chat_attrs["gen_ai.request.max_tokens"] == turn.params["max_tokens"]
        assert chat_attrs["gen_ai.request.temperature"] == turn.params["temperature"]
        assert chat_attrs["gen_ai.request.top_p"] == turn.params["top_p"]
        assert chat_attrs["gen_ai.usage.input_tokens"] == turn.prompt_tokens > 0
        assert chat_attrs["gen_ai.usage.output_tokens"] == turn.completion_tokens > 0
        assert chat_attrs["gen_ai.response.finish_reasons"] == (turn.finish_reason,)
        assert str(chat_attrs["gen_ai.response.id"]).startswith("scripted-")
        # a model in this process: no server to name
        assert "server.address" not in chat_attrs
        # content is opt-in
        assert "gen_ai.input.messages" not in chat_attrs
        assert "gen_ai.output.messages" not in chat_attrs

    # the parallel critics each ran in their own critique node
    critics = [a for a in agents if a.attributes["thinktank.agent.role"] == "critic"]
    assert len({c.attributes["gen_ai.response.id"] for c in chats}) == len(chats)
    assert {parent_of(c, recorded).context.span_id for c in critics} == {
        n.context.span_id for n in by_node["critique"]
    }


async def test_a_discussions_model_calls_and_agent_turns_are_measured(
    harness: RunHarness, spans: InMemorySpanExporter, measured: Measured
) -> None:
    run_id, outcome = await harness.run(backend(), "discussion", PROBLEM, max_rounds=1)
    assert outcome["status"] == "succeeded"
    turns = await harness.store.turns(run_id)
    recorded = measured.read()
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "scripted",
        "gen_ai.response.model": "scripted",
    }

    unit, _ = recorded["gen_ai.client.token.usage"]
    assert unit == "{token}"
    for kind, expected in (
        ("input", [t.prompt_tokens for t in turns]),
        ("output", [t.completion_tokens for t in turns]),
    ):
        (point,) = points(recorded, "gen_ai.client.token.usage", gen_ai__token__type=kind)
        assert dict(point.attributes or {}) == {**chat, "gen_ai.token.type": kind}
        assert (point.count, point.sum) == (len(turns), sum(expected))
        assert tuple(point.explicit_bounds) == TOKEN_BUCKETS

    unit, (duration,) = recorded["gen_ai.client.operation.duration"]
    assert unit == "s"
    assert dict(duration.attributes or {}) == chat
    assert duration.count == len(turns) == 6
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS
    assert 0 < duration.sum < 30

    unit, _ = recorded["gen_ai.invoke_agent.duration"]
    assert unit == "s"
    turned = points(
        recorded, "gen_ai.invoke_agent.duration", gen_ai__operation__name="invoke_agent"
    )
    by_agent = {p.attributes["gen_ai.agent.name"]: p for p in turned}
    assert {name: p.count for name, p in by_agent.items()} == {
        t.agent: sum(1 for u in turns if u.agent == t.agent) for t in turns
    }
    for name, point in by_agent.items():
        assert dict(point.attributes or {}) == {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": name,
            "gen_ai.request.model": "scripted",
        }
        assert tuple(point.explicit_bounds) == AGENT_BUCKETS
    (workflow,) = points(
        recorded, "gen_ai.invoke_agent.duration", gen_ai__operation__name="invoke_workflow"
    )
    assert dict(workflow.attributes or {}) == {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.agent.name": "discussion",
    }
    assert workflow.count == 1
    # the run's span and its measured duration describe the same execution
    (span,) = named(list(spans.get_finished_spans()), "invoke_workflow")
    assert span.end_time is not None and span.start_time is not None
    assert workflow.sum <= (span.end_time - span.start_time) / 1e9


async def test_a_model_reached_over_http_is_named_by_its_server_and_its_reply_by_its_id(
    harness: RunHarness,
    spans: InMemorySpanExporter,
    measured: Measured,
    fault_server: FaultServer,  # noqa: F811
) -> None:
    """The ``openai`` backend against an OpenAI-shaped server on loopback: the chat span and
    the metrics name the server (address and port from the start), and the span the reply."""
    fault_server.script()
    port = int(fault_server.base_url.split(":")[2].split("/")[0])
    model = OpenAIBackend(OpenAIModelConfig(base_url=fault_server.base_url, model="served"))
    try:
        run_id, outcome = await harness.run(model, "single", "2+2?")
    finally:
        await model.close()
    assert outcome["status"] == "succeeded"
    recorded_spans = list(spans.get_finished_spans())
    (chat,) = named(recorded_spans, "chat ")
    assert chat.name == "chat served"
    assert chat.kind == SpanKind.CLIENT
    server = {"server.address": "127.0.0.1", "server.port": port}
    assert STARTED[chat.context.span_id] | server == STARTED[chat.context.span_id]
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "served"
    assert attrs["gen_ai.response.id"] == "c"  # what the server's stream said
    (agent_span,) = named(recorded_spans, "invoke_agent ")
    assert "server.address" not in (agent_span.attributes or {})

    recorded = measured.read()
    for name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage"):
        found = points(recorded, name, server__address="127.0.0.1", server__port=port)
        assert found, name
        assert all(p.attributes["gen_ai.provider.name"] == "openai" for p in found)
    (turn,) = await harness.store.turns(run_id)
    (output,) = points(recorded, "gen_ai.client.token.usage", gen_ai__token__type="output")
    assert output.sum == turn.completion_tokens


async def test_message_content_is_recorded_only_when_asked_for(
    harness: RunHarness, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    run_id, _ = await harness.run(backend(), "discussion", PROBLEM, max_rounds=1)
    solve = next(t for t in await harness.store.turns(run_id) if t.node == "solve")
    chat = next(
        c
        for c in named(list(spans.get_finished_spans()), "chat ")
        if json.loads(str(c.attributes["gen_ai.output.messages"]))[0]["parts"][0]["content"]
        == solve.completion
    )
    sent = json.loads(str(chat.attributes["gen_ai.input.messages"]))
    assert [m["role"] for m in sent] == [m["role"] for m in solve.messages]
    assert sent[-1]["parts"][0]["content"] == solve.messages[-1]["content"]


async def test_a_failing_model_call_marks_its_spans_as_errors(
    harness: RunHarness, spans: InMemorySpanExporter, measured: Measured
) -> None:
    model = backend(critic=[AGREE, ModelError("connection refused by the model server")])
    run_id, outcome = await harness.run(model, "discussion", PROBLEM, max_rounds=1)
    assert outcome["status"] == "failed"
    recorded = list(spans.get_finished_spans())

    failed_chats = [c for c in named(recorded, "chat ") if c.status.status_code == StatusCode.ERROR]
    (chat,) = [c for c in failed_chats if c.attributes["error.type"] == "ModelError"]
    assert "connection refused" in (chat.status.description or "")
    assert [e.name for e in chat.events] == ["exception"]
    assert "gen_ai.usage.output_tokens" not in (chat.attributes or {})

    agent_span = parent_of(chat, recorded)
    assert agent_span.name.startswith("invoke_agent Critic")
    assert agent_span.status.status_code == StatusCode.ERROR
    assert agent_span.attributes["error.type"] == "ModelError"
    node = parent_of(agent_span, recorded)
    assert node.attributes["langgraph.node"] == "critique"
    assert node.status.status_code == StatusCode.ERROR
    workflow = parent_of(node, recorded)
    assert workflow.name == "invoke_workflow discussion"
    assert workflow.status.status_code == StatusCode.ERROR
    assert workflow.attributes["thinktank.run.status"] == "failed"
    assert "connection refused" in (workflow.status.description or "")

    # the calls that answered are not marked (ceo, recruiter, solver at least)
    ok = [s for s in recorded if s.status.status_code != StatusCode.ERROR]
    assert len(named(ok, "chat ")) >= 3
    run = await harness.store.get_run(run_id)
    assert run.trace_id == format(workflow.context.trace_id, "032x")

    # measured too: the failed call's duration with its error, and no tokens for it
    recorded = measured.read()
    (failed,) = points(recorded, "gen_ai.client.operation.duration", error__type="ModelError")
    assert failed.count == 1
    assert "gen_ai.response.model" not in (failed.attributes or {})
    answered = len(named(ok, "chat "))
    (output,) = points(recorded, "gen_ai.client.token.usage", gen_ai__token__type="output")
    assert output.count == answered
    (critic,) = points(recorded, "gen_ai.invoke_agent.duration", error__type="ModelError")
    assert critic.attributes["gen_ai.agent.name"].startswith("Critic")
    (run_point,) = points(
        recorded, "gen_ai.invoke_agent.duration", gen_ai__operation__name="invoke_workflow"
    )
    assert run_point.attributes["error.type"] == "failed"


async def test_a_budget_stop_is_an_event_not_an_error(
    harness: RunHarness, spans: InMemorySpanExporter
) -> None:
    _, outcome = await harness.run(
        backend(), "discussion", PROBLEM, max_rounds=3, token_budget=40, token_menu=[128]
    )
    assert outcome["stop_reason"] == "token_budget"
    recorded = list(spans.get_finished_spans())
    assert not [s.name for s in recorded if s.status.status_code == StatusCode.ERROR]
    stopped = [
        s
        for s in named(recorded, "invoke_agent ")
        if any(e.name == "thinktank.stopped" for e in s.events)
    ]
    assert stopped
    for agent_span in stopped:
        (stop,) = agent_span.events
        assert stop.attributes["reason"] == "BudgetExhausted"
        # the budget stopped it before any model was called
        assert not [
            c for c in recorded if c.parent and c.parent.span_id == agent_span.context.span_id
        ]


async def test_a_resumed_run_replays_stored_turns_without_chat_spans(
    harness: RunHarness, spans: InMemorySpanExporter
) -> None:
    """A run that died right after its solver's turn was stored (before the checkpoint),
    while its critics were still thinking: resuming replays that turn from the store, which
    its span says, with no model call."""

    def die_after_the_solver(_run: str, event: str, payload: dict[str, Any]) -> None:
        if event == "turn_finished" and payload["node"] == "solve":
            raise RuntimeError("worker killed")

    harness.store.listeners.append(die_after_the_solver)
    # calls long enough that the kill lands while the critics think: a run's turns are
    # stored behind it (store.run_recorder), and an instant critic's would be queued first
    slow = backend(latency_s=0.2)
    run_id, outcome = await harness.run(slow, "discussion", PROBLEM, max_rounds=1)
    assert outcome["status"] == "failed"
    first_trace = (await harness.store.get_run(run_id)).trace_id
    harness.store.listeners.remove(die_after_the_solver)
    spans.clear()

    resumed = await execute_run(
        run_id,
        store=harness.store,
        models=ModelRouter.single(backend()),
        database_url=harness.database_url,
    )
    assert resumed["status"] == "succeeded"
    recorded = list(spans.get_finished_spans())
    (workflow,) = named(recorded, "invoke_workflow")
    assert workflow.attributes["thinktank.run.resumed"] is True
    assert workflow.attributes["thinktank.run.previous_trace_id"] == first_trace
    run = await harness.store.get_run(run_id)
    assert run.trace_id == format(workflow.context.trace_id, "032x") != first_trace

    (solver,) = named(recorded, "invoke_agent Solver")
    assert solver.attributes["thinktank.turn.replayed"] is True
    assert [e.name for e in solver.events] == ["thinktank.turn.replayed"]
    chats_under = {c.parent.span_id for c in named(recorded, "chat ")}
    assert solver.context.span_id not in chats_under
    # the critics and the evaluator did call their model
    assert len(named(recorded, "chat ")) == 3


SPC_PROBLEM = "What is 2 + 2, doubled?"
SPC_CORRECT = "The step holds. <Answer>Correct</Answer>"


def trajectory_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan:
    """The ``node trajectory`` span a span of an spc_search run descends from."""
    while span.name != "node trajectory":
        span = parent_of(span, spans)
    return span


async def test_an_spc_search_traces_the_trajectory_subgraphs_nodes_under_their_trajectory(
    harness: RunHarness, spans: InMemorySpanExporter
) -> None:
    model = ScriptedBackend(
        {"solver": ["2 + 2 = 4, doubled is \\boxed{8}."], "critic": [SPC_CORRECT]}
    )
    run_id, outcome = await harness.run(model, "spc_search", SPC_PROBLEM, trajectories=2)
    assert outcome["answer"] == "8"
    recorded = list(spans.get_finished_spans())
    (workflow,) = named(recorded, "invoke_workflow")
    assert workflow.name == "invoke_workflow spc_search"

    # one span per parallel trajectory, beside the vote, under the run
    trajectories = named(recorded, "node trajectory")
    assert len(trajectories) == 2
    (vote,) = named(recorded, "node vote")
    for node in [*trajectories, vote]:
        assert parent_of(node, recorded) is workflow
    for trajectory in trajectories:
        assert trajectory.attributes["langgraph.node"] == "trajectory"
        assert trajectory.attributes["gen_ai.conversation.id"] == run_id
        assert trajectory.status.status_code == StatusCode.UNSET
        steps = [s for s in named(recorded, "node ") if s.parent == trajectory.context]
        assert sorted(str(s.attributes["langgraph.node"]) for s in steps) == [
            "accept_step",
            "critic_step",
            "finish_trajectory",
            "propose_step",
        ]

    # each turn is a child of the span of the subgraph node that made it, and a trajectory's
    # turns (keys t0/..., t1/...) are all under that trajectory's span
    turns = {t.key: t for t in await harness.store.turns(run_id)}
    agents = named(recorded, "invoke_agent ")
    assert len(agents) == len(named(recorded, "chat ")) == len(turns) == 4
    under: dict[str, set[int]] = {}
    for agent_span in agents:
        turn = turns[str(agent_span.attributes["thinktank.turn.key"])]
        node = parent_of(agent_span, recorded)
        assert node.attributes["langgraph.node"] == turn.node
        assert node.name == f"node {turn.node}"
        assert parent_of(node, recorded) in trajectories
        under.setdefault(turn.key.split("/")[0], set()).add(
            trajectory_of(agent_span, recorded).context.span_id
        )
    assert set(under) == {"t0", "t1"}
    assert all(len(ids) == 1 for ids in under.values())
    assert under["t0"] != under["t1"]


async def test_a_resumed_spc_search_goes_on_inside_its_trajectory_where_it_stopped(
    harness: RunHarness, spans: InMemorySpanExporter
) -> None:
    """A run that failed inside the trajectory subgraph, after its first step was accepted
    (its solver's server dropped the second step): the run's graph is checkpointed as it
    ends, so resuming it picks the subgraph up at its own checkpoint, and the trace shows
    only the second step's nodes, still nested under a trajectory span."""
    second_step = "Doubled, 4 * 2 = 8, so \\boxed{8}."

    def script(*solver: Any) -> ScriptedBackend:
        return ScriptedBackend({"solver": list(solver), "critic": [SPC_CORRECT]})

    dropped = ModelError("connection reset", retryable=False)
    run_id, outcome = await harness.run(
        script("2 + 2 = 4.", dropped), "spc_search", SPC_PROBLEM, trajectories=1
    )
    assert outcome["status"] == "failed"
    spans.clear()

    resumed = await execute_run(
        run_id,
        store=harness.store,
        models=ModelRouter.single(script(second_step)),
        database_url=harness.database_url,
    )
    assert (resumed["status"], resumed["answer"]) == ("succeeded", "8")
    recorded = list(spans.get_finished_spans())
    (trajectory,) = named(recorded, "node trajectory")
    steps = [s for s in named(recorded, "node ") if s.parent == trajectory.context]
    # the first step's propose, critic and accept nodes are not run again
    assert [
        str(s.attributes["langgraph.node"]) for s in sorted(steps, key=lambda s: s.start_time)
    ] == [
        "propose_step",
        "critic_step",
        "accept_step",
        "finish_trajectory",
    ]
    agents = {str(a.attributes["thinktank.turn.key"]): a for a in named(recorded, "invoke_agent ")}
    assert set(agents) == {"t0/s1/r0/step", "t0/s1/r0/critic"}
    # the failed proposal is asked again, not replayed
    assert "thinktank.turn.replayed" not in agents["t0/s1/r0/step"].attributes
    assert all(trajectory_of(a, recorded) is trajectory for a in agents.values())


class Counter(TypedDict, total=False):
    count: int


def bump(state: Counter) -> Counter:
    return {"count": state.get("count", 0) + 1}


async def test_a_traced_subgraph_keeps_its_settings_namespace_and_interrupt(
    spans: InMemorySpanExporter,
) -> None:
    """A subgraph compiled with a name and an interrupt stops before its second node; the
    paused subgraph's state is found at its namespace, and resuming runs only that node."""
    inner = StateGraph(Counter)
    inner.add_node("first", bump)
    inner.add_node("second", bump)
    inner.add_edge(START, "first")
    inner.add_edge("first", "second")
    outer = StateGraph(Counter)
    outer.add_node("sub", inner.compile(name="counting", interrupt_before=["second"]))
    outer.add_edge(START, "sub")
    builder = trace_nodes(trace_nodes(outer))  # twice: nothing is wrapped twice
    graph = builder.compile(checkpointer=InMemorySaver())
    thread: RunnableConfig = {"configurable": {"thread_id": "paused-inside"}}

    # paused inside the subgraph: the outer state has none of its writes yet
    assert await graph.ainvoke({"count": 0}, thread) == {"count": 0}
    subgraphs = dict(graph.get_subgraphs())
    assert list(subgraphs) == ["sub"] and subgraphs["sub"].name == "counting"
    state = await graph.aget_state(thread, subgraphs=True)
    assert state.next == ("sub",)
    (task,) = state.tasks
    assert task.name == "sub"
    assert task.state.next == ("second",)
    assert task.state.values == {"count": 1}
    assert task.state.config["configurable"]["checkpoint_ns"].startswith("sub:")
    paused = list(spans.get_finished_spans())
    (sub,) = named(paused, "node sub")
    assert [s.name for s in paused if s.parent == sub.context] == ["node first"]
    assert not [s for s in paused if s.status.status_code == StatusCode.ERROR]
    spans.clear()

    assert await graph.ainvoke(None, thread) == {"count": 2}
    resumed = list(spans.get_finished_spans())
    (sub,) = named(resumed, "node sub")
    assert [s.name for s in resumed if s.parent == sub.context] == ["node second"]
    assert len(resumed) == 2


def test_without_an_endpoint_tracing_is_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert configure_tracing() is None


def test_with_an_endpoint_tracing_exports_over_otlp_http_once() -> None:
    """In a fresh process, since the tracer provider can be set once per process."""
    script = """
from opentelemetry import metrics, trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from execution.tracing import configure_tracing
provider = configure_tracing()
assert isinstance(provider, TracerProvider), provider
assert configure_tracing() is provider
assert trace.get_tracer_provider() is provider
exporter = provider._active_span_processor._span_processors[0].span_exporter
print(provider.resource.attributes["service.name"], exporter._endpoint)
"""
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9/otel",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("OTEL_SERVICE_NAME", None)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["thinktank", "http://127.0.0.1:9/otel/v1/traces"]


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that keeps every request's path and protobuf body."""

    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_thinktank_solve_exports_its_trace_and_metrics_over_otlp_http(tmp_path: Path) -> None:
    received: list[tuple[str, bytes]] = []
    handler = type("Handler", (Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scripted = {
        "backend": "scripted",
        "replies": {
            "ceo": ["### Decision: <Continue>\n### Recruit Number: 2\n### Maximum Tokens: 64"],
            "recruiter": ["1. A.\n2. B."],
            "solver": ["\\boxed{7}"],
            "critic": ["[Agree]"],
            "evaluator": ["### Correctness: 1\n### Advice: none"],
        },
    }
    env = {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path),
        "THINKTANK_MODELS__DEFAULT": json.dumps(scripted),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    env.pop("OTEL_SERVICE_NAME", None)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "solve", "3+4?", "-q", "--max-rounds", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stdout + done.stderr

    assert received and {path for path, _ in received} == {"/v1/traces", "/v1/metrics"}
    exported: list[tuple[dict[str, Any], Any]] = []
    for path, body in received:
        if path != "/v1/traces":
            continue
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                exported.extend((resource, span) for span in scope_spans.spans)
    resource = exported[0][0]
    assert resource["service.name"] == "thinktank"
    assert resource["deployment.environment"] == "test"
    names = [span.name for _, span in exported]
    assert names.count("invoke_workflow discussion") == 1
    (workflow,) = [span for _, span in exported if span.name == "invoke_workflow discussion"]
    assert {span.trace_id for _, span in exported} == {workflow.trace_id}
    with sqlite3.connect(tmp_path / "thinktank.db") as conn:
        (stored,) = conn.execute("SELECT trace_id FROM runs").fetchone()
        (turns,) = conn.execute("SELECT count(*) FROM turns").fetchone()
    assert stored == workflow.trace_id.hex()
    assert names.count("chat scripted") == turns == 5  # ceo, recruiter, solver, critic, evaluator

    # the metrics, flushed as the command exits
    histograms: dict[str, list[Any]] = {}
    for path, body in received:
        if path != "/v1/metrics":
            continue
        metrics_request = ExportMetricsServiceRequest()
        metrics_request.ParseFromString(body)
        for resource_metrics in metrics_request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.HasField("histogram"):
                        histograms.setdefault(metric.name, []).extend(metric.histogram.data_points)
    usage = {
        next(a.value.string_value for a in p.attributes if a.key == "gen_ai.token.type"): p
        for p in histograms["gen_ai.client.token.usage"]
    }
    assert set(usage) == {"input", "output"}
    assert all(p.count == turns for p in usage.values())
    assert tuple(usage["input"].explicit_bounds) == TOKEN_BUCKETS
    (duration,) = histograms["gen_ai.client.operation.duration"]
    assert duration.count == turns
    assert sum(p.count for p in histograms["gen_ai.invoke_agent.duration"]) == turns + 1
