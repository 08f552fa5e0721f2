"""The OpenAI chat-completions shapes of a model deployment's routes (``ModelIngress``).

Only what the ModelRequest contract can honour is accepted: a field the engines cannot serve
(tools, ``response_format`` on the local engine, streaming) is refused with a 400 and the
reason, never silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.model import ChatMessage, ModelRequest, ModelResponse, SamplingParams


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(description="<served name> or <served name>:<adapter>")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: Literal[False] = Field(False, description="streaming is not offered on these routes")


UNSUPPORTED = ("tools", "tool_choice", "functions", "response_format", "structured_outputs")


def to_model_request(body: ChatRequest, adapter: str | None) -> ModelRequest:
    extra = sorted(set(body.model_extra or {}) & set(UNSUPPORTED))
    if extra:
        raise ValueError(f"not supported by this engine: {', '.join(extra)}")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    top = body.top_logprobs or 0
    if body.logprobs and top == 0:
        top = 1
    params = SamplingParams(
        n=body.n,
        max_tokens=body.max_completion_tokens or body.max_tokens or 256,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop,
        seed=body.seed,
        top_logprobs=top if body.logprobs else 0,
    )
    return ModelRequest(messages=body.messages, params=params, adapter=adapter)


def to_chat_completion(
    response: ModelResponse, *, model: str, completion_id: str, created: int
) -> dict[str, Any]:
    choices = []
    for index, completion in enumerate(response.completions):
        logprobs = None
        if completion.logprobs is not None:
            logprobs = {
                "content": [
                    {
                        "token": item.token,
                        "logprob": item.logprob,
                        "top_logprobs": [
                            {"token": token, "logprob": value} for token, value in item.top.items()
                        ],
                    }
                    for item in completion.logprobs
                ]
            }
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": completion.text},
                "finish_reason": completion.finish_reason,
                "logprobs": logprobs,
            }
        )
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": response.prompt_tokens,
            "completion_tokens": response.completion_tokens,
            "total_tokens": response.total_tokens,
        },
    }


def error_body(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}
