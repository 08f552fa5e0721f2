"""OpenTelemetry spans of agent turns and model calls, after the GenAI semantic conventions.

Only the OpenTelemetry *API* is used here: with no SDK configured (see
``execution.tracing.configure_tracing``) every tracer is the API's no-op one, so these spans
cost a context switch and nothing is recorded or sent.

- :func:`traced_ask` decorates :func:`agents.calls.ask` with an ``invoke_agent {agent name}``
  span (INTERNAL), the span of one agent turn: the agent's name and description and the model
  it asks, set when the span starts (the attributes a sampler may read), then the turn's token
  usage and finish reason. An agent in this process has no provider and no stable id, so, as
  the conventions say of internal agent spans, it carries neither;
- :func:`traced_generate` wraps the backend call in a ``chat {model}`` span (CLIENT), a child of
  that turn's span, with the provider, the server's address and port (backends reached over
  HTTP), the request parameters, the response's id and model, token usage and finish reasons;
- :func:`mark_replayed` marks a turn replayed from the store on resume: no model was called, so
  it has no ``chat`` span.

Prompts and completions are not recorded unless ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_
CONTENT`` is ``true`` (or ``span_only`` / ``span_and_event``); they then go on the ``chat`` span
as ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON, role + parts).

Both also record the GenAI metrics of :mod:`agents.genai_metrics` once a meter provider is
installed, with or without a tracer provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agents.genai_metrics import metrics_active, record_invocation, record_model_call

if TYPE_CHECKING:
    from agents.model import ModelBackend, ModelRequest, ModelResponse, TextCallback


# What a span reads of the agent and the run context of ``agents.calls``, named here rather
# than imported from it: ``agents.calls`` imports this module to trace its calls.
class Speaker(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def description(self) -> str | None: ...


class Models(Protocol):
    def get(self, logical_name: str) -> ModelBackend: ...


class CallContext(Protocol):
    @property
    def run_id(self) -> str: ...
    @property
    def models(self) -> Models: ...


tracer = trace.get_tracer("thinktank.agents")

# GenAI semantic-convention attribute names (open-telemetry/semantic-conventions-genai).
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
AGENT_NAME = "gen_ai.agent.name"
AGENT_DESCRIPTION = "gen_ai.agent.description"
CONVERSATION_ID = "gen_ai.conversation.id"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
MAX_TOKENS = "gen_ai.request.max_tokens"
TEMPERATURE = "gen_ai.request.temperature"
TOP_P = "gen_ai.request.top_p"
SEED = "gen_ai.request.seed"
STOP_SEQUENCES = "gen_ai.request.stop_sequences"
CHOICE_COUNT = "gen_ai.request.choice.count"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
# Ours: the agent's role (from the papers), and where in the run a turn belongs.
AGENT_ROLE = "thinktank.agent.role"
TURN_KEY = "thinktank.turn.key"
NODE = "thinktank.node"
ROUND = "thinktank.round"
REPLAYED = "thinktank.turn.replayed"

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# Set by mark_replayed for the turn in progress: a replayed turn invoked no agent, so it is
# left out of the invocation metric (as it is of the turn metrics, see store.metrics).
_replayed: ContextVar[bool] = ContextVar("thinktank_turn_replayed", default=False)


def tracing_active() -> bool:
    """Whether a tracer provider is installed. Until one is, spans are skipped outright: even
    the API's no-op spans cost a few microseconds each."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def capture_content() -> bool:
    """Whether prompts and completions go on spans (opt-in, off by default)."""
    value = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower()
    return value in ("true", "1", "span_only", "span_and_event")


def provider_name(backend: ModelBackend) -> str:
    """The backend kind (``local``, ``openai``, ``scripted``...) as ``gen_ai.provider.name``."""
    kind = getattr(getattr(backend, "config", None), "backend", None)
    if isinstance(kind, str):
        return kind
    name = type(backend).__name__.lower().removesuffix("backend")
    return name or "unknown"


def server_attributes(backend: ModelBackend) -> dict[str, Any]:
    """``server.address`` and ``server.port`` of a backend reached over HTTP (its
    ``config.base_url``); none for one in this process or behind a Ray handle."""
    url = getattr(getattr(backend, "config", None), "base_url", None)
    if not isinstance(url, str):
        return {}
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return {}
    if not parts.hostname:
        return {}
    attributes: dict[str, Any] = {SERVER_ADDRESS: parts.hostname}
    if port is not None:
        attributes[SERVER_PORT] = port
    return attributes


def error_type(exc: BaseException) -> str:
    """``error.type`` of a failure: the exception's class, or ``cancelled``."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return type(exc).__qualname__


def record_error(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: ``error.type``, the exception event, ERROR status."""
    if not span.is_recording():
        return
    span.set_attribute(ERROR_TYPE, error_type(exc))
    if isinstance(exc, asyncio.CancelledError):
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
        return
    retryable = getattr(exc, "retryable", None)
    if isinstance(retryable, bool):
        span.set_attribute("thinktank.error.retryable", retryable)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def record_stop(span: Span, exc: BaseException) -> None:
    """An expected way for a turn or node to end early (budget spent, run cancelled): an
    event, not an error."""
    if span.is_recording():
        span.add_event("thinktank.stopped", {"reason": type(exc).__name__, "message": str(exc)})


@contextlib.contextmanager
def outcome_span(
    span_tracer: trace.Tracer,
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any],
    *,
    stops: tuple[type[BaseException], ...] = (),
) -> Iterator[Span]:
    """The current span for a block, recording how it ended: an exception in ``stops`` as an
    event (an expected early end), any other as an error."""
    with span_tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except stops as exc:
            record_stop(span, exc)
            raise
        except BaseException as exc:
            record_error(span, exc)
            raise


def traced_ask(*, expected: tuple[type[BaseException], ...] = ()) -> Callable[[F], F]:
    """Decorate ``ask(ctx, agent, messages, *, key, node, round, ...)`` with an
    ``invoke_agent {agent.name}`` span and the invocation metric; exceptions in ``expected``
    are stops, not errors."""

    def decorate(ask: F) -> F:
        @functools.wraps(ask)
        async def traced(ctx: CallContext, agent: Speaker, messages: Any, **kwargs: Any) -> Any:
            tracing, measuring = tracing_active(), metrics_active()
            if not (tracing or measuring):
                return await ask(ctx, agent, messages, **kwargs)
            model = _requested_model(ctx, agent)
            measured: dict[str, Any] = {OPERATION: "invoke_agent", AGENT_NAME: agent.name}
            if model is not None:
                measured[REQUEST_MODEL] = model
            attributes: dict[str, Any] = {**measured, CONVERSATION_ID: ctx.run_id}
            if agent.description:
                attributes[AGENT_DESCRIPTION] = agent.description
            attributes |= {
                AGENT_ROLE: agent.role,
                TURN_KEY: kwargs.get("key", ""),
                NODE: kwargs.get("node", ""),
                ROUND: kwargs.get("round", 0),
            }
            replayed = _replayed.set(False)
            started = time.perf_counter()
            try:
                if not tracing:
                    return await ask(ctx, agent, messages, **kwargs)
                with outcome_span(
                    tracer,
                    f"invoke_agent {agent.name}",
                    SpanKind.INTERNAL,
                    attributes,
                    stops=expected,
                ) as span:
                    turn = await ask(ctx, agent, messages, **kwargs)
                    _record_usage(span, turn)
                    return turn
            except expected:
                raise
            except BaseException as exc:
                measured[ERROR_TYPE] = error_type(exc)
                raise
            finally:
                if measuring and not _replayed.get():
                    record_invocation(measured, time.perf_counter() - started)
                _replayed.reset(replayed)

        return traced  # type: ignore[return-value]

    return decorate


def _requested_model(ctx: CallContext, agent: Speaker) -> str | None:
    """The model the agent's calls go to, known before the turn starts (a sampler reads
    it); None when the agent's model cannot be resolved (the turn then fails saying so)."""
    try:
        return ctx.models.get(agent.model).name
    except Exception:
        return None


def _record_usage(span: Span, turn: Any) -> None:
    """The turn's token usage and finish reason on its ``invoke_agent`` span."""
    record = getattr(turn, "record", None)
    if record is None or not span.is_recording():
        return
    span.set_attributes(
        {INPUT_TOKENS: record.prompt_tokens, OUTPUT_TOKENS: record.completion_tokens}
    )
    if record.finish_reason:
        span.set_attribute(FINISH_REASONS, [record.finish_reason])


def mark_replayed(key: str) -> None:
    """The current turn was replayed from the store (a resumed run): no model call, no chat
    span; its ``invoke_agent`` span says so."""
    _replayed.set(True)
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(REPLAYED, True)
        span.add_event("thinktank.turn.replayed", {TURN_KEY: key})


def _messages_json(messages: list[Any]) -> str:
    return json.dumps(
        [{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in messages]
    )


async def traced_generate(
    backend: ModelBackend,
    request: ModelRequest,
    *,
    conversation_id: str,
    on_text: TextCallback | None = None,
    halt: asyncio.Event | None = None,
) -> ModelResponse:
    """``backend.generate(request)`` inside a ``chat {model}`` CLIENT span.

    ``on_text`` and ``halt`` are passed on only when given, so a backend written before
    streaming (or stopping) still serves calls that do not use them.
    """
    options: dict[str, Any] = {} if on_text is None else {"on_text": on_text}
    if halt is not None:
        options["halt"] = halt
    tracing, measuring = tracing_active(), metrics_active()
    if not (tracing or measuring):
        return await backend.generate(request, **options)
    model = backend.name
    measured: dict[str, Any] = {
        OPERATION: "chat",
        PROVIDER: provider_name(backend),
        REQUEST_MODEL: model,
        **server_attributes(backend),
    }
    started = time.perf_counter()
    try:
        if tracing:
            response = await _chat_span(backend, request, measured, conversation_id, options)
        else:
            response = await backend.generate(request, **options)
    except BaseException as exc:
        if measuring:
            failed = {**measured, ERROR_TYPE: error_type(exc)}
            record_model_call(failed, time.perf_counter() - started)
        raise
    if measuring:
        record_model_call(
            {**measured, RESPONSE_MODEL: response.model},
            time.perf_counter() - started,
            input_tokens=response.prompt_tokens,
            output_tokens=response.completion_tokens,
        )
    return response


async def _chat_span(
    backend: ModelBackend,
    request: ModelRequest,
    measured: dict[str, Any],
    conversation_id: str,
    options: dict[str, Any],
) -> ModelResponse:
    """The backend call inside its ``chat {model}`` span."""
    params = request.params
    attributes: dict[str, Any] = {
        **measured,
        MAX_TOKENS: params.max_tokens,
        TEMPERATURE: params.temperature,
        TOP_P: params.top_p,
        CONVERSATION_ID: conversation_id,
    }
    if params.seed is not None:
        attributes[SEED] = params.seed
    if params.stop:
        attributes[STOP_SEQUENCES] = list(params.stop)
    if params.n != 1:
        attributes[CHOICE_COUNT] = params.n
    name = f"chat {measured[REQUEST_MODEL]}"
    with outcome_span(tracer, name, SpanKind.CLIENT, attributes) as span:
        response = await backend.generate(request, **options)
        if span.is_recording():
            span.set_attributes(
                {
                    RESPONSE_MODEL: response.model,
                    INPUT_TOKENS: response.prompt_tokens,
                    OUTPUT_TOKENS: response.completion_tokens,
                    FINISH_REASONS: [c.finish_reason for c in response.completions],
                }
            )
            if response.response_id:
                span.set_attribute(RESPONSE_ID, response.response_id)
            if capture_content():
                span.set_attribute(INPUT_MESSAGES, _messages_json(request.messages))
                span.set_attribute(
                    OUTPUT_MESSAGES,
                    json.dumps(
                        [
                            {
                                "role": "assistant",
                                "parts": [{"type": "text", "content": c.text}],
                                "finish_reason": c.finish_reason,
                            }
                            for c in response.completions
                        ]
                    ),
                )
        return response
