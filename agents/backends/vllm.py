"""The ``vllm`` backend: vLLM through Ray Serve LLM, called by DeploymentHandle.

Graphs inside the cluster call the ``LLMServer`` deployment that ``services.serving`` builds
from the model-map entry (``LLMServer.chat`` with a ``ChatCompletionRequest``), without an HTTP
hop; outside clients use the same deployment through Ray Serve LLM's OpenAI routes. Requests
from every agent of every run share the engines, so vLLM batches them continuously and reuses
the KV cache of their shared prompt prefixes (the patterns put the shared part of a prompt,
system prompt and problem and transcript, first).

- LoRA: a request's ``adapter`` (or the entry's default) becomes the model name
  ``<model_id>:<adapter>`` and Serve's ``multiplexed_model_id``, so Ray Serve LLM loads the
  adapter from ``lora.adapters_uri/<adapter>`` on the replica that serves it, without a restart.
  Base-model requests carry no multiplexed id, so they spread over all replicas.
- Structured outputs go in vLLM's ``structured_outputs`` field (``json``, ``regex``,
  ``choice``), never the ``guided_*`` fields that vLLM removed and silently ignores.
- Token counts are exact: choices carry their ``token_ids`` (``return_token_ids``); streams ask
  for usage on every chunk (``continuous_usage_stats``), so a halted call still counts every
  token generated.

vLLM (and Ray Serve LLM's protocol models, which need it) is imported on first use only.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from agents.backends.ray_handle import join_cluster
from agents.backends.serving_config import VLLMModelConfig
from agents.model import (
    Completion,
    ModelError,
    ModelRequest,
    ModelResponse,
    TextCallback,
    TokenLogprob,
)

FinishReason = Literal["stop", "length", "cancelled", "error"]


def served_model(config: VLLMModelConfig, adapter: str | None) -> str:
    """The ``model`` a request names: the base model, or ``<model_id>:<adapter>``."""
    return f"{config.model_id}:{adapter}" if adapter else config.model_id


def structured_outputs(
    *,
    json_schema: dict[str, Any] | None = None,
    regex: str | None = None,
    choice: list[str] | None = None,
) -> dict[str, Any]:
    """vLLM's ``structured_outputs`` request field with exactly one constraint."""
    given = {
        key: value
        for key, value in (("json", json_schema), ("regex", regex), ("choice", choice))
        if value is not None
    }
    if len(given) != 1:
        raise ValueError("give exactly one of json_schema, regex, choice")
    return {"structured_outputs": given}


def chat_body(
    request: ModelRequest,
    model: str,
    *,
    stream: bool = False,
    constraint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ChatCompletionRequest fields of a ModelRequest (vLLM's OpenAI protocol)."""
    params = request.params
    body: dict[str, Any] = {
        "model": model,
        "messages": [message.model_dump() for message in request.messages],
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "n": params.n,
        "return_token_ids": True,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = params.top_logprobs
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    if constraint is not None:
        body.update(constraint)
    return body


def _finish(reason: str | None) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _logprobs(choice: Any) -> list[TokenLogprob] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if content is None:
        return None
    return [
        TokenLogprob(
            token=item.token,
            logprob=item.logprob,
            top={top.token: top.logprob for top in item.top_logprobs or []},
        )
        for item in content
    ]


def response_from_completion(
    reply: dict[str, Any], *, adapter: str | None, asked_logprobs: bool
) -> ModelResponse:
    """A non-streamed ``ChatCompletionResponse`` (as a dict) as a ModelResponse."""
    parsed = ChatCompletion.model_validate(reply)
    choices = sorted(parsed.choices, key=lambda choice: choice.index)
    usage = parsed.usage
    total = usage.completion_tokens if usage else 0
    counts = [len(getattr(choice, "token_ids", None) or []) for choice in choices]
    if sum(counts) != total and choices:  # no token ids: share the total out evenly
        counts = [total // len(choices) + (i < total % len(choices)) for i in range(len(choices))]
    completions = []
    for choice, count in zip(choices, counts, strict=True):
        logprobs = (_logprobs(choice) or []) if asked_logprobs else None
        ids = getattr(choice, "token_ids", None)
        ids = list(ids) if ids is not None and len(ids) == count else None
        completions.append(
            Completion(
                text=choice.message.content or "",
                finish_reason=_finish(choice.finish_reason),
                completion_tokens=count,
                logprobs=logprobs,
                token_ids=ids,
                # vLLM's log-probs are the raw model's by default (its logprobs_mode)
                token_logprobs=[item.logprob for item in logprobs]
                if ids is not None and logprobs is not None and len(logprobs) == len(ids)
                else None,
            )
        )
    return ModelResponse(
        completions=completions,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        model=parsed.model.split(":", 1)[0],
        adapter=adapter,
    )


def stream_events(batch: Any) -> list[dict[str, Any]]:
    """The chunks in one item of ``LLMServer.chat``'s stream: ``data: {...}`` strings."""
    items = batch if isinstance(batch, list) else [batch]
    events = []
    for item in items:
        if not isinstance(item, str):
            events.append(_as_dict(item))
            continue
        for line in item.splitlines():
            line = line.strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data and data != "[DONE]":
                events.append(json.loads(data))
    return events


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    if hasattr(item, "model_dump"):
        return item.model_dump()
    raise ModelError(f"unexpected reply from the LLM server: {type(item).__name__}")


def _raise_if_error(event: dict[str, Any]) -> None:
    error = event.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        retryable = isinstance(code, int) and (code >= 500 or code == 429)
        raise ModelError(f"vLLM: {message}", retryable=retryable)


class VLLMBackend:
    """Calls a Ray Serve LLM ``LLMServer`` deployment through a DeploymentHandle."""

    def __init__(self, config: VLLMModelConfig, handle: Any = None) -> None:
        self.config = config
        self.name = config.model_id
        self._handle = handle
        self._closed = False

    def handle(self) -> Any:
        if self._handle is None:
            from ray import serve

            join_cluster(self.config.ray_address)
            self._handle = serve.get_deployment_handle(
                self.config.deployment_name(), app_name=self.config.app_name
            )
        return self._handle

    async def generate(
        self,
        request: ModelRequest,
        *,
        on_text: TextCallback | None = None,
        halt: asyncio.Event | None = None,
        constraint: dict[str, Any] | None = None,
    ) -> ModelResponse:
        """``constraint``: a :func:`structured_outputs` field the reply must satisfy."""
        if self._closed:
            raise ModelError("the vllm backend is closed")
        started = time.perf_counter()
        adapter = request.adapter or self.config.adapter
        model = served_model(self.config, adapter)
        stream = (on_text is not None or halt is not None) and request.params.n == 1
        body = chat_body(request, model, stream=stream, constraint=constraint)
        try:
            from ray.serve.llm.openai_api_models import ChatCompletionRequest

            chat_request = ChatCompletionRequest(**body)
            handle = self.handle().options(stream=True)
            if adapter:
                handle = handle.options(multiplexed_model_id=model)
            replies = handle.chat.remote(chat_request, None)
            if stream:
                response = await asyncio.wait_for(
                    self._streamed(replies, adapter, on_text, halt, request.params.top_logprobs),
                    self.config.timeout_s,
                )
            else:
                response = await asyncio.wait_for(
                    self._whole(replies, adapter, request.params.top_logprobs > 0),
                    self.config.timeout_s,
                )
        except ModelError:
            raise
        except TimeoutError as error:
            raise ModelError(
                f"{model}: no reply within {self.config.timeout_s} s", retryable=True
            ) from error
        except (ValueError, TypeError) as error:  # the request did not validate
            raise ModelError(f"{model}: bad request: {error}", retryable=False) from error
        except Exception as error:
            raise ModelError(f"{model}: {type(error).__name__}: {error}", retryable=True) from error
        response.latency_s = time.perf_counter() - started
        return response

    async def _whole(self, replies: Any, adapter: str | None, logprobs: bool) -> ModelResponse:
        async for item in replies:
            reply = _as_dict(item[0] if isinstance(item, list) else item)
            _raise_if_error(reply)
            return response_from_completion(reply, adapter=adapter, asked_logprobs=logprobs)
        raise ModelError("the LLM server sent no reply", retryable=True)

    async def _streamed(
        self,
        replies: Any,
        adapter: str | None,
        on_text: TextCallback | None,
        halt: asyncio.Event | None,
        top_logprobs: int,
    ) -> ModelResponse:
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        finish: FinishReason = "stop"
        prompt_tokens = completion_tokens = 0
        model = self.config.model_id
        async for batch in replies:
            for event in stream_events(batch):
                _raise_if_error(event)
                chunk = ChatCompletionChunk.model_validate(event)
                model = chunk.model.split(":", 1)[0] or model
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
                    completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        if on_text is not None:
                            on_text(choice.delta.content)
                    logprobs.extend(_logprobs(choice) or [])
                    if choice.finish_reason is not None:
                        finish = _finish(choice.finish_reason)
            if halt is not None and halt.is_set():
                replies.cancel()
                finish = "cancelled"
                break
        completion = Completion(
            text="".join(parts),
            finish_reason=finish,
            completion_tokens=completion_tokens,
            logprobs=logprobs if top_logprobs else None,
        )
        return ModelResponse(
            completions=[completion], prompt_tokens=prompt_tokens, model=model, adapter=adapter
        )

    async def close(self) -> None:
        self._closed = True
        self._handle = None
