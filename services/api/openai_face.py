"""The OpenAI-compatible face: any OpenAI client can ask thinktank's agents a question.

``GET /v1/models`` lists one model per pattern, ``thinktank/<pattern>``; ``POST
/v1/chat/completions`` turns a chat request into a run, exactly as ``POST /v1/runs`` would
(same validation, same ``Idempotency-Key`` rule scoped to the caller's API key, same
executor), and answers when it ends.

How a chat request becomes a run:

- **pattern**: the model name, ``thinktank/<pattern>``; the bare pattern name works too, and
  ``-`` and ``_`` are interchangeable (``thinktank/self-consistency``).
- **problem**: the text of the *last* user message that has any. Messages before it, when
  there are any, are prepended as context, one ``[role] text`` paragraph each, under a line
  saying so, and the question follows under ``Problem:``. Messages after it (an assistant
  prefill, tool results, an empty user message) are ignored. Only text content is accepted.
- **config**: ``temperature`` and ``top_p`` set the pattern's fields of those names;
  ``max_completion_tokens`` (or the older ``max_tokens``) sets the pattern's ``max_tokens``
  where it has one (single, self_consistency: a cap per call) and the run's ``token_budget``
  otherwise (discussion: a cap on the whole conversation). ``thinktank.config`` (sent with the
  clients' ``extra_body``) passes any other pattern option and wins over the mapped fields.
  ``n`` must be 1; ``user`` is accepted and not stored; other OpenAI fields are ignored,
  except those whose loss would change what the client gets (below).
- **tools and structured output** are refused with a 400 naming the parameter: a run's agents
  solve the problem and answer in prose, they do not call a client's tools, and no backend
  can hold a whole multi-agent conversation to a JSON schema. Answering prose instead would
  hand a client that expects a tool call or JSON nothing it can use (LangChain's
  ``with_structured_output`` would return ``None``). ``tools`` (and the older ``functions``)
  are accepted when empty or with ``tool_choice`` (``function_call``) ``"none"``;
  ``response_format`` ``{"type": "text"}`` is served. The bare answer is in the reply's
  ``thinktank.answer``.

Retries: the OpenAI clients retry a request that timed out or lost its connection, saying so
in ``x-stainless-retry-count``. Such a retry (without an ``Idempotency-Key``) joins the run
its first attempt started, the newest run of the same caller with the same pattern, problem
and config that is still going or ended in the last ten minutes, and answers with its result;
one ``create()`` is one run, however many attempts it takes. A request without the header is
always a new run: two identical questions are two runs.

What comes back:

- **non-streaming**: a ``chat.completion`` once the run has ended. Its content is the final
  solution as its solver wrote it (for self-consistency, the latest sample that voted for the
  winning answer), then a blank line and ``**Answer:** <answer>``, so the reasoning and an
  unambiguous answer are both there (a run without an answer says ``**No answer** (the run
  stopped: <stop_reason>)`` instead). ``usage`` counts every token of every agent in the run;
  ``finish_reason`` is ``length`` when the run ended on its token budget, ``stop`` otherwise.
- **streaming**: the conversation as it happens, one content delta per finished agent turn
  (``**Solver** (round 0): ...``, the round only for patterns that have rounds: what the agent
  said to the others, its text after any ``</think>``), then a chunk with ``**Answer:**
  <answer>`` and the finish reason, then the usage chunk when
  ``stream_options.include_usage`` asks for it, then ``data: [DONE]``. A client that leaves
  early stops only its stream; the run goes on and is stored.
- Both carry a ``thinktank`` object (``run_id``, ``pattern``, ``answer``, ``stop_reason``; in
  a stream on the first and the final chunk) and an ``x-thinktank-run-id`` header, so the
  whole transcript can be read at ``/v1/runs/{run_id}/turns``.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 404
``model_not_found``, 400 for a request this face cannot serve, and 502 (``run_failed``,
``run_cancelled``) when the run ends without an answer to give; a stream that has started
reports that as an ``error`` data line instead. A 502 says ``x-should-retry: false``: the run
is stored with its reason, and the OpenAI clients' automatic retry would only start another.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from sse_starlette import EventSourceResponse

from execution.runner import create_run
from graphs.patterns import PATTERNS, Pattern, UnknownPattern, get_pattern
from roles.answers import extract_answer, normalize_answer, shared_text
from services.api.deps import Services, get_services
from services.api.runs import caller_key_id, replay
from services.api.schemas.openai import (
    MODEL_PREFIX,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    ChunkDelta,
    ErrorBody,
    ErrorDetail,
    FinishReason,
    ModelCard,
    ModelList,
    ThinktankResult,
    Usage,
)
from services.api.schemas.runs import MAX_PROBLEM_CHARS, check_config
from services.api.schemas.wire import event_stream
from store.api_keys import scoped_idempotency_key
from store.bus import RESYNC
from store.runs import TERMINAL, Store
from store.tables.runs import Run, Turn

log = logging.getLogger(__name__)

# How long a follower waits for news before it looks at the run itself: a run cancelled while
# queued ends without a run_finished event, and a lost live event must not hang a request.
IDLE_CHECK_S = 5.0
CONTEXT_HEADER = "Earlier in this conversation (context for the problem below):"
PROBLEM_HEADER = "Problem:"
# The header in which OpenAI's clients (Python, Node, and what is built on them: LangChain)
# count the retries they have taken of one request.
RETRY_COUNT_HEADER = "x-stainless-retry-count"
# A client retries within seconds of giving up on an attempt (a timeout, a dropped connection),
# so the run a retry joins is still going or has only just ended; an older one was another
# request's. The look-back only bounds the search: the OpenAI client's defaults (600 s timeout,
# 2 retries) come back 20 minutes after the first attempt.
RETRY_JOINS_ENDED_WITHIN = timedelta(minutes=10)
RETRY_LOOKBACK = timedelta(days=1)
# The problem's start narrows the store's search (SQLite's LIKE refuses patterns over 50,000
# bytes); the whole problem is compared afterwards.
RETRY_SEARCH_CHARS = 1000


class OpenAIError(Exception):
    """An error this face answers in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message=message, type=type, param=param, code=code)
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = ErrorBody(error=self.detail).model_dump(mode="json")
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def param_name(loc: Sequence[Any]) -> str | None:
    """A pydantic error location as the request parameter a client wrote: messages[0].role."""
    if len(loc) > 1 and loc[0] == "header":
        return str(loc[1]).title()
    name = ""
    for part in loc:
        if part == "body" and not name:
            continue
        name += f"[{part}]" if isinstance(part, int) else f"{'.' if name else ''}{part}"
    return name or None


def invalid_request(errors: Sequence[Any], params: dict[str, str] | None = None) -> OpenAIError:
    """400 for pydantic errors; ``params`` renames config fields to the request's own names."""
    if any(error.get("type") == "json_invalid" for error in errors):
        return OpenAIError(400, "the request body is not valid JSON", code="invalid_json")
    described = []
    first_param = None
    for error in errors[:5]:
        loc = list(error.get("loc", ()))
        if params is not None and loc:
            name = params.get(str(loc[0]), f"thinktank.config.{param_name(loc)}")
        else:
            name = param_name(loc)
        first_param = first_param or name
        described.append(f"{name}: {error.get('msg')}" if name else str(error.get("msg")))
    return OpenAIError(400, "; ".join(described), code="invalid_value", param=first_param)


class OpenAIRoute(APIRoute):
    """Answers this router's errors in OpenAI's shape; the app's handlers keep theirs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def openai_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as exc:
                return exc.response()
            except RequestValidationError as exc:
                return invalid_request(exc.errors()).response()

        return openai_errors


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a request this face cannot serve"},
    404: {"model": ErrorBody, "description": "model_not_found"},
}


# --- models ------------------------------------------------------------------------------


def model_id(pattern: str) -> str:
    return f"{MODEL_PREFIX}{pattern}"


def resolve_model(name: str) -> Pattern:
    """``thinktank/<pattern>`` (or the bare pattern name) to its pattern, else 404."""
    bare = name[len(MODEL_PREFIX) :] if name.lower().startswith(MODEL_PREFIX) else name
    try:
        return get_pattern(bare)
    except UnknownPattern:
        known = ", ".join(model_id(p) for p in sorted(PATTERNS))
        raise OpenAIError(
            404,
            f"The model {name!r} does not exist; known models: {known}",
            code="model_not_found",
            param="model",
        ) from None


def model_card(pattern: Pattern) -> ModelCard:
    return ModelCard(id=model_id(pattern.name), summary=pattern.summary)


@router.get("/models", response_model=ModelList)
async def list_models() -> ModelList:
    """One model per pattern: ``thinktank/<pattern>``."""
    return ModelList(data=[model_card(p) for p in PATTERNS.values()])


@router.get("/models/{model:path}", response_model=ModelCard, responses=ERRORS)
async def retrieve_model(model: str) -> ModelCard:
    """One pattern as a model."""
    return model_card(resolve_model(model))


# --- chat request -> run -----------------------------------------------------------------


def message_text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.type != "text":
            raise OpenAIError(
                400,
                f"messages[{index}] has a {part.type!r} part; only text content is supported",
                code="unsupported_content",
                param=f"messages[{index}].content",
            )
        texts.append(part.text or "")
    return "\n".join(texts)


def message_texts(messages: list[ChatMessage]) -> list[str]:
    """Every message's text, read alike whether or not it reaches the run: text only, and no
    NUL character, which the store cannot keep (as everywhere in the API)."""
    texts = [message_text(message, index) for index, message in enumerate(messages)]
    for index, text in enumerate(texts):
        if "\x00" in text:
            raise OpenAIError(
                400,
                f"messages[{index}] contains a NUL character (\\u0000), which cannot be stored",
                param=f"messages[{index}].content",
            )
    return texts


def problem_from(messages: list[ChatMessage]) -> str:
    """The last user message with text, after the earlier messages as context (see the
    module doc); an empty user message after it is passed over like an assistant's."""
    texts = message_texts(messages)
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    asked = ((i, texts[i].strip()) for i in reversed(users))
    last, question = next(((i, text) for i, text in asked if text), (-1, ""))
    if not question:
        raise OpenAIError(
            400,
            "messages must include a user message with text: the last one is the problem to solve",
            param="messages",
        )
    earlier = [
        f"[{m.role}] {text}"
        for m, text in zip(messages[:last], (t.strip() for t in texts), strict=False)
        if text
    ]
    problem = question
    if earlier:
        context = "\n\n".join(earlier)
        problem = f"{CONTEXT_HEADER}\n\n{context}\n\n{PROBLEM_HEADER}\n\n{question}"
    if len(problem) > MAX_PROBLEM_CHARS:
        raise OpenAIError(
            400,
            f"the problem with its context is {len(problem)} characters; "
            f"at most {MAX_PROBLEM_CHARS} are accepted",
            code="context_length_exceeded",
            param="messages",
        )
    return problem


def refuse_what_a_run_cannot_do(body: ChatCompletionRequest) -> None:
    """400 for tools and structured output, naming the parameter (see the module doc)."""
    asked = f"the agents of {body.model} solve the problem and answer in prose"
    for tools, choice, param, choice_param in (
        (body.tools, body.tool_choice, "tools", "tool_choice"),
        (body.functions, body.function_call, "functions", "function_call"),
    ):
        if tools and choice != "none":
            raise OpenAIError(
                400,
                f"{param} are not supported: {asked}; they do not call a client's {param}. "
                f"Send no {param} (or {choice_param} 'none'); the bare answer is in the "
                "reply's thinktank.answer",
                code="unsupported_parameter",
                param=param,
            )
        if choice not in (None, "none", "auto"):
            raise OpenAIError(
                400,
                f"{choice_param} {json.dumps(choice)[:200]} asks for a call, but {asked} and call "
                f"no {param}; send {choice_param} 'none' or 'auto', or omit it. The bare "
                "answer is in the reply's thinktank.answer",
                code="unsupported_value",
                param=choice_param,
            )
    kind = body.response_format.type if body.response_format else "text"
    if kind != "text":
        raise OpenAIError(
            400,
            f"response_format {kind[:100]!r} is not supported: {asked} (the solution, then "
            "**Answer:** <answer>), which no backend here can hold to a JSON schema for a "
            "whole multi-agent run. Send response_format {'type': 'text'} or omit it; the "
            "bare answer is in the reply's thinktank.answer",
            code="unsupported_value",
            param="response_format",
        )


def pattern_config(
    pattern: Pattern, body: ChatCompletionRequest
) -> tuple[dict[str, Any], dict[str, str]]:
    """The run's config, and which request parameter set each field (for error messages)."""
    fields = pattern.config_model.model_fields
    config: dict[str, Any] = {}
    params: dict[str, str] = {}

    def put(field: str, value: Any, param: str) -> None:
        if value is not None and field in fields:
            config[field] = value
            params[field] = param

    put("temperature", body.temperature, "temperature")
    put("top_p", body.top_p, "top_p")
    if body.max_completion_tokens is not None:
        limit, limit_param = body.max_completion_tokens, "max_completion_tokens"
    else:
        limit, limit_param = body.max_tokens, "max_tokens"
    put("max_tokens" if "max_tokens" in fields else "token_budget", limit, limit_param)
    for field, value in (body.thinktank.config if body.thinktank else {}).items():
        config[field] = value
        params[field] = f"thinktank.config.{field}"
    return config, params


def retries_taken(request: Request) -> int:
    """How many times the client says it has retried this request (0 when it does not say)."""
    value = request.headers.get(RETRY_COUNT_HEADER, "")
    return int(value) if value.isascii() and value.isdigit() else 0


async def run_being_retried(
    store: Store, pattern: str, problem: str, config: dict[str, Any], api_key_id: str | None
) -> Run | None:
    """The run a retried request's first attempt started, if it is still there to join: the
    newest run of this caller with the same pattern, problem and (validated) config that is
    still going or ended within ``RETRY_JOINS_ENDED_WITHIN``."""
    now = datetime.now(UTC)
    candidates = await store.list_runs(
        pattern=pattern,
        api_key_id=api_key_id,
        search=problem[:RETRY_SEARCH_CHARS],
        created_after=now - RETRY_LOOKBACK,
        limit=20,
    )
    for run in candidates:  # newest first
        if run.api_key_id != api_key_id or run.problem != problem or run.config != config:
            continue
        ended = run.finished_at
        if run.status not in TERMINAL or ended is None:
            return run
        if ended.tzinfo is None:  # SQLite hands back naive datetimes; they are stored in UTC
            ended = ended.replace(tzinfo=UTC)
        return run if now - ended <= RETRY_JOINS_ENDED_WITHIN else None
    return None


async def start_run(
    services: Services,
    request: Request,
    pattern: Pattern,
    body: ChatCompletionRequest,
    idempotency_key: str | None,
) -> Run:
    """Create and queue the run as ``POST /v1/runs`` does; a repeated key returns its run, and
    a client's automatic retry the run its first attempt started (see the module doc)."""
    problem = problem_from(body.messages)
    config, params = pattern_config(pattern, body)
    caller = caller_key_id(request)
    try:
        check_config(pattern, config)
        if idempotency_key is None and retries_taken(request) > 0:
            validated = pattern.config_model.model_validate(config).model_dump(mode="json")
            earlier = await run_being_retried(
                services.store, pattern.name, problem, validated, caller
            )
            if earlier is not None:
                log.info("retry %d of a request joins run %s", retries_taken(request), earlier.id)
                return earlier
        run, created = await create_run(
            services.store,
            pattern.name,
            problem,
            config,
            idempotency_key=scoped_idempotency_key(idempotency_key, caller),
            api_key_id=caller,
        )
    except ValidationError as exc:
        raise invalid_request(exc.errors(), params) from None
    except ValueError as exc:
        raise OpenAIError(400, str(exc), param="messages") from None
    if created:
        await services.executor.enqueue(run.id)
    return run


# --- following a run ---------------------------------------------------------------------


async def stored_event_arrives(wakeups: asyncio.Queue, within_s: float) -> bool:
    """Wait for a published event the store keeps, or for the bus to say it may have dropped
    some (``resync``); live-only ones (tokens) do not count."""
    try:
        async with asyncio.timeout(within_s):
            while True:
                event = await wakeups.get()
                if event.get("id") is not None or event.get("type") == RESYNC["type"]:
                    break
    except TimeoutError:
        return False
    return True


async def follow_run(
    services: Services,
    run_id: str,
    *,
    abandoned: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The run's stored events, (type, payload) in order, until ``run_finished``.

    The store is the record and the bus only says when to read it, so events the bus drops
    for a slow reader still arrive, in order, once. Subscribing before the first read leaves
    no gap. A run that ends without a ``run_finished`` event (cancelled while queued) is
    noticed at the next idle check and gets one made from its row. At idle checks,
    ``abandoned`` saying yes (the client has gone) ends the following early; never the run.
    """
    after = 0
    ended: Run | None = None
    async with services.bus.subscribe(run_id) as wakeups:
        while True:
            async for event in replay(services.store, run_id, after):
                after = event.id
                yield event.type, event.payload
                if event.type == "run_finished":
                    return
            if ended is not None:
                yield (
                    "run_finished",
                    {"status": ended.status, "answer": ended.answer, "error": ended.error},
                )
                return
            if not await stored_event_arrives(wakeups, IDLE_CHECK_S):
                if abandoned is not None and await abandoned():
                    return
                run = await services.store.get_run(run_id)
                # read before the next replay: every event of a run ended by now is stored
                ended = run if run.status in TERMINAL else None


# --- presenting a run --------------------------------------------------------------------


def created_at(run: Run) -> int:
    at = run.created_at
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())


def finish_reason(run: Run) -> FinishReason:
    return "length" if run.stop_reason == "token_budget" else "stop"


def answer_line(run: Run) -> str:
    if run.answer is not None:
        return f"**Answer:** {run.answer}"
    return f"**No answer** (the run stopped: {run.stop_reason or 'unknown reason'})"


def final_solution(run: Run, turns: list[Turn]) -> str | None:
    """The last solver turn whose answer is the run's (the last solver turn if none is)."""
    solutions = [t for t in turns if t.role == "solver" and t.error is None and t.completion]
    if run.answer is not None:
        wanted = normalize_answer(run.answer)
        for turn in reversed(solutions):
            found = extract_answer(turn.completion)
            if found is not None and normalize_answer(found) == wanted:
                return shared_text(turn.completion)
    return shared_text(solutions[-1].completion) if solutions else None


def final_content(run: Run, turns: list[Turn]) -> str:
    solution = final_solution(run, turns)
    return f"{solution}\n\n{answer_line(run)}" if solution else answer_line(run)


def turn_text(turn: dict[str, Any], *, in_rounds: bool) -> str:
    """One finished turn as a paragraph of the streamed conversation."""
    said = shared_text(turn.get("completion") or "")
    if turn.get("error"):
        said = f"_(no reply: {turn['error']})_"
    where = f" (round {turn.get('round', 0)})" if in_rounds else ""
    return f"**{turn.get('agent', '?')}**{where}: {said}\n\n"


def result(run: Run) -> ThinktankResult:
    return ThinktankResult(
        run_id=run.id, pattern=run.pattern, answer=run.answer, stop_reason=run.stop_reason
    )


async def usage_of(services: Services, run_id: str) -> Usage:
    prompt, completion = await services.store.token_totals(run_id)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def run_error(run: Run) -> OpenAIError:
    """502: the run ended without an answer to give (its reason is stored with it)."""
    if run.status == "cancelled":
        message = f"run {run.id} was {run.error or 'cancelled'}"
        code = "run_cancelled"
    else:
        message = f"run {run.id} failed: {run.error or 'no reason recorded'}"
        code = "run_failed"
    return OpenAIError(
        502,
        message,
        type="server_error",
        code=code,
        headers={"x-thinktank-run-id": run.id, "x-should-retry": "false"},
    )


async def stream_chunks(services: Services, run: Run, include_usage: bool) -> AsyncIterator[str]:
    """``data:`` payloads of the OpenAI stream: the conversation, the answer, ``[DONE]``."""
    base = {"id": f"chatcmpl-{run.id}", "created": created_at(run), "model": model_id(run.pattern)}

    def chunk(choices: list[ChunkChoice], **extra: Any) -> str:
        data = ChatCompletionChunk(**base, choices=choices, **extra).model_dump(mode="json")
        # as OpenAI does: a delta holds only what it adds, usage is there only when asked for
        for choice in data["choices"]:
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        if data["thinktank"] is None:
            del data["thinktank"]
        if not include_usage:
            del data["usage"]
        return json.dumps(data, separators=(",", ":"))

    in_rounds = "max_rounds" in get_pattern(run.pattern).config_model.model_fields
    yield chunk(
        [ChunkChoice(delta=ChunkDelta(role="assistant", content=""))], thinktank=result(run)
    )
    async for kind, payload in follow_run(services, run.id):
        if kind == "turn_finished":
            text = turn_text(payload, in_rounds=in_rounds)
            yield chunk([ChunkChoice(delta=ChunkDelta(content=text))])
    run = await services.store.get_run(run.id)
    if run.status != "succeeded":
        yield json.dumps(ErrorBody(error=run_error(run).detail).model_dump(mode="json"))
        yield "[DONE]"
        return
    final = ChunkChoice(
        delta=ChunkDelta(content=answer_line(run)), finish_reason=finish_reason(run)
    )
    yield chunk([final], thinktank=result(run))
    if include_usage:
        yield chunk([], usage=await usage_of(services, run.id))
    yield "[DONE]"


@router.post(
    "/chat/completions",
    response_model=None,
    responses={
        200: {
            "model": ChatCompletion,
            "description": "a chat.completion; with stream=true, text/event-stream chunks",
            "content": event_stream(
                "a chat.completion.chunk as JSON, an error object as JSON, or [DONE] last"
            ),
        },
        **ERRORS,
        502: {"model": ErrorBody, "description": "the run failed or was cancelled"},
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Ask a pattern's agents: the last user message is the problem (see the module doc)."""
    services = get_services(request)
    pattern = resolve_model(body.model)
    if body.n not in (None, 1):
        raise OpenAIError(
            400,
            f"n={body.n} is not supported: a thinktank run has one answer; send n=1 or omit it",
            code="unsupported_value",
            param="n",
        )
    refuse_what_a_run_cannot_do(body)
    run = await start_run(services, request, pattern, body, idempotency_key)
    headers = {"x-thinktank-run-id": run.id}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventSourceResponse(
            stream_chunks(services, run, include_usage), headers=headers, ping=15, sep="\n"
        )

    async for _ in follow_run(services, run.id, abandoned=request.is_disconnected):
        pass
    run = await services.store.get_run(run.id)
    if run.status != "succeeded":
        raise run_error(run)
    completion = ChatCompletion(
        id=f"chatcmpl-{run.id}",
        created=created_at(run),
        model=model_id(run.pattern),
        choices=[
            Choice(
                message=AssistantMessage(
                    content=final_content(run, await services.store.turns(run.id))
                ),
                finish_reason=finish_reason(run),
            )
        ],
        usage=await usage_of(services, run.id),
        thinktank=result(run),
    )
    return JSONResponse(completion.model_dump(mode="json"), headers=headers)
