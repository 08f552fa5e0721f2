"""A deterministic backend for tests and benchmarks: replies are scripted per role.

Each role (read from the request's ``tags["role"]``) has a list of replies used in order; the
last one repeats once the list runs out. A reply may be a string, a callable that builds the
text from the request, or an exception to raise (to test failures). ``latency_s`` makes every
call take a fixed time, which the overhead benchmark subtracts.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from agents.model import Completion, ModelRequest, ModelResponse


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

    async def generate(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        started = time.perf_counter()
        role = request.tags.get("role", "")
        replies = [self._next_reply(role) for _ in range(request.params.n)]
        delay = self._latency_s + max(r.delay_s if isinstance(r, Slow) else 0.0 for r in replies)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if delay:
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        completions = []
        for reply in replies:
            if isinstance(reply, Slow):
                reply = reply.reply
            if isinstance(reply, BaseException):
                raise reply
            text = reply(request) if callable(reply) else reply
            words = text.split()
            finish: Literal["stop", "length"] = "stop"
            if len(words) > request.params.max_tokens:
                text = " ".join(words[: request.params.max_tokens])
                finish = "length"
            completions.append(
                Completion(text=text, finish_reason=finish, completion_tokens=count_words(text))
            )
        prompt_tokens = sum(count_words(m.content) for m in request.messages)
        return ModelResponse(
            completions=completions,
            prompt_tokens=prompt_tokens,
            model=self.name,
            adapter=request.adapter,
            latency_s=time.perf_counter() - started,
        )

    async def close(self) -> None:
        return None
