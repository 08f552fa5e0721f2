"""The HTTP API: ``create_app()`` wires the store, the executor and the event bus."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.utils import is_body_allowed_for_status_code
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from agents.model_map import ModelRouter
from execution.executor import CeleryExecutor, Executor, InProcessExecutor
from execution.recovery import requeue_forever
from execution.tracing import configure_tracing
from graphs.patterns import PATTERNS, UnknownPattern
from services.api import campaigns as campaigns_api
from services.api import health, model_versions, openai_face, runs
from services.api.auth import ApiKeyAuth, document_security, keys_required
from services.api.deps import Services
from services.api.limits import BodySizeLimit, NulInUrl
from services.api.schemas.errors import refusals
from services.api.schemas.openai import ErrorBody, ErrorDetail
from services.api.schemas.wire import without_nul
from services.campaign_drivers import CampaignDrivers
from services.dashboard import mount_dashboard
from services.settings import Settings
from store.bus import EventBus, InMemoryBus, RedisBus
from store.db import create_engine, migrate
from store.runs import RunNotFound, Store

ROUTERS = (
    runs.router,
    campaigns_api.router,
    model_versions.router,
    health.router,
    openai_face.router,
)
# What every route of a group may answer besides its own statuses (services/api/schemas/errors.py)
V1_REFUSALS = refusals(400, 401, 413, 422, 429)
# The face answers invalid fields with 400 as OpenAI does, never FastAPI's 422: "4XX" says
# every refusal of the face has OpenAI's shape, and keeps FastAPI from adding its 422.
OPENAI_REFUSALS = refusals(400, 401, 404, 413, 429, openai=True) | {
    "4XX": {"model": ErrorBody, "description": "any refusal, in OpenAI's shape"}
}
# OpenAI's error codes for the statuses a route's own code does not name
OPENAI_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def validation_errors(exc: ValidationError | RequestValidationError) -> list[dict[str, object]]:
    """Pydantic's errors without the echoed input, which may be megabytes of problem text."""
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg"), "type": error.get("type")}
        for error in exc.errors()
    ]


def on_openai_face(request: Request) -> bool:
    """Whether the request is for one of the OpenAI face's paths, by any method, matched or
    not (``/v1/models/<any text>`` included: a route's pattern does not match a newline)."""
    path = request.scope["path"]
    for route in openai_face.router.routes:
        static, variable, _ = getattr(route, "path", "").partition("{")
        if path == static or (variable and path.startswith(static)):
            return True
    return False


def refusal(
    request: Request,
    status: int,
    reason: str,
    *,
    errors: list[dict[str, object]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The error response: ``{"detail", "errors"?}``, or OpenAI's shape on the OpenAI face."""
    if not is_body_allowed_for_status_code(status):
        return Response(status_code=status, headers=headers)
    body: dict[str, Any]
    if on_openai_face(request):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        error = ErrorDetail(message=reason, type=kind, code=OPENAI_CODES.get(status))
        body = ErrorBody(error=error).model_dump(mode="json")
    else:
        body = {"detail": reason} if errors is None else {"detail": reason, "errors": errors}
    return JSONResponse(body, status_code=status, headers=headers)


def parameters_without_null(openapi: dict[str, Any]) -> None:
    """A query or header parameter is absent or text. FastAPI writes an optional one as
    "string or null", and a client that believes it sends the text ``null``: a string."""
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                kept = [b for b in schema.get("anyOf", ()) if b != {"type": "null"}]
                if len(kept) == 1 and len(schema["anyOf"]) == 2:
                    outer = {k: v for k, v in schema.items() if k != "anyOf"}
                    parameter["schema"] = {**kept[0], **outer}


def stored_text_without_nul(openapi: dict[str, Any]) -> None:
    """Say where text may not hold NUL: in what is stored (a run's config, a message's text,
    which the face reads alike wherever it is) and anywhere in a URL (limits.NulInUrl)."""
    components = openapi.get("components", {}).get("schemas", {})
    for pattern in PATTERNS.values():
        without_nul(components.get(pattern.config_model.__name__))
    without_nul(components.get("ChatMessage", {}).get("properties", {}).get("content"))
    without_nul(components.get("TextPart", {}).get("properties", {}).get("text"))
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") in ("path", "query"):
                    without_nul(parameter.get("schema"))


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: routes are one per method, and a 405
    names only the first route's."""
    methods: set[str] = set()
    for route in (route for router in ROUTERS for route in router.routes):
        if route.matches(request.scope)[0] != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def create_app(settings: Settings | None = None, *, bind_host: str = "127.0.0.1") -> FastAPI:
    """The API app. ``bind_host`` is where it will listen: keys are required by default
    unless that is a loopback address."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_tracing()
        engine = create_engine(settings.database_url)
        await migrate(engine)
        redis_url = settings.events_redis_url
        bus: EventBus = RedisBus(redis_url) if redis_url else InMemoryBus()
        store = Store(engine, bus=bus)
        models = ModelRouter(settings.models)
        executor: Executor
        reaper: asyncio.Task[None] | None = None
        if settings.broker_url:
            executor = CeleryExecutor(settings.broker_url)
        else:
            # this process is the worker: its clients are built before the first request,
            # not at the first run's first call (off the loop: building blocks)
            await asyncio.to_thread(models.warm)
            executor = InProcessExecutor(
                store,
                models,
                settings.database_url,
                settings.max_concurrent_runs,
                stream_tokens=settings.stream_tokens,
                lease_s=settings.run_lease_s,
            )
            await executor.recover()
            # Celery workers look for abandoned runs themselves (services/worker); in
            # embedded mode this process is the worker.
            reaper = asyncio.create_task(
                requeue_forever(
                    store,
                    executor,
                    interval_s=settings.reap_interval_s,
                    requeue_after_s=settings.requeue_after_s,
                )
            )
        campaigns = CampaignDrivers(
            store,
            models,
            settings.database_url,
            settings.broker_url,
            stale_after_s=settings.campaign_stale_s,
        )
        campaign_reaper = None
        if not settings.broker_url:  # the workers look for stalled campaigns themselves
            campaign_reaper = asyncio.create_task(
                campaigns.resume_forever(settings.reap_interval_s)
            )
        app.state.services = Services(
            settings=settings, store=store, executor=executor, bus=bus, campaigns=campaigns
        )
        try:
            yield
        finally:
            if reaper is not None:
                reaper.cancel()
            if campaign_reaper is not None:
                campaign_reaper.cancel()
            await campaigns.close()
            await executor.close()
            await models.close()
            await bus.close()
            await store.close()
            await engine.dispose()

    app = FastAPI(
        title="thinktank",
        version="0.1.0",
        summary="Several LLM agents reasoning together, every word stored.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(NulInUrl)
    # added last, so outermost: an unauthenticated request is refused before its body is read
    app.add_middleware(ApiKeyAuth, settings=settings, bind_host=bind_host)
    app.include_router(runs.router, responses=V1_REFUSALS)
    app.include_router(campaigns_api.router, responses=V1_REFUSALS)
    # global: any valid key reads them
    app.include_router(model_versions.router, responses=V1_REFUSALS)
    # /healthz, /readyz, /metrics: no key needed
    app.include_router(health.router, responses=refusals(400))
    app.include_router(openai_face.router, responses=OPENAI_REFUSALS)
    mount_dashboard(app)  # /ui: static files, open without a key; the data behind it is not

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            parameters_without_null(schema)
            stored_text_without_nul(schema)
            document_security(schema, required=keys_required(settings.auth, bind_host))
        return app.openapi_schema  # type: ignore[return-value]  # set by FastAPI.openapi

    app.openapi = openapi  # type: ignore[method-assign]

    # On the OpenAI face every error is OpenAI's shape (refusal()); its routes answer their own
    # errors so (services/api/openai_face.py), these are the ones raised before or around them.

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return refusal(request, exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(RunNotFound)
    async def not_found(request: Request, exc: RunNotFound) -> Response:
        return refusal(request, 404, str(exc))

    @app.exception_handler(UnknownPattern)
    async def unknown_pattern(request: Request, exc: UnknownPattern) -> Response:
        return refusal(request, 404 if on_openai_face(request) else 422, str(exc))

    @app.exception_handler(ValidationError)
    async def bad_config(request: Request, exc: ValidationError) -> Response:
        if on_openai_face(request):
            return openai_face.invalid_request(exc.errors()).response()
        return refusal(request, 422, "invalid pattern config", errors=validation_errors(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        if on_openai_face(request):
            return openai_face.invalid_request(exc.errors()).response()
        return refusal(request, 422, "invalid request", errors=validation_errors(exc))

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> Response:
        return refusal(request, 400 if on_openai_face(request) else 422, str(exc))

    return app
