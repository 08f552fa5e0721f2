"""OpenTelemetry spans of agent turns and model calls, after the GenAI semantic conventions.

Only the OpenTelemetry *API* is used here: with no SDK configured (see
``execution.tracing.configure_tracing``) every tracer is the API's no-op one, so these spans
cost a context switch and nothing is recorded or sent.

- :func:`traced_ask` decorates :func:`agents.calls.ask` with an ``invoke_agent {agent name}``
  span (INTERNAL), the span of one agent turn;
- :func:`traced_generate` wraps the backend call in a ``chat {model}`` span (CLIENT), a child of
  that turn's span, with the request parameters, token usage and finish reasons;
- :func:`mark_replayed` marks a turn replayed from the store on resume: no model was called, so
  it has no ``chat`` span.

Prompts and completions are not recorded unless ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_
CONTENT`` is ``true`` (or ``span_only`` / ``span_and_event``); they then go on the ``chat`` span
as ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON, role + parts).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from agents.calls import Agent, RunContext
    from agents.model import ModelBackend, ModelRequest, ModelResponse, TextCallback

tracer = trace.get_tracer("thinktank.agents")

# GenAI semantic-convention attribute names (open-telemetry/semantic-conventions-genai).
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
AGENT_DESCRIPTION = "gen_ai.agent.description"
CONVERSATION_ID = "gen_ai.conversation.id"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
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
# Ours: where in the run a turn belongs.
TURN_KEY = "thinktank.turn.key"
NODE = "thinktank.node"
ROUND = "thinktank.round"
REPLAYED = "thinktank.turn.replayed"

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


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


def record_error(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: ``error.type``, the exception event, ERROR status."""
    if not span.is_recording():
        return
    if isinstance(exc, asyncio.CancelledError):
        span.set_attribute(ERROR_TYPE, "cancelled")
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
        return
    span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
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
    ``invoke_agent {agent.name}`` span; exceptions in ``expected`` are stops, not errors."""

    def decorate(ask: F) -> F:
        @functools.wraps(ask)
        async def traced(ctx: RunContext, agent: Agent, messages: Any, **kwargs: Any) -> Any:
            if not tracing_active():
                return await ask(ctx, agent, messages, **kwargs)
            attributes: dict[str, Any] = {
                OPERATION: "invoke_agent",
                AGENT_NAME: agent.name,
                AGENT_ID: agent.role,
                CONVERSATION_ID: ctx.run_id,
                TURN_KEY: kwargs.get("key", ""),
                NODE: kwargs.get("node", ""),
                ROUND: kwargs.get("round", 0),
            }
            with outcome_span(
                tracer,
                f"invoke_agent {agent.name}",
                SpanKind.INTERNAL,
                attributes,
                stops=expected,
            ):
                return await ask(ctx, agent, messages, **kwargs)

        return traced  # type: ignore[return-value]

    return decorate


def mark_replayed(key: str) -> None:
    """The current turn was replayed from the store (a resumed run): no model call, no chat
    span; its ``invoke_agent`` span says so."""
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
    if not tracing_active():
        return await backend.generate(request, **options)
    model = backend.name
    provider = provider_name(backend)
    agent_span = trace.get_current_span()
    if agent_span.is_recording():
        agent_span.set_attributes({PROVIDER: provider, REQUEST_MODEL: model})
    params = request.params
    attributes: dict[str, Any] = {
        OPERATION: "chat",
        PROVIDER: provider,
        REQUEST_MODEL: model,
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
    with outcome_span(tracer, f"chat {model}", SpanKind.CLIENT, attributes) as span:
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
