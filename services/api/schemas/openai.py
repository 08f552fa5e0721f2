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

import copy
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from graphs.patterns import PATTERNS, Pattern
from services.api.schemas.runs import BLANK
from services.api.schemas.wire import JsonBool, JsonFloat, JsonInt, json_numbers

MODEL_PREFIX = "thinktank/"
MessageRole = Literal["system", "developer", "user", "assistant", "tool", "function"]
FinishReason = Literal["stop", "length"]


class TextPart(BaseModel):
    """One part of a message's content; only text parts can become a problem."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(
        description="'text'; other part types (images, audio) are refused",
        json_schema_extra={"const": "text"},
    )
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: MessageRole
    content: str | list[TextPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: JsonBool = Field(
        False, description="end the stream with a chunk whose usage covers the whole run"
    )


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="only 'text' is served: a run answers in prose",
        json_schema_extra={"const": "text"},
    )


class ThinktankOptions(BaseModel):
    """thinktank's own options, sent with the OpenAI clients' ``extra_body``."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(
        default_factory=dict,
        description="pattern options (see GET /v1/patterns); they win over the OpenAI fields",
    )


USER_TEXT = {
    "type": "object",
    "properties": {
        "role": {"const": "user"},
        "content": {
            "anyOf": [
                {"type": "string", "not": BLANK},
                {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "properties": {
                            "type": {"const": "text"},
                            "text": {"type": "string", "not": BLANK},
                        },
                        "required": ["type", "text"],
                    },
                },
            ]
        },
    },
    "required": ["role", "content"],
}
"""A user message with text other than whitespace: a request needs one, the problem."""


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        description="thinktank/<pattern> from GET /v1/models", examples=["thinktank/discussion"]
    )
    messages: list[ChatMessage] = Field(
        min_length=1,
        description="the last user message with text is the problem; those before it, context",
        json_schema_extra={"contains": USER_TEXT},
    )
    stream: JsonBool = False
    stream_options: StreamOptions | None = None
    max_tokens: JsonInt | None = Field(None, ge=1, description="deprecated alias of the next")
    max_completion_tokens: JsonInt | None = Field(
        None,
        ge=1,
        description="the pattern's max_tokens where it has one, else the run's token_budget",
    )
    temperature: JsonFloat | None = Field(None, ge=0.0, le=2.0)
    top_p: JsonFloat | None = Field(None, gt=0.0, le=1.0)
    n: JsonInt | None = Field(
        None,
        description="only 1 is supported: a run has one answer",
        json_schema_extra={"enum": [1, None]},
    )
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
        None,
        description="'none' or 'auto'; one that demands a tool call is refused (400)",
        json_schema_extra={"enum": ["none", "auto", None]},
    )
    functions: list[dict[str, Any]] | None = Field(
        None, description="the older form of tools, refused alike"
    )
    function_call: str | dict[str, Any] | None = Field(
        None,
        description="the older form of tool_choice, refused alike",
        json_schema_extra={"enum": ["none", "auto", None]},
    )
    thinktank: ThinktankOptions | None = None

    @field_validator("max_tokens", "max_completion_tokens", "n", mode="before")
    @classmethod
    def _whole_numbers(cls, value: Any) -> Any:
        return json_numbers(value)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """One request per pattern, since the model decides which options and limits apply
        (see :func:`request_for`), and one for any other model name, which gets a 404."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        base = copy.deepcopy(schema)
        base["allOf"] = [tools_need_no_call("tools", "tool_choice")]
        base["allOf"].append(tools_need_no_call("functions", "function_call"))
        known = [name for pattern in PATTERNS.values() for name in model_names(pattern)]
        other = copy.deepcopy(base)
        other["properties"]["model"] = {
            "type": "string",
            "not": {"enum": known},
            "description": "any other name is answered 404 model_not_found",
        }
        other["title"] = "ChatCompletionRequestForAnotherModel"
        variants = [request_for(pattern, base, handler) for pattern in PATTERNS.values()]
        schema.clear()
        schema.update(
            title="ChatCompletionRequest",
            description="a chat request; its model names the pattern whose options apply",
            oneOf=[*variants, other],
        )
        return schema


def model_names(pattern: Pattern) -> list[str]:
    """The names the face documents for ``pattern`` (it also takes any case)."""
    bare = sorted({pattern.name, pattern.name.replace("_", "-")})
    return [f"{MODEL_PREFIX}{name}" for name in bare] + bare


def tools_need_no_call(tools: str, choice: str) -> dict[str, Any]:
    """A non-empty ``tools`` is served only with ``tool_choice`` ``"none"``."""
    return {
        "if": {"properties": {tools: {"type": "array", "minItems": 1}}, "required": [tools]},
        "then": {"properties": {choice: {"const": "none"}}, "required": [choice]},
    }


def token_limit_of(pattern: Pattern) -> dict[str, Any]:
    """The bounds of what max_(completion_)tokens sets for ``pattern``: its max_tokens, or its
    token_budget (openai_face.pattern_config)."""
    properties = pattern.config_model.model_json_schema()["properties"]
    field = properties.get("max_tokens") or properties["token_budget"]
    integer = next(b for b in field.get("anyOf", [field]) if b.get("type") == "integer")
    return {"anyOf": [integer, {"type": "null"}]}


def token_limits(pattern: Pattern) -> dict[str, Any]:
    """max_completion_tokens, else max_tokens, sets the pattern's limit, unless thinktank.config
    sets it itself (openai_face.pattern_config): only the one that is used must fit it."""
    properties = pattern.config_model.model_fields
    field = "max_tokens" if "max_tokens" in properties else "token_budget"
    limit = token_limit_of(pattern)
    set_in_config = {
        "properties": {
            "thinktank": {
                "type": "object",
                "required": ["config"],
                "properties": {"config": {"type": "object", "required": [field]}},
            }
        },
        "required": ["thinktank"],
    }
    completion_given = {
        "properties": {"max_completion_tokens": {"type": "integer"}},
        "required": ["max_completion_tokens"],
    }
    return {
        "if": set_in_config,
        "else": {
            "properties": {"max_completion_tokens": limit},
            "if": completion_given,
            "else": {"properties": {"max_tokens": limit}},
        },
    }


def request_for(
    pattern: Pattern, base: dict[str, Any], handler: GetJsonSchemaHandler
) -> dict[str, Any]:
    """The request for one pattern: its model names, its token limits, its config."""
    config = handler(TypeAdapter(pattern.config_model).core_schema)
    needed = any(field.is_required() for field in pattern.config_model.model_fields.values())
    options = {
        "type": "object",
        "properties": {"config": {**config, "description": f"options of {pattern.name}"}},
        "additionalProperties": False,
    }
    if needed:
        options["required"] = ["config"]
    variant = copy.deepcopy(base)
    properties = variant["properties"]
    properties["model"] = {
        "type": "string",
        "enum": model_names(pattern),
        "description": pattern.summary,
    }
    properties["thinktank"] = options if needed else {"anyOf": [options, {"type": "null"}]}
    variant["allOf"] = [*variant["allOf"], token_limits(pattern)]
    if needed:  # a required option can only come in thinktank.config
        variant["required"] = [*variant.get("required", []), "thinktank"]
    variant["title"] = f"ChatCompletionRequestFor{pattern.config_model.__name__}"
    return variant


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
