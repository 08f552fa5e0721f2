"""The SPC patterns through the HTTP API, on a scripted model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agents.backends.scripted import ScriptedModelConfig
from agents.model_map import ModelMap
from services.settings import Settings
from tests.api.conftest import LiveServer

PROBLEM = "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many apples are left?"
SOLUTION = "3 * 4 = 12 apples.\n\n12 - 2 = 10 apples are left.\n\nThe answer is \\boxed{10}."
REPLIES = {
    # roll-outs start original first: N = 2 right originals, then wrong sneaky ones
    "solver": ["So 12 - 2 = 10. \\boxed{10}"] * 2 + ["So 14 - 2 = 12. \\boxed{12}"],
    "sneaky_generator": [
        "### Error Type: 2. Calculation error\n### Plan: 14\n### Incorrect Step: 3 * 4 = 14."
    ],
    "critic": ["The product is wrong. <Answer>Incorrect</Answer>"],
}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveServer]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        # Replies go by role in the order calls start. Calls that take a while keep parallel
        # trajectories in step (both first proposals start before either is judged), as a
        # real model's would; instant ones let one trajectory run ahead of the other.
        models=ModelMap(default=ScriptedModelConfig(replies=REPLIES, latency_s=0.05)),
    )
    with LiveServer(settings) as server:
        yield server


def finished(client: httpx.Client, run_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = client.get(f"/v1/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


def test_a_game_through_the_api(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url) as client:
        refused = client.post(
            "/v1/runs", json={"pattern": "spc_game", "problem": PROBLEM, "config": {}}
        )
        assert refused.status_code == 422
        assert "reference_answer" in refused.text

        created = client.post(
            "/v1/runs",
            json={
                "pattern": "spc-game",
                "problem": PROBLEM,
                "config": {"reference_answer": "10", "solution": SOLUTION, "rollouts": 2},
            },
        )
        assert created.status_code == 202, created.text
        run = finished(client, created.json()["id"])
        assert (run["status"], run["answer"], run["stop_reason"]) == (
            "succeeded",
            "critic_detected",
            "scored",
        )
        keys = {t["key"] for t in client.get(f"/v1/runs/{run['id']}/turns").json()}
        assert {"sneaky", "rollout/sneaky/1", "critic/sneaky", "critic/original"} <= keys


def test_a_search_through_the_api(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url) as client:
        created = client.post(
            "/v1/runs",
            json={
                "pattern": "spc-search",
                "problem": PROBLEM,
                "config": {"trajectories": 2, "max_retries": 1},
            },
        )
        assert created.status_code == 202, created.text
        run = finished(client, created.json()["id"])
        # The critic rejects every step: each trajectory's first sample (\boxed{10}) is
        # resampled once, and the second (\boxed{12}), rejected too, is kept as the last.
        assert run["status"] == "succeeded" and run["answer"] == "12"
        turns = client.get(f"/v1/runs/{run['id']}/turns").json()
        assert len([t for t in turns if t["role"] == "solver"]) == 4
        assert {t["key"] for t in turns if t["role"] == "critic"} == {
            f"t{trajectory}/s0/r{retry}/critic" for trajectory in (0, 1) for retry in (0, 1)
        }
