"""Runs on a real Celery worker process, through the real Redis and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from agents.backends.scripted import ScriptedModelConfig
from agents.model_map import ModelMap
from services.settings import Settings
from tests.api.conftest import REPLIES, LiveServer, wait_for_run

pytestmark = pytest.mark.postgres

BROKER = "redis://127.0.0.1:6379/13"


@pytest.fixture
def broker() -> Iterator[str]:
    client = redis.Redis.from_url(BROKER)
    client.flushdb()  # a database of its own: no queued task of an earlier test remains
    yield BROKER
    client.flushdb()


@pytest.fixture
def worker(postgres_url: str, broker: str) -> Iterator[subprocess.Popen[str]]:
    env = {
        **os.environ,
        "THINKTANK_DATABASE_URL": postgres_url,
        "THINKTANK_BROKER_URL": broker,
        "THINKTANK_MODELS__DEFAULT": json.dumps(
            {"backend": "scripted", "replies": REPLIES, "latency_s": 0.05}
        ),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "worker", "--concurrency", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def test_runs_go_to_the_worker_and_stream_through_redis(
    postgres_url: str, broker: str, worker: subprocess.Popen[str]
) -> None:
    settings = Settings(
        database_url=postgres_url,
        broker_url=broker,
        models=ModelMap(default=ScriptedModelConfig(replies={})),  # the API never calls it
    )
    with LiveServer(settings) as api, httpx.Client(base_url=api.url, timeout=60) as client:
        ids = [
            client.post(
                "/v1/runs", json={"pattern": "discussion", "problem": f"What is 2+{i}?"}
            ).json()["id"]
            for i in range(3)
        ]
        with client.stream("GET", f"/v1/runs/{ids[0]}/events") as response:
            kinds = [
                line.split(":", 1)[1].strip()
                for line in response.iter_lines()
                if line.startswith("event:")
            ]
        assert kinds[-1] == "run_finished"
        assert kinds.count("turn_finished") == 6
        for run_id in ids:
            run = wait_for_run(client, run_id, timeout_s=60)
            assert run["status"] == "succeeded", run
            assert run["answer"] == "5"
            assert len(client.get(f"/v1/runs/{run_id}/turns").json()) == 6
    assert worker.poll() is None, "the worker died"


def test_a_queued_run_waits_for_a_worker(postgres_url: str, broker: str) -> None:
    settings = Settings(database_url=postgres_url, broker_url=broker)
    with LiveServer(settings) as api, httpx.Client(base_url=api.url) as client:
        run_id = client.post("/v1/runs", json={"pattern": "single", "problem": "1+1?"}).json()["id"]
        time.sleep(0.5)
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "queued"
        assert redis.Redis.from_url(broker).llen("runs") == 1  # the task waits in the queue
