"""Request and response models of the OpenAI-compatible face (``/v1/chat/completions``).

The shapes follow OpenAI's Chat Completions API closely enough for the official clients to
parse them; what thinktank adds rides in a ``thinktank`` field, which those clients keep as an
extra attribute. Request fields OpenAI defines but a multi-agent run has no use for (``stop``,
``seed``, ``logprobs``...) are accepted and ignored, as most OpenAI-compatible servers do, so
existing client code works unchanged. Fields whose loss would change what the client gets back
(``tools``, ``functions`` and their choices, a ``response_format`` other than text) are read so
that the face can refuse them by name, rather than answer prose to a client expecting a tool
call or JSON.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MessageRole = Literal["system", "developer", "user", "assistant", "tool", "function"]
FinishReason = Literal["stop", "length"]


class TextPart(BaseModel):
    """One part of a message's content; only text parts can become a problem."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(description="'text'; other part types (images, audio) are refused")
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: MessageRole
    content: str | list[TextPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = Field(
        False, description="end the stream with a chunk whose usage covers the whole run"
    )


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(description="only 'text' is served: a run answers in prose")


class ThinktankOptions(BaseModel):
    """thinktank's own options, sent with the OpenAI clients' ``extra_body``."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(
        default_factory=dict,
        description="pattern options (see GET /v1/patterns); they win over the OpenAI fields",
    )


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        description="thinktank/<pattern> from GET /v1/models", examples=["thinktank/discussion"]
    )
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, description="deprecated alias of the next")
    max_completion_tokens: int | None = Field(
        None,
        ge=1,
        description="the pattern's max_tokens where it has one, else the run's token_budget",
    )
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    n: int | None = Field(None, description="only 1 is supported: a run has one answer")
    user: str | None = Field(None, max_length=256, description="accepted; not stored")
    response_format: ResponseFormat | None = Field(
        None, description="{'type': 'text'} or absent; a JSON format is refused (400)"
    )
    tools: list[dict[str, Any]] | None = Field(
        None,
        description="refused (400) unless empty or with tool_choice 'none': a run's agents do "
        "not call a client's tools",
    )
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="'none' or 'auto'; one that demands a tool call is refused (400)"
    )
    functions: list[dict[str, Any]] | None = Field(
        None, description="the older form of tools, refused alike"
    )
    function_call: str | dict[str, Any] | None = Field(
        None, description="the older form of tool_choice, refused alike"
    )
    thinktank: ThinktankOptions | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ThinktankResult(BaseModel):
    """Where the whole conversation behind a completion can be read back."""

    run_id: str = Field(description="GET /v1/runs/{run_id} and /v1/runs/{run_id}/turns")
    pattern: str
    answer: str | None = None
    stop_reason: str | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str = Field(description="chatcmpl-<run_id>")
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: None = None
    thinktank: ThinktankResult


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: None = None
    thinktank: ThinktankResult | None = None


class ModelCard(BaseModel):
    id: str = Field(examples=["thinktank/discussion"])
    object: Literal["model"] = "model"
    created: int = Field(0, description="patterns have no creation date; always 0")
    owned_by: Literal["thinktank"] = "thinktank"
    summary: str = Field(description="what the pattern does (thinktank extension)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
