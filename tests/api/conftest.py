"""A real ``thinktank`` API server on loopback, with a scripted model behind it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from agents.backends.scripted import ScriptedModelConfig
from agents.model_map import ModelMap
from services.api.app import create_app
from services.settings import Settings

CEO = "### Decision: <Continue>\n### Recruit Number: 3\n### Direction: go\n### Maximum Tokens: 128"
REPLIES = {
    "ceo": [CEO],
    "recruiter": ["1. A.\n2. B.\n3. C."],
    "solver": ["2 + 3 = 5 so \\boxed{5}"],
    "critic": ["Same. [Agree]"],
    "evaluator": ["### Correctness: 1\n### Advice: none"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn in a background thread; ``url`` is its base URL."""

    def __init__(self, settings: Settings, **app_options: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, **app_options)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def scripted_settings(tmp_path: Path, *, latency_s: float = 0.0, **overrides: Any) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        models=ModelMap(default=ScriptedModelConfig(replies=REPLIES, latency_s=latency_s)),
        **overrides,
    )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(scripted_settings(tmp_path)) as server:
        yield server


@pytest.fixture
def slow_api(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(scripted_settings(tmp_path, latency_s=0.3)) as server:
        yield server


def wait_for_run(client: httpx.Client, run_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.get(f"/v1/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {run}")
