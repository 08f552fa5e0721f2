"""The ``ray`` backend: a thinktank model deployment on Ray Serve, called by DeploymentHandle.

The deployment (``services.serving.deployments.ModelServer``) runs an engine (the local
transformers model, or the scripted one in tests) behind the same ModelRequest/ModelResponse
contract as every backend, so a laptop and a cluster run one code path apart from the engine.
Calls go straight to a replica through Ray (no HTTP hop); Serve spreads them over the replicas,
and each replica batches what it receives.

- Requests and replies cross the process boundary as JSON-shaped dicts (``model_dump``), so
  the two sides only share the pydantic schemas, not pickled classes.
- ``on_text`` is honoured: the call goes to the replica's streaming method, which forwards
  sample 0's pieces as the engine produces them and ends with the whole response.
- ``halt``: the call streams, and once the event is set the stream is cancelled and the text
  received so far is returned with finish reason ``"cancelled"``. The replica cannot report
  the tokens it generated after the last piece, so ``completion_tokens`` then counts the
  pieces received (one per generated token for the local engine, which hands out a piece per
  decoding step unless it holds text back at a possible stop string).
- A request without an adapter gets the model-map entry's ``adapter``; the reply names the
  base model and the adapter that answered, which the turn records.
- Errors: the engine's :class:`ModelError` comes back with its ``retryable`` flag; a replica
  or cluster failure is ``ModelError(retryable=True)``; no reply within ``timeout_s`` is
  ``ModelError(retryable=True)`` too.

Ray is imported on first use, so a model map that names this backend costs nothing until a
call is made. Outside a Ray cluster the first call joins the one at ``ray_address``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from agents.backends.serving_config import RayModelConfig
from agents.model import (
    Completion,
    ModelError,
    ModelRequest,
    ModelResponse,
    TextCallback,
)


def join_cluster(address: str) -> None:
    """Connect this process to a Ray cluster unless it is in one (a Serve replica is)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)


def reply_to_response(reply: dict[str, Any]) -> ModelResponse:
    """A replica's reply: the response, or the engine's error with its retry flag."""
    if "error" in reply:
        raise ModelError(reply["error"], retryable=bool(reply.get("retryable")))
    return ModelResponse.model_validate(reply["response"])


class RayHandleBackend:
    """Calls a ``ModelServer`` deployment through a DeploymentHandle."""

    def __init__(self, config: RayModelConfig, handle: Any = None) -> None:
        self.config = config
        self.name = config.served_name
        self._handle = handle
        self._closed = False
        self.replicas: Counter[str] = Counter()
        """Which replicas answered, by replica id (a test or a dashboard sees the spread)."""

    def handle(self) -> Any:
        if self._handle is None:
            from ray import serve

            join_cluster(self.config.ray_address)
            self._handle = serve.get_deployment_handle(
                self.config.deployment_name(), app_name=self.config.app_name
            )
        return self._handle

    def _payload(self, request: ModelRequest) -> dict[str, Any]:
        if request.adapter is None and self.config.adapter is not None:
            request = request.model_copy(update={"adapter": self.config.adapter})
        return request.model_dump(mode="json")

    async def generate(
        self,
        request: ModelRequest,
        *,
        on_text: TextCallback | None = None,
        halt: asyncio.Event | None = None,
    ) -> ModelResponse:
        if self._closed:
            raise ModelError("the ray backend is closed")
        started = time.perf_counter()
        payload = self._payload(request)
        try:
            if on_text is None and halt is None:
                reply = await asyncio.wait_for(
                    self.handle().generate.remote(payload), self.config.timeout_s
                )
                response = self._take(reply)
            else:
                response = await asyncio.wait_for(
                    self._streamed(payload, on_text, halt), self.config.timeout_s
                )
        except ModelError:
            raise
        except TimeoutError as error:
            raise ModelError(
                f"{self.config.deployment_name()}: no reply within {self.config.timeout_s} s",
                retryable=True,
            ) from error
        except Exception as error:  # a dead replica, an unreachable cluster, back pressure
            raise ModelError(
                f"{self.config.deployment_name()}: {type(error).__name__}: {error}",
                retryable=True,
            ) from error
        response.latency_s = time.perf_counter() - started
        return response

    def _take(self, reply: dict[str, Any]) -> ModelResponse:
        response = reply_to_response(reply)
        self.replicas[reply.get("replica", "?")] += 1
        return response

    async def _streamed(
        self,
        payload: dict[str, Any],
        on_text: TextCallback | None,
        halt: asyncio.Event | None,
    ) -> ModelResponse:
        stream = self.handle().options(stream=True).generate_stream.remote(payload)
        pieces: list[str] = []
        halted = asyncio.ensure_future(halt.wait()) if halt is not None else None
        items = aiter(stream)
        try:
            while True:
                step = asyncio.ensure_future(anext(items))
                waits: set[asyncio.Future[Any]] = {step}
                if halted is not None:
                    waits.add(halted)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():  # halted first: stop the replica's generation
                    step.cancel()
                    stream.cancel()
                    return self._cancelled(payload, pieces)
                try:
                    item = step.result()
                except StopAsyncIteration:
                    raise ModelError(
                        f"{self.config.deployment_name()}: the stream ended without a reply",
                        retryable=not pieces,
                    ) from None
                if "text" in item:
                    pieces.append(item["text"])
                    if on_text is not None:
                        on_text(item["text"])
                    continue
                return self._take(item)
        finally:
            if halted is not None:
                halted.cancel()

    def _cancelled(self, payload: dict[str, Any], pieces: list[str]) -> ModelResponse:
        completion = Completion(
            text="".join(pieces), finish_reason="cancelled", completion_tokens=len(pieces)
        )
        return ModelResponse(
            completions=[completion],
            model=self.name,
            adapter=payload.get("adapter"),
        )

    async def close(self) -> None:
        # The deployment outlives this client; only the handle is dropped.
        self._closed = True
        self._handle = None
