"""The ``openai`` backend: any OpenAI-compatible endpoint (vLLM, llama.cpp's server, a provider).

One ``openai.AsyncOpenAI`` client, and so one HTTP connection pool, per backend: building a
client costs tens of milliseconds (TLS context, pool), so it is built once and reused.

The failure policy lives here rather than inside the SDK (whose own retries are switched off),
so it is visible and tested:

- at most ``max_concurrency`` requests are in flight to the endpoint; a request waiting for a
  slot is not yet on the clock, and a request sleeping between retries holds no slot;
- every attempt has a deadline of ``timeout_s`` (a whole-request deadline on top of the HTTP
  client's per-read timeout, so a server that trickles bytes cannot hold a call forever);
- timeouts, connection errors, HTTP 408, 429 and 5xx are retried up to ``max_retries`` times
  with exponential backoff and jitter; any other 4xx is the caller's fault and fails at once
  with ``ModelError(retryable=False)`` carrying the server's message; running out of retries
  gives ``ModelError(retryable=True)``;
- the server has the last word, as with OpenAI's own client: ``x-should-retry: true`` retries
  any status and ``x-should-retry: false`` none (``ModelError(retryable=False)``: another
  thinktank's face says so of a run that failed, since a retry would only start another); a
  wait the server asks for (``retry-after-ms``, else ``retry-after`` in seconds or as an HTTP
  date) of up to 120 s replaces the backoff, and a longer one is not waited out but fails the
  call at once (``ModelError(retryable=True)``).

Servers differ in what they honour, and backends ignore nothing silently: an endpoint that
answers ``n > 1`` with fewer choices (llama.cpp's server drops ``n``) gets the missing samples as
parallel single-sample requests, and asking for log-probabilities an endpoint does not return
is an error rather than a ``None`` the caller might not check. A request's ``adapter`` is sent
as the model name (vLLM serves each LoRA adapter under its own name); its ``tags`` stay local,
since not every server accepts OpenAI's ``user`` field and none needs it.

Live text: ``generate(request, on_text=...)`` with ``n == 1`` sends the request with
``stream=True`` and ``stream_options={"include_usage": True}``, hands each content delta to
``on_text`` as it arrives and assembles the same :class:`ModelResponse` from the chunks (text,
finish reason, usage, log-probabilities when asked for). Failures before the first text are
retried as above; after it, text has reached the caller, so a broken stream fails the call
with ``ModelError(retryable=True)``. A server that sends no usage chunk (llama-cpp-python's
server ignores ``stream_options``) gets ``completion_tokens`` counted as the content chunks it
sent, one per generated token on llama.cpp's and vLLM's servers but an estimate elsewhere, and
``prompt_tokens`` 0 for that one call; the backend then stops streaming to that endpoint (a
warning says so), because exact token accounting matters more than live text, unless
``stream_without_usage`` says to go on. With ``n > 1``
``on_text`` is ignored: the samples come back whole, as before.

Stopping early: ``generate(request, halt=event)`` with ``n == 1`` is always streamed (whatever
the endpoint's usage reporting) and ends at the first chunk after the event is set, closing the
stream (vLLM then aborts the request). The call returns the text received, finish reason
``"cancelled"``, and ``completion_tokens`` counted from per-token log-probabilities, which such
a call asks for (without alternatives) so that the count is exact where the endpoint returns
them, else as the content chunks received. No usage chunk arrives on a stopped stream, so its
``prompt_tokens`` is 0. With ``n > 1`` ``halt`` is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionTokenLogprob
from openai.types.chat.chat_completion import Choice
from openai.types.completion_usage import CompletionUsage
from pydantic import BaseModel, Field, SecretStr

from agents.model import (
    Completion,
    ModelError,
    ModelRequest,
    ModelResponse,
    TextCallback,
    TokenLogprob,
)

try:  # openai>=3 speaks httpx2; older releases httpx. Either may surface a raw transport error.
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai release
    import httpx as _http  # type: ignore[no-redef]

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a stream may raise once it is open; the SDK wraps most of these, not all.
_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    openai.OpenAIError,
    _http.HTTPError,
    _http.StreamError,
    OSError,
    TimeoutError,
)


class OpenAIModelConfig(BaseModel):
    """Any OpenAI-compatible endpoint: vLLM's server, llama.cpp's server, a provider."""

    backend: Literal["openai"] = "openai"
    base_url: str = Field(description="the endpoint's /v1 URL, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="model name the endpoint expects")
    api_key: SecretStr | None = Field(None, description="sent as a bearer token when set")
    max_concurrency: int = Field(
        16, ge=1, description="requests in flight at once to this endpoint"
    )
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    max_retries: int = Field(3, ge=0, description="retries of timeouts, connection errors and 5xx")
    retry_backoff_s: float = Field(0.5, ge=0, description="first backoff; doubles each retry")
    retry_backoff_max_s: float = Field(
        30.0,
        ge=0,
        description="longest backoff between tries; a server's Retry-After of up to 120 s is "
        "waited as asked",
    )
    stream_without_usage: bool = Field(
        False,
        description="keep streaming live text to an endpoint that reports no token usage in "
        "streams (its prompt tokens then go uncounted)",
    )
    native_n: bool | None = Field(
        None,
        description="whether the endpoint honours n>1 in one request; None: learn it from the "
        "first reply; False: always send n single-sample requests",
    )


# As OpenAI's client: a server's requested wait up to this long is waited out; a longer one
# means "not now", and the call fails instead of holding its caller for minutes.
MAX_RETRY_AFTER_S = 120.0


@dataclass
class _Failure:
    """One failed attempt, classified: may another attempt help, and what to tell the caller."""

    retryable: bool
    description: str
    retry_after_s: float | None = None
    # what the error says happened, when not retried: the caller's fault unless the server
    # said otherwise, and then whether a call made later may succeed
    verdict: str = "rejected the request"
    later_may_help: bool = False


@dataclass
class _StreamSeen:
    """What a chat stream's chunks said besides their text, to assemble a whole reply from."""

    model: str | None = None
    id: str | None = None  # the reply's id, which every chunk repeats
    choices: int = 0  # chunks that carried a choice
    content_chunks: int = 0  # deltas with content, even "" (a held-back stop token), no role
    finish_reason: str | None = None
    usage: CompletionUsage | None = None
    logprobs: list[TokenLogprob] | None = None  # None until a chunk carries some

    def take(self, chunk: ChatCompletionChunk) -> None:
        self.model = self.model or getattr(chunk, "model", None)
        self.id = self.id or getattr(chunk, "id", None)
        self.usage = getattr(chunk, "usage", None) or self.usage
        for choice in getattr(chunk, "choices", None) or []:
            if choice.index != 0:
                continue
            self.choices += 1
            delta = choice.delta
            # The first chunk's role (with "" content, on some servers) is not a token.
            if delta is not None and delta.content is not None and delta.role is None:
                self.content_chunks += 1
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason
            if choice.logprobs is not None and choice.logprobs.content is not None:
                if self.logprobs is None:
                    self.logprobs = []
                self.logprobs.extend(_logprob_items(choice.logprobs.content))


@dataclass
class _OpenStream:
    """A stream that has produced its first text, holding one concurrency slot until closed."""

    stream: openai.AsyncStream[ChatCompletionChunk]
    pieces: AsyncIterator[str]
    first: str | None
    seen: _StreamSeen


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible endpoint, with the retry policy above."""

    def __init__(self, config: OpenAIModelConfig) -> None:
        self.config = config
        self.name = config.model
        self.endpoint = config.base_url.rstrip("/")
        # Learned from replies unless configured: does one request with n>1 give n choices?
        self.native_n: bool | None = config.native_n
        # None until the first streamed reply shows whether the endpoint reports usage in streams
        self.streams_usage: bool | None = None
        api_key = config.api_key.get_secret_value() if config.api_key else None
        # Without a key of our own, the placeholder keeps the SDK from reading OPENAI_API_KEY
        # (a real OpenAI key must not leak to a local server) and the header is omitted per call.
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=api_key or "unused",
            max_retries=0,
            timeout=config.timeout_s,
        )
        # The SDK imports its chat resources at their first use, 50-150 ms cold: here, so
        # that a backend built ahead of runs (ModelRouter.warm) has nothing left for the call.
        _ = self._client.chat.completions
        self._extra_headers: dict[str, Any] = {} if api_key else {"Authorization": openai.Omit()}
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._closed = False

    async def generate(
        self,
        request: ModelRequest,
        *,
        on_text: TextCallback | None = None,
        halt: asyncio.Event | None = None,
    ) -> ModelResponse:
        """All ``n`` samples of one prompt, however the endpoint treats ``n``.

        ``prompt_tokens`` is the prompt's size from the first reply (fanned-out requests send
        the same prompt again; that repeat is not counted); ``latency_s`` is the wall time of
        the whole call, retries and fan-out included. ``on_text`` streams a single-sample
        call and is ignored when ``n > 1``, as is ``halt`` (see the module docstring).
        """
        self._check_open()
        started = time.perf_counter()
        n = request.params.n
        if n == 1 and halt is not None:
            return await self._generate_streamed(request, on_text or _ignore, started, halt)
        if on_text is not None and n == 1 and self.streams_usage is not False:
            return await self._generate_streamed(request, on_text, started)
        if n > 1 and self.native_n is False:
            replies = await self._fan_out(request, range(n))
        else:
            first = await self._create(self._body(request, n=n, sample=0))
            missing = n - len(_choices(first))
            if n > 1:
                self._learn_native_n(honoured=missing <= 0, asked=n, got=n - missing)
            replies = [first, *await self._fan_out(request, range(n - missing, n))]
        completions = [c for reply in replies for c in self._completions(reply, request)]
        usage = replies[0].usage
        return ModelResponse(
            completions=completions[:n],
            prompt_tokens=usage.prompt_tokens if usage else 0,
            model=replies[0].model or request.adapter or self.config.model,
            adapter=request.adapter,
            latency_s=time.perf_counter() - started,
            response_id=replies[0].id or None,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[str]:
        """Yield the text of one sample as it arrives.

        Failures before the first text are retried like :meth:`generate`; after it, text has
        reached the caller, so a failure ends the stream with ``ModelError(retryable=True)``.
        ``timeout_s`` bounds the wait for the first text, then each wait between chunks.
        The concurrency slot is held until the stream ends or the generator is closed (use
        ``contextlib.aclosing`` to release it promptly when stopping early).
        """
        self._check_open()
        body = {**self._body(request, n=1, sample=0), "stream": True}
        # A stream carries text only; log-probabilities would be computed and thrown away.
        body.pop("logprobs", None)
        body.pop("top_logprobs", None)
        opened = await self._with_retries(lambda: self._open_stream(body))
        # No await between opening and entering the relay, which owns the slot from then on.
        async with contextlib.aclosing(self._relay(opened)) as pieces:
            async for piece in pieces:
                yield piece

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.close()

    # -- streaming ------------------------------------------------------------------------

    async def _generate_streamed(
        self,
        request: ModelRequest,
        on_text: TextCallback,
        started: float,
        halt: asyncio.Event | None = None,
    ) -> ModelResponse:
        """One sample through a chat stream, each delta to ``on_text``, the reply assembled;
        ``halt`` ends it at the next chunk."""
        body = {
            **self._body(request, n=1, sample=0),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if halt is not None and "logprobs" not in body:
            body["logprobs"] = True  # one entry per token: a stopped stream's exact count
        opened = await self._with_retries(lambda: self._open_stream(body))
        parts: list[str] = []
        halted = False
        async with contextlib.aclosing(self._relay(opened)) as pieces:
            async for piece in pieces:
                parts.append(piece)
                on_text(piece)
                if halt is not None and halt.is_set():
                    halted = True
                    break
        seen = opened.seen
        if not seen.choices:
            raise ModelError(f"{self.endpoint} streamed no choices", retryable=True)
        asked = request.params.top_logprobs
        if asked > 0 and seen.logprobs is None and seen.content_chunks:
            raise ModelError(
                f"{self.endpoint} streamed no logprobs though top_logprobs={asked} was asked",
                retryable=False,
            )
        if seen.logprobs is not None:
            tokens = len(seen.logprobs)  # one entry per token, as for a whole reply
        elif seen.usage is not None:
            tokens = seen.usage.completion_tokens
        else:
            tokens = seen.content_chunks  # no usage sent: see the module docstring
        if self.streams_usage is None and not self.config.stream_without_usage and not halted:
            self.streams_usage = seen.usage is not None
            if not self.streams_usage:
                log.warning(
                    "%s sends no token usage in streams; its calls are no longer streamed, so "
                    "that prompt tokens are counted",
                    self.endpoint,
                )
        finish: Literal["stop", "length", "cancelled"] = "stop"
        if halted:
            finish = "cancelled"
        elif seen.finish_reason == "length":
            finish = "length"
        completion = Completion(
            text="".join(parts),
            finish_reason=finish,
            completion_tokens=tokens,
            logprobs=(seen.logprobs or []) if asked > 0 else None,
        )
        return ModelResponse(
            completions=[completion],
            prompt_tokens=seen.usage.prompt_tokens if seen.usage else 0,
            model=seen.model or request.adapter or self.config.model,
            adapter=request.adapter,
            latency_s=time.perf_counter() - started,
            response_id=seen.id,
        )

    async def _relay(self, opened: _OpenStream) -> AsyncIterator[str]:
        """The text of an opened stream; closes it and frees its slot however it ends.

        Only failures before the first text are retried (in :meth:`_open_stream`); after it,
        text has reached the caller, so a failure is ``ModelError(retryable=True)``.
        """
        try:
            if opened.first is not None:
                yield opened.first
            async for piece in opened.pieces:
                yield piece
        except _STREAM_ERRORS as exc:
            raise ModelError(
                f"{self.endpoint}: stream broke after the first token: {_describe(exc)}",
                retryable=True,
            ) from exc
        finally:
            try:
                await opened.stream.close()
            finally:
                self._slots.release()

    # -- requests -------------------------------------------------------------------------

    def _body(self, request: ModelRequest, *, n: int, sample: int) -> dict[str, Any]:
        """The create() arguments; ``sample`` offsets the seed so fanned-out samples differ."""
        params = request.params
        body: dict[str, Any] = {
            # vLLM serves each LoRA adapter under its own model name.
            "model": request.adapter or self.config.model,
            "messages": [m.model_dump() for m in request.messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "extra_headers": self._extra_headers,
        }
        if n > 1:
            body["n"] = n
        if params.stop:
            body["stop"] = params.stop
        if params.seed is not None:
            body["seed"] = params.seed + sample
        if params.top_logprobs > 0:
            body["logprobs"] = True
            body["top_logprobs"] = params.top_logprobs
        return body

    async def _create(self, body: dict[str, Any]) -> ChatCompletion:
        reply = await self._with_retries(lambda: self._attempt(body))
        if not _choices(reply):
            raise ModelError(f"{self.endpoint} answered with no choices", retryable=True)
        return reply

    async def _attempt(self, body: dict[str, Any]) -> ChatCompletion:
        """One HTTP request: holds a concurrency slot, bounded by the per-request deadline."""
        async with self._slots, asyncio.timeout(self.config.timeout_s):
            return await self._client.chat.completions.create(**body)

    async def _fan_out(self, request: ModelRequest, samples: Sequence[int]) -> list[ChatCompletion]:
        """Single-sample requests in parallel (each retried on its own); all or nothing."""
        tasks = [
            asyncio.create_task(self._create(self._body(request, n=1, sample=i))) for i in samples
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # One failed sample fails the call: stop the others and collect their outcomes.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _learn_native_n(self, *, honoured: bool, asked: int, got: int) -> None:
        """Remember the first verdict, so later calls fan out at once instead of in two rounds."""
        if self.native_n is not None:
            return
        self.native_n = honoured
        if not honoured:
            log.info("%s gave %d of %d choices; fanning out n>1 now", self.endpoint, got, asked)

    async def _open_stream(self, body: dict[str, Any]) -> _OpenStream:
        """Open a stream and wait for its first text; the slot stays held on success."""
        await self._slots.acquire()
        stream: openai.AsyncStream[ChatCompletionChunk] | None = None
        try:
            async with asyncio.timeout(self.config.timeout_s):
                stream = await self._client.chat.completions.create(**body)
                seen = _StreamSeen()  # per attempt: a failed one's chunks do not count
                pieces = _text_pieces(stream, seen)
                first = await anext(pieces, None)
            return _OpenStream(stream=stream, pieces=pieces, first=first, seen=seen)
        except BaseException:
            try:
                if stream is not None:
                    await stream.close()
            finally:
                self._slots.release()
            raise

    # -- retries --------------------------------------------------------------------------

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        attempts = self.config.max_retries + 1
        for number in range(1, attempts + 1):
            try:
                return await attempt()
            except (TimeoutError, openai.OpenAIError) as exc:
                error: BaseException = exc
                failure = self._classify(exc)
            if not failure.retryable:
                raise ModelError(
                    f"{self.endpoint} {failure.verdict}: {failure.description}",
                    retryable=failure.later_may_help,
                ) from error
            if number == attempts:
                raise ModelError(
                    f"{self.endpoint} failed after {attempts} attempt(s); "
                    f"last: {failure.description}",
                    retryable=True,
                    attempts=attempts,
                ) from error
            delay = self._backoff_s(number, failure.retry_after_s)
            log.warning(
                "%s attempt %d/%d failed (%s); retrying in %.2fs",
                self.endpoint,
                number,
                attempts,
                failure.description,
                delay,
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _classify(self, exc: BaseException) -> _Failure:
        if isinstance(exc, TimeoutError | openai.APITimeoutError):
            return _Failure(True, f"timed out after {self.config.timeout_s:g}s")
        if isinstance(exc, openai.APIConnectionError):
            return _Failure(True, f"connection error: {_describe(exc)}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            description = f"HTTP {status}: {_server_message(exc)}"
            headers = exc.response.headers
            retry_after = _retry_after_s(headers)
            if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
                verdict = (
                    f"asked to wait {retry_after:g}s before a retry (over {MAX_RETRY_AFTER_S:g}s)"
                )
                return _Failure(False, description, verdict=verdict, later_may_help=True)
            should_retry = headers.get("x-should-retry")
            if should_retry == "false":
                return _Failure(False, description, verdict="said not to retry")
            retryable = should_retry == "true" or status in (408, 429) or status >= 500
            return _Failure(retryable, description, retry_after if retryable else None)
        # A reply the SDK could not make sense of: sending it again will not change it.
        return _Failure(False, _describe(exc))

    def _backoff_s(self, retry: int, retry_after_s: float | None) -> float:
        """The wait the server asked for, when it asked for one (see ``MAX_RETRY_AFTER_S``);
        else exponential backoff with "equal jitter": half fixed, half random, so clients that
        failed together do not retry together."""
        if retry_after_s is not None and 0 < retry_after_s <= MAX_RETRY_AFTER_S:
            return retry_after_s
        cap = self.config.retry_backoff_max_s
        base = min(cap, self.config.retry_backoff_s * 2 ** (retry - 1))
        return base / 2 + random.uniform(0, base / 2)

    # -- replies --------------------------------------------------------------------------

    def _completions(self, reply: ChatCompletion, request: ModelRequest) -> list[Completion]:
        choices = _choices(reply)
        logprobs = [_token_logprobs(c) for c in choices]
        if request.params.top_logprobs > 0 and any(lp is None for lp in logprobs):
            raise ModelError(
                f"{self.endpoint} returned no logprobs though top_logprobs="
                f"{request.params.top_logprobs} was asked",
                retryable=False,
            )
        tokens = _tokens_per_choice(reply, choices, logprobs)
        return [
            Completion(
                text=choice.message.content or "",
                finish_reason="length" if choice.finish_reason == "length" else "stop",
                completion_tokens=count,
                logprobs=lp if request.params.top_logprobs > 0 else None,
            )
            for choice, lp, count in zip(choices, logprobs, tokens, strict=True)
        ]

    def _check_open(self) -> None:
        if self._closed:
            raise ModelError(f"backend for {self.endpoint} is closed", retryable=False)


def _ignore(piece: str) -> None:
    return None


def _choices(reply: ChatCompletion) -> list[Choice]:
    # Replies are not validated, so a broken server's reply may lack the field altogether.
    return list(getattr(reply, "choices", None) or [])


def _token_logprobs(choice: Choice) -> list[TokenLogprob] | None:
    content = choice.logprobs.content if choice.logprobs else None
    if content is None:
        return None
    return _logprob_items(content)


def _logprob_items(content: list[ChatCompletionTokenLogprob]) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            token=item.token,
            logprob=item.logprob,
            top={top.token: top.logprob for top in item.top_logprobs or []},
        )
        for item in content
    ]


def _tokens_per_choice(
    reply: ChatCompletion, choices: list[Choice], logprobs: list[list[TokenLogprob] | None]
) -> list[int]:
    """Per-choice completion tokens, which usage only gives as a total over all choices.

    Exact when every choice carries per-token logprobs (one entry per token); otherwise the
    total is shared in proportion to each choice's text length, rounded so the parts still sum
    to the total (equal shares when every text is empty).
    """
    if all(lp is not None for lp in logprobs):
        return [len(lp or []) for lp in logprobs]
    total = reply.usage.completion_tokens if reply.usage else 0
    if len(choices) == 1:
        return [total]
    weights = [len(c.message.content or "") for c in choices]
    return _apportion(total, weights if sum(weights) else [1] * len(choices))


def _apportion(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` by largest remainder (parts sum to total)."""
    scale = sum(weights)
    exact = [total * w / scale for w in weights]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


async def _text_pieces(
    stream: openai.AsyncStream[ChatCompletionChunk], seen: _StreamSeen | None = None
) -> AsyncIterator[str]:
    """The non-empty content deltas of a chat stream (role-only and usage chunks carry none);
    ``seen`` takes note of everything else the chunks say."""
    async for chunk in stream:
        if seen is not None:
            seen.take(chunk)
        for choice in chunk.choices or []:
            if choice.delta and choice.delta.content:
                yield choice.delta.content


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's own words: OpenAI's ``{"error": {"message"}}``, FastAPI's ``detail``..."""
    body = exc.body
    message: object = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail")
    elif isinstance(body, str) and body:
        message = body
    return str(message or exc.message)[:1000]


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked to wait, read as OpenAI's client reads them: ``retry-after-ms``
    first (more precise), then ``retry-after`` as seconds or as an HTTP date."""
    for header, unit_s in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) * unit_s
        except ValueError:
            continue
        # an overflow to inf reads as "very long"; nan says nothing
        return None if math.isnan(seconds) else seconds
    try:
        when = email.utils.parsedate_to_datetime(headers.get("retry-after") or "")
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is in GMT even when it does not say so
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def _describe(exc: BaseException) -> str:
    """An exception and its cause in one line: the SDK's "Connection error." alone says little."""
    text = f"{type(exc).__name__}: {exc}"
    if exc.__cause__ is not None:
        text += f" ({type(exc.__cause__).__name__}: {exc.__cause__})"
    return text
