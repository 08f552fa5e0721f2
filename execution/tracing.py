"""Tracing: the OTLP exporter setup, and the spans of runs and graph nodes.

A run's trace, after the OpenTelemetry GenAI conventions (``gen_ai.*`` attributes)::

    invoke_workflow {pattern}            one execution of a run (execution.runner.execute_run)
      node {name}                        one execution of a LangGraph node (trace_nodes)
        invoke_agent {agent name}        one turn (agents.calls.ask, agents.genai_spans)
          chat {model}                   the model call; absent when a resumed run replays it

The workflow span carries the pattern as ``gen_ai.agent.name``: the GenAI conventions (v0.1.0
of their own repository) made the workflow span a kind of internal agent span, its operation
still ``invoke_workflow``, and record workflows on ``gen_ai.invoke_agent.duration`` too.

Nothing is exported unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set
and :func:`configure_tracing` was called (the API, ``thinktank solve`` / ``runs resume`` and
the Celery workers call it); until then the API's no-op tracer makes every span nearly free.
The same call installs a meter provider exporting the GenAI metrics (``agents.genai_metrics``)
over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._METRICS_ENDPOINT``) is set.
The standard ``OTEL_*`` variables (headers, service name, resource attributes, sampler, metric
export interval) apply.

Node spans come from wrapping each node's runnable before the graph is compiled, so every
pattern gets them without touching its module. The wrapper runs inside the node's own asyncio
task (LangGraph copies the caller's context into each task), so the node's span is the
current span for everything the node awaits: turns made in the node are its children, and
parallel ``Send`` branches each have their own. A node that runs a compiled subgraph (such as
``spc_search``'s ``trajectory``) has the ``node`` spans of the subgraph's nodes as its
children, and they have the turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import Runnable, RunnableConfig
from langgraph._internal._runnable import RunnableCallable
from langgraph.errors import GraphBubbleUp
from langgraph.graph.state import CompiledStateGraph
from langgraph.pregel import Pregel
from langgraph.types import All
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, format_trace_id

from agents.calls import RunCancelled
from agents.genai_metrics import metrics_active, record_invocation
from agents.genai_spans import (
    AGENT_NAME,
    CONVERSATION_ID,
    ERROR_TYPE,
    OPERATION,
    ROUND,
    error_type,
    outcome_span,
    record_error,
    tracing_active,
)
from store import metrics

try:
    from langgraph._internal._constants import CONFIG_KEY_RUNTIME
except ImportError:  # pragma: no cover - LangGraph moved its internals; the attempt is optional
    CONFIG_KEY_RUNTIME = "__pregel_runtime"

if TYPE_CHECKING:
    from langgraph.graph import StateGraph
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from store.runs import Store
    from store.tables.runs import Run

log = logging.getLogger(__name__)
tracer = trace.get_tracer("thinktank.services")

SESSION_ID = "session.id"
NODE = "langgraph.node"
STEP = "langgraph.step"
ATTEMPT = "langgraph.node.attempt"
RUN_STATUS = "thinktank.run.status"
STOP_REASON = "thinktank.run.stop_reason"

# Ways a node ends that are not failures: LangGraph's interrupts and parent commands, and a
# run its owner cancelled.
NODE_STOPS: tuple[type[BaseException], ...] = (GraphBubbleUp, RunCancelled)

# --- setup ---------------------------------------------------------------------------------

_lock = threading.Lock()
_provider: TracerProvider | None = None
_meter_provider: MeterProvider | None = None


def _exporting(signal: str) -> bool:
    """Whether the environment asks for OTLP export of ``signal`` (traces, metrics)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def exporter_configured() -> bool:
    """Whether the environment asks for OTLP trace export."""
    return _exporting("traces")


def configure_tracing(service_name: str = "thinktank") -> TracerProvider | None:
    """Install an SDK tracer provider exporting over OTLP/HTTP, when the environment names an
    endpoint; otherwise do nothing and return None. Safe to call more than once. Metrics
    likewise (see :func:`configure_metrics`).

    An SDK provider someone else already installed (``opentelemetry-instrument``, a test) is
    kept as it is and returned. ``OTEL_SERVICE_NAME`` wins over ``service_name``.
    """
    global _provider
    with _lock:
        _configure_metrics(service_name)
        if _provider is not None:
            return _provider
        if not exporter_configured():
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            _provider = current
            return current
        provider = TracerProvider(resource=_resource(service_name))
        # the exporter reads the endpoint, headers, timeout and compression from OTEL_* vars
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            log.warning("another OpenTelemetry tracer provider is installed; not exporting")
            provider.shutdown()
            return None
        _provider = provider
        return provider


def configure_metrics(service_name: str = "thinktank") -> MeterProvider | None:
    """Install an SDK meter provider exporting over OTLP/HTTP every
    ``OTEL_METRIC_EXPORT_INTERVAL`` (60 s) and at exit, when the environment names an
    endpoint; otherwise None. An SDK provider already installed is kept and returned."""
    with _lock:
        return _configure_metrics(service_name)


def _configure_metrics(service_name: str) -> MeterProvider | None:
    global _meter_provider
    if _meter_provider is not None:
        return _meter_provider
    if not _exporting("metrics"):
        return None
    from opentelemetry import metrics
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    current = metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        _meter_provider = current
        return current
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    provider = MeterProvider(metric_readers=[reader], resource=_resource(service_name))
    metrics.set_meter_provider(provider)
    if metrics.get_meter_provider() is not provider:
        log.warning("another OpenTelemetry meter provider is installed; not exporting metrics")
        provider.shutdown()
        return None
    _meter_provider = provider
    return provider


def _resource(service_name: str) -> Resource:
    """The ``OTEL_*`` resource, named ``service_name`` unless the environment names it."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


# --- runs ----------------------------------------------------------------------------------


@dataclass
class RunObservation:
    """The span of one run's execution; :meth:`finish` records how the run ended."""

    span: Span
    status: str | None = None

    def finish(self, outcome: Mapping[str, Any]) -> None:
        self.status = str(outcome["status"])
        if not self.span.is_recording():
            return
        self.span.set_attribute(RUN_STATUS, self.status)
        if outcome.get("stop_reason"):
            self.span.set_attribute(STOP_REASON, str(outcome["stop_reason"]))
        if self.status == "failed":
            self.span.set_status(Status(StatusCode.ERROR, str(outcome.get("error") or "failed")))


@contextlib.asynccontextmanager
async def observe_run(store: Store, run: Run) -> AsyncIterator[RunObservation]:
    """The ``invoke_workflow {pattern}`` span and the run metrics around one execution.

    The span starts a trace of its own (linked to the caller's span, if any: a run outlives
    the request that queued it); its trace id is stored on the run at once, so a dashboard can
    go from a run to its trace. A resumed run gets a new trace, which replaces the stored id.
    """
    caller = trace.get_current_span().get_span_context()
    measured: dict[str, Any] = {OPERATION: "invoke_workflow", AGENT_NAME: run.pattern}
    attributes: dict[str, Any] = {
        **measured,
        CONVERSATION_ID: run.id,
        SESSION_ID: run.id,
        "thinktank.run.resumed": run.attempts > 1,  # ``run`` as its claim left it
    }
    if run.trace_id:
        attributes["thinktank.run.previous_trace_id"] = run.trace_id
    with tracer.start_as_current_span(
        f"invoke_workflow {run.pattern}",
        context=Context(),
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        links=[Link(caller)] if caller.is_valid else None,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        observation = RunObservation(span)
        metrics.run_started(run.pattern)
        status = "error"
        started = time.perf_counter()
        try:
            span_context = span.get_span_context()
            if span_context.is_valid:
                await store.set_trace_id(run.id, format_trace_id(span_context.trace_id))
            yield observation
            status = observation.status or "error"
            if status == "failed":
                measured[ERROR_TYPE] = "failed"
        except asyncio.CancelledError as exc:
            status = "interrupted"
            measured[ERROR_TYPE] = error_type(exc)
            record_error(span, exc)
            raise
        except BaseException as exc:
            measured[ERROR_TYPE] = error_type(exc)
            record_error(span, exc)
            raise
        finally:
            metrics.run_ended(run.pattern, status)
            if metrics_active():
                record_invocation(measured, time.perf_counter() - started)


# --- graph nodes ---------------------------------------------------------------------------


@contextlib.contextmanager
def _node_span(name: str, input: Any, config: RunnableConfig | None) -> Iterator[None]:
    """The ``node {name}`` span around one execution of a node; none until tracing is on."""
    if not tracing_active():
        yield
        return
    config = config or {}
    metadata = config.get("metadata") or {}
    configurable = config.get("configurable") or {}
    attributes: dict[str, Any] = {NODE: name}
    step = metadata.get("langgraph_step")
    if isinstance(step, int):
        attributes[STEP] = step
    thread_id = configurable.get("thread_id")
    if isinstance(thread_id, str):
        attributes[CONVERSATION_ID] = thread_id
    if isinstance(input, Mapping) and isinstance(input.get("round"), int):
        attributes[ROUND] = input["round"]
    info = getattr(configurable.get(CONFIG_KEY_RUNTIME), "execution_info", None)
    attempt = getattr(info, "node_attempt", None)
    if isinstance(attempt, int):
        attributes[ATTEMPT] = attempt
    with outcome_span(tracer, f"node {name}", SpanKind.INTERNAL, attributes, stops=NODE_STOPS):
        yield


class TracedNode(Runnable[Any, Any]):
    """A graph node's runnable inside a ``node {name}`` span."""

    def __init__(self, name: str, inner: Runnable[Any, Any]) -> None:
        self.name = name
        self.inner = inner

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        with _node_span(self.name, input, config):
            return self.inner.invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        with _node_span(self.name, input, config):
            return await self.inner.ainvoke(input, config, **kwargs)


class TracedSubgraph(RunnableCallable):
    """A node that is a compiled subgraph, run inside a ``node {name}`` span.

    The wrapper is a node function as LangGraph makes one from a plain function
    (``RunnableCallable``, no callback run of its own) that names the subgraph in its closure:
    LangGraph looks there for the subgraph a node runs (``find_subgraph_pregel``), so the node
    is still a subgraph to ``get_state(subgraphs=True)``, to ``update_state`` on its namespace
    and to ``get_graph(xray=True)``; a ``Runnable`` class around it would hide it. The
    subgraph gets the task's config as it is, so its checkpoint namespace
    (``{node}:{task id}``) and its checkpointer are the ones it had unwrapped.
    """

    def __init__(self, name: str, subgraph: Pregel) -> None:
        def run(input: Any, config: RunnableConfig) -> Any:
            with _node_span(name, input, config):
                return subgraph.invoke(input, config)

        async def arun(input: Any, config: RunnableConfig) -> Any:
            with _node_span(name, input, config):
                return await subgraph.ainvoke(input, config)

        super().__init__(run, arun, name=name, trace=False)
        self.subgraph = subgraph


# What a compiled graph may carry that compile() does not take (``with_config`` sets config).
_SETTINGS_AFTER_COMPILE = (
    "config",
    "step_timeout",
    "retry_policy",
    "cache_policy",
    "stream_mode",
    "stream_eager",
)


def _with_traced_nodes(graph: Pregel) -> Pregel:
    """``graph`` compiled again from its builder once the builder's nodes are traced, with the
    settings it was compiled with; a graph with no builder is returned as it is."""
    if not isinstance(graph, CompiledStateGraph):
        return graph
    traced = trace_nodes(graph.builder).compile(
        checkpointer=graph.checkpointer,
        cache=graph.cache,
        store=graph.store,
        interrupt_before=_node_names(graph.interrupt_before_nodes),
        interrupt_after=_node_names(graph.interrupt_after_nodes),
        debug=graph.debug,
        name=graph.name,
        transformers=graph.stream_transformers,
    )
    for setting in _SETTINGS_AFTER_COMPILE:
        setattr(traced, setting, getattr(graph, setting))
    return traced


def _node_names(nodes: All | Sequence[str]) -> All | list[str]:
    return nodes if nodes == "*" else list(nodes)


def trace_nodes(builder: StateGraph) -> StateGraph:
    """Give every node of an uncompiled graph a ``node {name}`` span per execution, the nodes
    of its subgraphs too, as deep as they nest; returns ``builder``, changed in place. Calling
    it again wraps nothing twice.

    A node that is a compiled subgraph is compiled again from the subgraph's builder after
    this has traced the builder's nodes, keeping what the subgraph was compiled with
    (checkpointer, name, interrupts, store, cache, debug, stream transformers, and the config
    ``with_config`` gave it), and runs inside its own node's span, so the subgraph's node
    spans nest under it. LangGraph still sees it as a subgraph (see :class:`TracedSubgraph`)
    and its checkpoint namespace is unchanged, so a run that stopped inside it resumes there.
    Left as they are: the nodes of a graph compiled from no ``StateGraph`` (a hand-built
    ``Pregel``; it still gets its node's span) and of a graph that a node function calls.
    """
    for name, spec in builder.nodes.items():
        runnable = spec.runnable
        if isinstance(runnable, TracedNode | TracedSubgraph):
            continue
        if isinstance(runnable, Pregel):
            spec.runnable = TracedSubgraph(name, _with_traced_nodes(runnable))
        else:
            spec.runnable = TracedNode(name, runnable)  # type: ignore[assignment]
    return builder
