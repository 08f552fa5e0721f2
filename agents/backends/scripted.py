"""A deterministic backend for tests and benchmarks: replies are scripted per role.

Each role (read from the request's ``tags["role"]``) has a list of replies used in order; the
last one repeats once the list runs out. A reply may be a string, a callable that builds the
text from the request, or an exception to raise (to test failures). ``latency_s`` makes every
call take a fixed time, which the overhead benchmark subtracts.

Given ``on_text``, a call "types" its first sample word by word (each piece a word with the
whitespace after it), the pieces spread evenly over the call's delay and the last one due when
the call ends, so streaming neither lengthens a call nor hides the order of its pieces.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from agents.model import Completion, ModelRequest, ModelResponse, TextCallback


@dataclass(frozen=True)
class Slow:
    """A reply that takes ``delay_s`` longer than the backend's fixed latency."""

    reply: str | Callable[[ModelRequest], str] | BaseException
    delay_s: float


Reply = str | Callable[[ModelRequest], str] | BaseException | Slow


class ScriptedModelConfig(BaseModel):
    """Canned replies by role, for demos and load tests without a real model."""

    backend: Literal["scripted"] = "scripted"
    replies: dict[str, list[str]] = Field(
        default_factory=dict, description="role -> replies used in order (the last repeats)"
    )
    default_reply: str = Field("The answer is \\boxed{0}.", description="for roles not scripted")
    latency_s: float = Field(0.0, ge=0.0, description="fixed time every call takes")


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
        name: str = "scripted",
    ) -> None:
        self.name = name
        self._replies = {role: list(items) for role, items in (replies or {}).items()}
        self._default = default_reply
        self._latency_s = latency_s
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
        self, request: ModelRequest, *, on_text: TextCallback | None = None
    ) -> ModelResponse:
        self.requests.append(request)
        started = time.perf_counter()
        role = request.tags.get("role", "")
        replies = [self._next_reply(role) for _ in range(request.params.n)]
        delay = self._latency_s + max(r.delay_s if isinstance(r, Slow) else 0.0 for r in replies)
        # Texts are made before the delay so sample 0 can be typed during it; a scripted
        # exception is still raised only once the delay has passed, as a real failure would be.
        outcomes = [self._complete(reply, request) for reply in replies]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            first = outcomes[0]
            if on_text is not None and isinstance(first, Completion):
                await _type(first.text, delay, on_text)
            elif delay:
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        completions = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            completions.append(outcome)
        prompt_tokens = sum(count_words(m.content) for m in request.messages)
        return ModelResponse(
            completions=completions,
            prompt_tokens=prompt_tokens,
            model=self.name,
            adapter=request.adapter,
            latency_s=time.perf_counter() - started,
        )

    @staticmethod
    def _complete(reply: Reply, request: ModelRequest) -> Completion | BaseException:
        if isinstance(reply, Slow):
            reply = reply.reply
        if isinstance(reply, BaseException):
            return reply
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
        return Completion(text=text, finish_reason=finish, completion_tokens=count_words(text))

    async def close(self) -> None:
        return None


_WORD_START = re.compile(r"(?<=\s)(?=\S)")


def word_pieces(text: str) -> list[str]:
    """``text`` cut after each run of whitespace: words with the whitespace that follows them
    (leading whitespace is a piece of its own), so the pieces join back to ``text``."""
    return [piece for piece in _WORD_START.split(text) if piece]


async def _type(text: str, delay_s: float, on_text: TextCallback) -> None:
    """Hand ``text`` to ``on_text`` word by word, piece i of n due at (i + 1) / n of the delay.

    Deadlines are absolute, so sleeping late for one piece does not push back the others or
    the end of the call.
    """
    pieces = word_pieces(text)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, piece in enumerate(pieces):
        wait = start + delay_s * (index + 1) / len(pieces) - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        on_text(piece)
    if not pieces and delay_s:
        await asyncio.sleep(delay_s)
