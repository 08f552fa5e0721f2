"""Probes and metrics of a live server: /healthz, /readyz, /metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agents.backends.openai_compat import OpenAIModelConfig
from agents.backends.scripted import ScriptedModelConfig
from agents.model_map import ModelMap
from services.settings import Settings
from store import metrics
from tests.api.conftest import REPLIES, LiveServer, free_port, wait_for_run

DISCUSSION = {"pattern": "discussion", "problem": "What is 2+3?", "config": {"max_rounds": 2}}


@pytest.fixture
def fresh_metrics() -> Iterator[None]:
    """The metrics are process-wide; start from none so counts are this test's."""
    metrics.clear()
    yield
    metrics.clear()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus text exposition, or None."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return None


def test_healthz_says_the_process_is_up(api: LiveServer) -> None:
    response = httpx.get(f"{api.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_the_database_and_the_models(api: LiveServer) -> None:
    response = httpx.get(f"{api.url}/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "models.default"}
    assert body["checks"]["database"]["ok"] is True
    assert "SELECT 1" in body["checks"]["database"]["detail"]
    assert body["checks"]["models.default"] == {
        "ok": True,
        "detail": "scripted: always ready",
        "ms": body["checks"]["models.default"]["ms"],
    }


def test_readyz_is_503_when_an_openai_backend_cannot_be_reached(tmp_path: Path) -> None:
    closed = free_port()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        models=ModelMap(
            default=ScriptedModelConfig(replies=REPLIES),
            models={
                "policy": OpenAIModelConfig(
                    base_url=f"http://127.0.0.1:{closed}/v1", model="policy-model"
                )
            },
        ),
    )
    with LiveServer(settings) as server:
        response = httpx.get(f"{server.url}/readyz", timeout=30)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["models.default"]["ok"] is True
    policy = body["checks"]["models.policy"]
    assert policy["ok"] is False
    assert f"cannot reach http://127.0.0.1:{closed}/v1/models" in policy["reason"]
    assert body["reason"] == f"models.policy: {policy['reason']}"


def test_readyz_is_503_when_the_broker_is_down(tmp_path: Path) -> None:
    closed = free_port()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        models=ModelMap(default=ScriptedModelConfig(replies=REPLIES)),
        redis_url=f"redis://127.0.0.1:{closed}/0",
    )
    with LiveServer(settings) as server:
        response = httpx.get(f"{server.url}/readyz", timeout=30)
    assert response.status_code == 503
    events = response.json()["checks"]["events"]
    assert events["ok"] is False
    assert f"Redis at 127.0.0.1:{closed}" in events["reason"]


def test_metrics_count_runs_and_tokens(api: LiveServer, fresh_metrics: None) -> None:
    with httpx.Client(base_url=api.url) as client:
        run_id = client.post("/v1/runs", json=DISCUSSION).json()["id"]
        run = wait_for_run(client, run_id)
        assert run["status"] == "succeeded"
        response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'thinktank_runs_total{pattern="discussion",status="succeeded"} 1.0' in text.splitlines()
    assert sample(text, "thinktank_runs_in_progress", pattern="discussion") == 0.0
    prompt = sample(text, "thinktank_tokens_total", model="scripted", kind="prompt")
    completion = sample(text, "thinktank_tokens_total", model="scripted", kind="completion")
    assert prompt == run["usage"]["prompt_tokens"] > 0
    assert completion == run["usage"]["completion_tokens"] > 0
    latencies = sample(
        text, "thinktank_turn_latency_seconds_count", role="solver", model="scripted"
    )
    assert latencies == 1.0
