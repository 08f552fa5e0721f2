"""The Ray Serve deployments: a model server per model, an OpenAI-style ingress for outside
clients, and the thinktank API as an ingress.

``ModelServer`` runs one engine per replica (the local transformers model, or the scripted one
where a test checks plumbing) behind the ModelRequest/ModelResponse contract of
:mod:`agents.model`; the ``ray`` backend calls it by DeploymentHandle. Each replica batches the
requests it holds (``max_ongoing_requests`` of them), and Serve spreads requests over replicas.

``ModelIngress`` gives outside clients the OpenAI-compatible routes of those models
(``/v1/models``, ``/v1/chat/completions``, with ``model`` = ``<served name>[:<adapter>]`` as on
Ray Serve LLM); ``ApiServer`` is the thinktank HTTP API, whose runs reach the models through
handles (the model map's ``ray`` and ``vllm`` entries).
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures built inside the
# replicas at run time, and string annotations of a nested function do not resolve there.
import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from ray import serve

from agents.backends.scripted import ScriptedBackend, ScriptedModelConfig
from agents.backends.serving_config import RayModelConfig
from agents.model import ModelBackend, ModelError, ModelRequest, ModelResponse
from agents.model_map import build_local_backend
from services.serving.openai_routes import (
    ChatRequest,
    error_body,
    to_chat_completion,
    to_model_request,
)

log = logging.getLogger(__name__)


def build_engine(spec: RayModelConfig) -> ModelBackend:
    """The engine one replica runs."""
    if isinstance(spec.engine, ScriptedModelConfig):
        return ScriptedBackend.from_config(spec.engine, name=spec.served_name)
    return build_local_backend(spec.engine, name=spec.served_name)


def _replica_id() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not inside a replica (local testing mode)
        return "local"


@serve.deployment
class ModelServer:
    """One replica of a model deployment."""

    def __init__(self, spec: RayModelConfig) -> None:
        self.spec = spec
        self.engine = build_engine(spec)
        self.replica = _replica_id()
        self.served = 0

    def _reply(self, response: ModelResponse) -> dict[str, Any]:
        self.served += 1
        return {"response": response.model_dump(mode="json"), "replica": self.replica}

    def _failure(self, error: ModelError) -> dict[str, Any]:
        return {"error": str(error), "retryable": error.retryable, "replica": self.replica}

    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A ModelRequest (as a dict) in; ``{"response": ModelResponse, "replica": id}`` or
        ``{"error", "retryable"}`` out."""
        try:
            request = ModelRequest.model_validate(payload)
            return self._reply(await self.engine.generate(request))
        except ModelError as error:
            return self._failure(error)
        except ValueError as error:  # a payload that is not a ModelRequest
            return self._failure(ModelError(f"bad request: {error}", retryable=False))

    async def generate_stream(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Like :meth:`generate`, but first yields ``{"text": piece}`` for each piece of
        sample 0's text as the engine produces it."""
        try:
            request = ModelRequest.model_validate(payload)
        except ValueError as error:
            yield self._failure(ModelError(f"bad request: {error}", retryable=False))
            return
        pieces: asyncio.Queue[str] = asyncio.Queue()
        call = asyncio.ensure_future(self.engine.generate(request, on_text=pieces.put_nowait))
        try:
            while not call.done() or not pieces.empty():
                getter = asyncio.ensure_future(pieces.get())
                await asyncio.wait({getter, call}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield {"text": getter.result()}
                else:
                    getter.cancel()
            try:
                response = call.result()
            except ModelError as error:
                yield self._failure(error)
                return
            yield self._reply(response)
        finally:
            if not call.done():  # the caller went away (or halted): stop generating
                call.cancel()

    async def info(self) -> dict[str, Any]:
        """What this replica is and holds (diagnostics, tests)."""
        adapters = getattr(self.engine, "adapters", None)
        return {
            "replica": self.replica,
            "served_name": self.spec.served_name,
            "served": self.served,
            "adapters": adapters.loaded if adapters is not None else [],
        }

    async def check_health(self) -> None:
        if getattr(self.engine, "_closed", False):
            raise RuntimeError("the engine is closed")

    async def __del__(self) -> None:
        with contextlib.suppress(Exception):
            await self.engine.close()


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress()
class ModelIngress:
    """OpenAI-compatible routes for the models of one Serve application."""

    def __init__(self, servers: dict[str, Any]) -> None:
        self.servers = servers  # served name -> DeploymentHandle of its ModelServer

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = FastAPI(title="thinktank models", summary="OpenAI-compatible model routes")
        servers = self.servers

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            data = [
                {"id": name, "object": "model", "created": 0, "owned_by": "thinktank"}
                for name in servers
            ]
            return {"object": "list", "data": data}

        @app.post("/v1/chat/completions")
        async def chat(body: ChatRequest) -> JSONResponse:
            base, _, adapter = body.model.partition(":")
            if base not in servers:
                known = ", ".join(sorted(servers))
                return JSONResponse(
                    error_body(f"unknown model {base!r} (served: {known})", "model_not_found"),
                    status_code=404,
                )
            try:
                request = to_model_request(body, adapter or None)
            except ValueError as error:
                return JSONResponse(error_body(str(error), "invalid_request"), status_code=400)
            reply = await servers[base].generate.remote(request.model_dump(mode="json"))
            if "error" in reply:
                status = 503 if reply.get("retryable") else 400
                return JSONResponse(error_body(reply["error"], "model_error"), status_code=status)
            response = ModelResponse.model_validate(reply["response"])
            completion = to_chat_completion(
                response,
                model=body.model,
                completion_id=f"chatcmpl-{uuid.uuid4().hex}",
                created=int(time.time()),
            )
            return JSONResponse(completion)

        return app


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress()
class ApiServer:
    """The thinktank HTTP API as a Serve ingress; its runs call the models by handle."""

    def __init__(self, settings: Any, bind_host: str) -> None:
        self.settings = settings
        self.bind_host = bind_host

    def __serve_build_asgi_app__(self) -> FastAPI:
        from services.api.app import create_app

        return create_app(self.settings, bind_host=self.bind_host)
