"""A deterministic backend for tests and benchmarks: replies are scripted per role.

Each role (read from the request's ``tags["role"]``) has a list of replies used in order; the
last one repeats once the list runs out. A reply may be a string, a callable that builds the
text from the request, or an exception to raise (to test failures). ``latency_s`` makes every
call take a fixed time, which the overhead benchmark subtracts.

Given ``on_text``, a call "types" its first sample word by word (each piece a word with the
whitespace after it), the pieces spread evenly over the call's delay and the last one due when
the call ends, so streaming neither lengthens a call nor hides the order of its pieces.

Given ``halt``, a call stops typing as soon as the event is set and returns the words typed so
far (finish reason ``"cancelled"``, one token per word typed); other samples of the call are
cut to the same share of their words. A reply scripted as :class:`Logprobs` also carries
log-probabilities (for a caller that asks for ``top_logprobs``); plain replies carry none.

For soak tests the configuration can also inject faults at random: ``failure_rate`` is the
share of calls that fail, after their delay and before any of their text, with a retryable
:class:`ModelError` (as a model server that dropped a request would), and ``latency_jitter_s``
adds up to that much to each call's delay. ``seed`` makes both repeatable; both are off by default.

Each reply carries an id, as a model server's does: ``{name}-{n}`` for the backend's n-th call.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from agents.model import (
    Completion,
    ModelError,
    ModelRequest,
    ModelResponse,
    TextCallback,
    TokenLogprob,
)


@dataclass(frozen=True)
class Logprobs:
    """A reply with scripted log-probabilities for its first token (a word): ``top`` maps
    alternatives to their log-probabilities, as a backend's ``top_logprobs`` would. They are
    returned only when the request asks for ``top_logprobs``, cut to that many."""

    reply: str
    top: dict[str, float]


@dataclass(frozen=True)
class Slow:
    """A reply that takes ``delay_s`` longer than the backend's fixed latency."""

    reply: str | Callable[[ModelRequest], str] | BaseException | Logprobs
    delay_s: float


Reply = str | Callable[[ModelRequest], str] | BaseException | Logprobs | Slow


class ScriptedModelConfig(BaseModel):
    """Canned replies by role, for demos and load tests without a real model."""

    backend: Literal["scripted"] = "scripted"
    replies: dict[str, list[str]] = Field(
        default_factory=dict, description="role -> replies used in order (the last repeats)"
    )
    default_reply: str = Field("The answer is \\boxed{0}.", description="for roles not scripted")
    latency_s: float = Field(0.0, ge=0.0, description="fixed time every call takes")
    latency_jitter_s: float = Field(
        0.0, ge=0.0, description="each call takes up to this much longer, uniformly at random"
    )
    failure_rate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of calls that fail with a retryable model error (fault injection)",
    )
    seed: int | None = Field(None, description="seeds failures and jitter; None: unseeded")


def count_words(text: str) -> int:
    """The scripted backend's token count: one token per whitespace-separated word."""
    return len(text.split())


class ScriptedBackend:
    def __init__(
        self,
        replies: Mapping[str, Sequence[Reply]] | None = None,
        *,
        default_reply: Reply = "The answer is \\boxed{0}.",
        latency_s: float = 0.0,
        latency_jitter_s: float = 0.0,
        failure_rate: float = 0.0,
        seed: int | None = None,
        name: str = "scripted",
    ) -> None:
        self.name = name
        self._replies = {role: list(items) for role, items in (replies or {}).items()}
        self._default = default_reply
        self._latency_s = latency_s
        self._latency_jitter_s = latency_jitter_s
        self._failure_rate = failure_rate
        self._random = random.Random(seed)
        self._used: dict[str, int] = defaultdict(int)
        self.requests: list[ModelRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @classmethod
    def from_config(cls, config: ScriptedModelConfig, name: str = "scripted") -> ScriptedBackend:
        return cls(
            config.replies,
            default_reply=config.default_reply,
            latency_s=config.latency_s,
            latency_jitter_s=config.latency_jitter_s,
            failure_rate=config.failure_rate,
            seed=config.seed,
            name=name,
        )

    def calls(self, role: str) -> list[ModelRequest]:
        return [r for r in self.requests if r.tags.get("role") == role]

    def _next_reply(self, role: str) -> Reply:
        items = self._replies.get(role)
        if not items:
            return self._default
        index = min(self._used[role], len(items) - 1)
        self._used[role] += 1
        return items[index]

    async def generate(
        self,
        request: ModelRequest,
        *,
        on_text: TextCallback | None = None,
        halt: asyncio.Event | None = None,
    ) -> ModelResponse:
        self.requests.append(request)
        started = time.perf_counter()
        role = request.tags.get("role", "")
        replies = [self._next_reply(role) for _ in range(request.params.n)]
        delay = self._latency_s + max(r.delay_s if isinstance(r, Slow) else 0.0 for r in replies)
        if self._latency_jitter_s:
            delay += self._random.uniform(0.0, self._latency_jitter_s)
        injected = bool(self._failure_rate) and self._random.random() < self._failure_rate
        # Texts are made before the delay so sample 0 can be typed during it; a scripted
        # exception is still raised only once the delay has passed, as a real failure would be.
        outcomes = [self._complete(reply, request) for reply in replies]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        typed: float | None = None  # share of sample 0 typed before a halt; None: all of it
        try:
            first = outcomes[0]
            typing = not injected and isinstance(first, Completion)
            if (on_text is not None or halt is not None) and typing:
                typed = await _type(first.text, delay, on_text or _ignore, halt)
            elif halt is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(halt.wait(), delay)
            elif delay:
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        if injected:
            raise ModelError(
                f"{self.name}: injected failure (failure_rate={self._failure_rate:g})",
                retryable=True,
            )
        completions = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            completions.append(outcome if typed is None else _cut(outcome, typed))
        prompt_tokens = sum(count_words(m.content) for m in request.messages)
        return ModelResponse(
            completions=completions,
            prompt_tokens=prompt_tokens,
            model=self.name,
            adapter=request.adapter,
            latency_s=time.perf_counter() - started,
            response_id=f"{self.name}-{len(self.requests)}",
        )

    @staticmethod
    def _complete(reply: Reply, request: ModelRequest) -> Completion | BaseException:
        if isinstance(reply, Slow):
            reply = reply.reply
        if isinstance(reply, BaseException):
            return reply
        top: dict[str, float] | None = None
        if isinstance(reply, Logprobs):
            reply, top = reply.reply, reply.top
        if callable(reply):
            try:
                text = reply(request)
            except Exception as error:  # raised after the delay, like a scripted exception
                return error
        else:
            text = reply
        words = text.split()
        finish: Literal["stop", "length"] = "stop"
        if len(words) > request.params.max_tokens:
            text = " ".join(words[: request.params.max_tokens])
            finish = "length"
        logprobs = None
        if top is not None and request.params.top_logprobs > 0:
            logprobs = _scripted_logprobs(text, top, request.params.top_logprobs)
        return Completion(
            text=text,
            finish_reason=finish,
            completion_tokens=count_words(text),
            logprobs=logprobs,
        )

    async def close(self) -> None:
        return None


_WORD_START = re.compile(r"(?<=\s)(?=\S)")


def word_pieces(text: str) -> list[str]:
    """``text`` cut after each run of whitespace: words with the whitespace that follows them
    (leading whitespace is a piece of its own), so the pieces join back to ``text``."""
    return [piece for piece in _WORD_START.split(text) if piece]


async def _type(
    text: str, delay_s: float, on_text: TextCallback, halt: asyncio.Event | None = None
) -> float | None:
    """Hand ``text`` to ``on_text`` word by word, piece i of n due at (i + 1) / n of the delay.

    Deadlines are absolute, so sleeping late for one piece does not push back the others or
    the end of the call. Once ``halt`` is set no further piece goes out, and the share of the
    pieces typed is returned (None when the text went out whole).
    """
    pieces = word_pieces(text)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, piece in enumerate(pieces):
        wait = start + delay_s * (index + 1) / len(pieces) - loop.time()
        if await _pause(wait, halt):
            return index / len(pieces)
        on_text(piece)
    if not pieces and await _pause(delay_s, halt):
        return 0.0
    return None


async def _pause(wait_s: float, halt: asyncio.Event | None) -> bool:
    """Sleep ``wait_s`` (nothing when it is not positive); True when ``halt`` is set."""
    if halt is None:
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        return False
    if wait_s > 0 and not halt.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(halt.wait(), wait_s)
    return halt.is_set()


def _cut(completion: Completion, share: float) -> Completion:
    """A sample stopped after ``share`` of its pieces: the text typed by then."""
    pieces = word_pieces(completion.text)
    text = "".join(pieces[: round(share * len(pieces))])
    logprobs = completion.logprobs[: count_words(text)] if completion.logprobs else None
    return Completion(
        text=text,
        finish_reason="cancelled",
        completion_tokens=count_words(text),
        logprobs=logprobs,
    )


def _ignore(piece: str) -> None:
    return None


def _scripted_logprobs(text: str, top: dict[str, float], k: int) -> list[TokenLogprob]:
    """One entry per word: the first carries the scripted alternatives (best k), the rest are
    certain."""
    words = text.split()
    if not words:
        return []
    best = dict(sorted(top.items(), key=lambda item: item[1], reverse=True)[:k])
    first = TokenLogprob(
        token=words[0], logprob=top.get(words[0], max(top.values(), default=0.0)), top=best
    )
    return [first, *(TokenLogprob(token=word, logprob=0.0) for word in words[1:])]
