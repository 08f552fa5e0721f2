"""Ray Serve for real on this machine's CPUs: the applications deployed from settings, a
discussion through a DeploymentHandle, two replicas sharing the work, the API as an ingress,
and the local model serving a LoRA adapter made by a tiny PEFT run.

One Ray instance serves the whole module (starting one costs ~15 s); each test deploys the
applications it needs. The plumbing tests run the scripted engine inside the deployments; one
test runs the real SmolLM2 model with an adapter.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray import serve

from agents.backends.local.config import LocalModelConfig
from agents.backends.ray_handle import RayHandleBackend
from agents.backends.scripted import ScriptedModelConfig
from agents.backends.serving_config import DeploymentSpec, RayModelConfig
from agents.model import ChatMessage, ModelError, ModelRequest, SamplingParams
from agents.model_map import ModelMap
from services.serving.app import build_application, plan_apps
from services.settings import Settings
from tests.conftest import RunHarness
from tests.serving.lora import train_tiny_adapter

PROBLEM = "What is 6 times 7?"
CEO = (
    "### Decision: <Stop>\n### Recruit Number: 2\n"
    "### Direction: check the multiplication\n### Maximum Tokens: 64"
)
SCRIPT = {
    "ceo": [CEO],
    "recruiter": ["1. A mathematician.\n2. A teacher."],
    "solver": ["6 times 7 is 42. \\boxed{42}"],
    "critic": ["The answer matches mine. [Agree]"],
    "evaluator": ["### Correctness: 1\n### Advice: none\n### Recruiting Suggestion: none"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def proxy_url() -> Iterator[str]:
    """A Ray instance with Serve's HTTP proxy on a free loopback port, for the module."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # tests send nothing off the machine
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="tt-tests")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def scripted(replicas: int = 2, latency_s: float = 0.3, **fields: Any) -> RayModelConfig:
    """The scripted engine in a deployment. Tests share one spec (apart from the replica
    count), so a test that finds it deployed already does not wait for new replicas."""
    return RayModelConfig(
        served_name="scripted",
        engine=ScriptedModelConfig(replies=SCRIPT, latency_s=latency_s),
        deployment=DeploymentSpec(num_replicas=replicas, num_cpus=0),
        **fields,
    )


_deployed: dict[str, str] = {}
"""What each model application runs now. serve.run restarts every replica even when nothing
changed (Serve versions imperatively deployed code anew), so tests skip a deploy that would
change nothing."""


def deploy_models(settings: Settings) -> None:
    """Deploy the model applications of ``settings`` (not the API)."""
    for app in plan_apps(settings)[:-1]:
        config = repr([served.spec for served in app.models])
        if _deployed.get(app.name) == config:
            continue
        serve.run(build_application(app, settings), name=app.name, route_prefix=app.route_prefix)
        _deployed[app.name] = config


def solver_request(text: str = PROBLEM) -> ModelRequest:
    return ModelRequest(
        messages=[ChatMessage(role="user", content=text)],
        params=SamplingParams(max_tokens=32),
        tags={"role": "solver"},
    )


async def test_a_discussion_runs_through_a_deployment_handle(
    proxy_url: str, harness: RunHarness
) -> None:
    spec = scripted(replicas=1)
    deploy_models(Settings(models=ModelMap(default=spec)))
    backend = RayHandleBackend(spec)

    run_id, outcome = await harness.run(backend, "discussion", PROBLEM, max_rounds=2)

    assert outcome["status"] == "succeeded"
    assert outcome["answer"] == "42"
    turns = await harness.store.turns(run_id)
    assert {turn.node for turn in turns} == {"ceo", "recruit", "solve", "critique", "evaluate"}
    assert all(turn.model == "scripted" for turn in turns)
    assert sum(backend.replicas.values()) == len(turns)  # every turn crossed the handle


async def test_a_deployment_scaled_to_two_replicas_spreads_the_calls(proxy_url: str) -> None:
    deploy_models(Settings(models=ModelMap(default=scripted(replicas=1))))
    spec = scripted(replicas=2)
    deploy_models(Settings(models=ModelMap(default=spec)))  # the running deployment scales
    backend = RayHandleBackend(spec)

    replies = await asyncio.gather(*[backend.generate(solver_request()) for _ in range(16)])

    assert all(reply.completions[0].text.endswith("\\boxed{42}") for reply in replies)
    assert len(backend.replicas) == 2, backend.replicas  # both replicas answered
    status = serve.status().applications["models"].deployments["Model:scripted"]
    assert status.replica_states.get("RUNNING") == 2


async def test_pieces_stream_through_the_handle(proxy_url: str) -> None:
    spec = scripted()
    deploy_models(Settings(models=ModelMap(default=spec)))
    backend = RayHandleBackend(spec)
    pieces: list[str] = []

    reply = await backend.generate(solver_request(), on_text=pieces.append)

    assert len(pieces) > 3
    assert "".join(pieces) == reply.completions[0].text == SCRIPT["solver"][0]


async def test_a_halted_call_ends_early_with_the_text_so_far(proxy_url: str) -> None:
    spec = scripted()
    deploy_models(Settings(models=ModelMap(default=spec)))
    backend = RayHandleBackend(spec)
    halt = asyncio.Event()
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        halt.set()  # a detector that has seen enough

    reply = await backend.generate(solver_request(), on_text=on_text, halt=halt)

    (completion,) = reply.completions
    assert completion.finish_reason == "cancelled"
    assert completion.text == "".join(pieces)
    assert 0 < len(completion.text) < len(SCRIPT["solver"][0])
    assert completion.completion_tokens == len(pieces)


async def test_the_api_runs_as_an_ingress_and_models_answer_on_openai_routes(
    proxy_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'thinktank.db'}",
        models=ModelMap(default=scripted()),
    )
    deploy_models(settings)
    (api,) = [app for app in plan_apps(settings) if app.name == "thinktank"]
    serve.run(build_application(api, settings), name=api.name, route_prefix=api.route_prefix)

    async with httpx.AsyncClient(base_url=proxy_url, timeout=30) as client:
        created = await client.post(
            "/v1/runs", json={"pattern": "single", "problem": PROBLEM, "config": {}}
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        for _ in range(100):
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            if run["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.2)
        assert run["status"] == "succeeded", run
        assert run["answer"] == "42"
        turns = (await client.get(f"/v1/runs/{run_id}/turns")).json()
        assert [turn["model"] for turn in turns] == ["scripted"]

        chat = await client.post(
            "/models/v1/chat/completions",
            json={"model": "scripted", "messages": [{"role": "user", "content": "6*7?"}]},
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == "The answer is \\boxed{0}."
        unknown = await client.post(
            "/models/v1/chat/completions",
            json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert unknown.status_code == 404
        assert "scripted" in unknown.json()["error"]["message"]
    serve.delete("thinktank")


@pytest.mark.local_model
async def test_the_local_model_serves_a_new_adapter_without_a_restart(
    proxy_url: str, harness: RunHarness, tmp_path: Path
) -> None:
    adapters = tmp_path / "adapters"
    engine = LocalModelConfig(
        model="smollm2-135m", adapters_dir=adapters, threads=1, max_batch_size=4
    )
    spec = RayModelConfig(served_name="smol", engine=engine)
    deploy_models(Settings(models=ModelMap(default=spec)))
    base = RayHandleBackend(spec)
    # Training publishes a new version while the deployment serves the base model.
    training = asyncio.to_thread(
        train_tiny_adapter, adapters / "zebra-v1", problem=PROBLEM, reply="Zebra zebra zebra."
    )
    base_call = harness.run(base, "single", PROBLEM, max_tokens=8, temperature=0)
    (base_run, before), _ = await asyncio.gather(base_call, training)
    tuned = RayHandleBackend(spec.model_copy(update={"adapter": "zebra-v1"}))
    run_id, after = await harness.run(tuned, "single", PROBLEM, max_tokens=8, temperature=0)

    assert before["status"] == after["status"] == "succeeded"
    (turn,) = await harness.store.turns(run_id)
    assert turn.adapter == "zebra-v1"
    assert turn.model == "smollm2-135m"  # the base model that answered
    assert "zebra" in turn.completion.lower()
    (base_turn,) = await harness.store.turns(base_run)
    assert base_turn.adapter is None
    assert "zebra" not in base_turn.completion.lower()
    missing = solver_request().model_copy(update={"adapter": "zebra-v9"})
    with pytest.raises(ModelError, match="no LoRA adapter 'zebra-v9'") as refused:
        await base.generate(missing)
    assert refused.value.retryable is False  # the engine's verdict crosses the handle
    assert await base.handle().info.remote() == {
        "replica": next(iter(tuned.replicas)),
        "served_name": "smol",
        "served": 2,
        "adapters": ["zebra-v1"],
    }
