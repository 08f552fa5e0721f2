"""The one async interface every model backend implements.

A graph never sees a backend class: it asks for a logical model name (``policy``, ``ceo``...)
and gets something that satisfies :class:`ModelBackend`. Requests and responses are pydantic
models so the scripted, local and OpenAI-compatible backends cannot drift apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from roles.messages import ChatMessage

__all__ = [
    "ChatMessage",
    "Completion",
    "ModelBackend",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "SamplingParams",
    "StreamingBackend",
    "TextCallback",
    "TokenLogprob",
]

TextCallback = Callable[[str], None]
"""Receives the text of a sample piece by piece as it is generated (see ModelBackend)."""


class SamplingParams(BaseModel):
    """What a caller may ask of any backend; backends ignore nothing silently."""

    n: int = Field(1, ge=1, le=64, description="independent samples of the same prompt")
    max_tokens: int = Field(256, ge=1, description="most tokens each sample may generate")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, description="strings that end a sample")
    seed: int | None = Field(None, description="makes sampling reproducible where supported")
    top_logprobs: int = Field(
        0, ge=0, le=20, description="return this many top log-probabilities per generated token"
    )


class ModelRequest(BaseModel):
    messages: list[ChatMessage]
    params: SamplingParams = Field(default_factory=SamplingParams)
    adapter: str | None = Field(None, description="LoRA adapter name, when the backend serves one")
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="who is asking (run, agent, role); the scripted backend keys on it",
    )


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    top: dict[str, float] = Field(default_factory=dict)


class Completion(BaseModel):
    text: str
    finish_reason: Literal["stop", "length", "cancelled", "error"] = "stop"
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    token_ids: list[int] | None = Field(
        None,
        description="the sample's generated tokens in order, all completion_tokens of them "
        "(an end-of-sequence token or a stop string's tokens included, though the text leaves "
        "them out); None where the backend does not say",
    )
    token_logprobs: list[float] | None = Field(
        None,
        description="the model's log-probability of each of token_ids (log-softmax of its raw "
        "logits, before temperature and top_p), what a trainer needs to avoid re-tokenizing; "
        "None where the backend does not say",
    )


class ModelResponse(BaseModel):
    completions: list[Completion]
    prompt_tokens: int = 0
    model: str = Field(description="the concrete model that answered (weights or endpoint name)")
    adapter: str | None = None
    latency_s: float = 0.0
    response_id: str | None = Field(
        None, description="the id the model server gave this reply, where it gives one"
    )

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.completions)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ModelError(RuntimeError):
    """A backend could not answer. ``retryable`` says whether trying again may help.

    ``attempts`` is how many tries the backend made before giving up: 1 unless it retries by
    itself, so a caller that retries too counts them in rather than multiplying them.
    """

    def __init__(self, message: str, *, retryable: bool = False, attempts: int = 1) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.attempts = attempts


@runtime_checkable
class ModelBackend(Protocol):
    """Chat messages in; n samples with finish reasons, usage and latency out.

    ``on_text``, when given, is called with each new piece of sample 0's text as it is
    generated, so a caller can show an agent typing. The contract:

    - the pieces concatenate to exactly ``completions[0].text`` of the returned response
      (stop strings excluded: a backend holds back text that may still turn into one), and
      every piece is delivered before ``generate`` returns;
    - it is called on the event loop thread that awaits ``generate``, and must neither block
      nor raise: it may queue work, never wait for it (a backend may call it from a loop
      callback, where an exception would not reach the caller);
    - the response is the same as without it: all n samples, finish reasons, usage, latency;
    - it is a hint, not a mode: a backend that cannot stream a call (or at all) ignores it
      and only returns the response, so a caller must not rely on receiving any piece;
    - a failed call may already have delivered part of its text. A backend retries a failure
      only while nothing has been delivered, so the pieces never restart mid-way.

    ``halt``, when given, lets the caller end a call early by setting the event (on the loop
    that awaits ``generate``); a detector that sees a solution is complete stops its solver
    this way. The contract:

    - the call then returns normally, soon (at the next token or piece), with what was
      generated so far: finish reason ``"cancelled"`` and ``completion_tokens`` counting every
      token the model generated, those made after the event was set included, so a token
      budget stays exact; ``on_text`` still receives all of that text, as above;
    - a call that ends before the event is seen ends as it would have ("stop", "length");
    - only calls that are given it need to honour it: callers pass it only when they mean to
      stop, so a backend written before it keeps serving every other call.
    """

    name: str

    async def generate(
        self,
        request: ModelRequest,
        *,
        on_text: TextCallback | None = None,
        halt: asyncio.Event | None = None,
    ) -> ModelResponse: ...

    async def close(self) -> None: ...


@runtime_checkable
class StreamingBackend(ModelBackend, Protocol):
    """A backend that can also yield text pieces of a single sample as they are generated."""

    def stream(self, request: ModelRequest) -> AsyncIterator[str]: ...
