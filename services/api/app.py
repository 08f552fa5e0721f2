"""The HTTP API: ``create_app()`` wires the store, the executor and the event bus."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from agents.model_map import ModelRouter
from execution.executor import CeleryExecutor, Executor, InProcessExecutor
from execution.recovery import requeue_forever
from execution.tracing import configure_tracing
from graphs.patterns import UnknownPattern
from services.api import campaigns as campaigns_api
from services.api import health, model_versions, runs
from services.api.auth import ApiKeyAuth
from services.api.deps import Services
from services.api.limits import BodySizeLimit, NulInUrl
from services.campaign_drivers import CampaignDrivers
from services.dashboard import mount_dashboard
from services.settings import Settings
from store.bus import EventBus, InMemoryBus, RedisBus
from store.db import create_engine, migrate
from store.runs import RunNotFound, Store


def validation_errors(exc: ValidationError | RequestValidationError) -> list[dict[str, object]]:
    """Pydantic's errors without the echoed input, which may be megabytes of problem text."""
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg"), "type": error.get("type")}
        for error in exc.errors()
    ]


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
    app.include_router(runs.router)
    app.include_router(campaigns_api.router)
    app.include_router(model_versions.router)  # global: any valid key reads them
    app.include_router(health.router)  # /healthz, /readyz, /metrics: no key needed
    from services.api import openai_face

    app.include_router(openai_face.router)
    mount_dashboard(app)  # /ui: static files, open without a key; the data behind it is not

    @app.exception_handler(RunNotFound)
    async def not_found(_request: Request, exc: RunNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(UnknownPattern)
    async def unknown_pattern(_request: Request, exc: UnknownPattern) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ValidationError)
    async def bad_config(_request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": "invalid pattern config", "errors": validation_errors(exc)},
            status_code=422,
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": "invalid request", "errors": validation_errors(exc)}, status_code=422
        )

    @app.exception_handler(ValueError)
    async def bad_value(_request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app
