"""Model versions through the API: what training registered, read by any client with a key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from store import api_keys, model_versions
from store.db import create_engine, migrate
from store.runs import Store
from tests.api.conftest import LiveServer, scripted_settings

T = TypeVar("T")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # adapter paths are under the data directory: keep them in this test's folder
    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


async def register_two(store: Store) -> None:
    """An SFT policy and an RL critic trained from it, registered as training does."""
    run, _ = await model_versions.create_training_run(
        store, kind="sft", config={}, model_name=None, name_prefix="policy-sft"
    )
    await model_versions.register_model_version(
        store,
        name=run.model_name,
        kind="sft",
        role="policy",
        base_model="smollm2",
        adapter_path=model_versions.adapter_dir(run.model_name),
        dataset_hash="ab" * 32,
        metrics={"eval_loss": 1.5, "eval_loss_base": 2.5},
        config={"lora_r": 8},
        training_run_id=run.id,
    )
    await model_versions.register_model_version(
        store,
        name="critic-rl-v1",
        kind="rl",
        role="critic",
        base_model="smollm2",
        adapter_path=model_versions.adapter_dir("critic-rl-v1"),
        dataset_hash="cd" * 32,
        metrics={"mean_reward": 0.75},
        config={},
        parent=run.model_name,
    )


def on_database(database_url: str, work: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(database_url)
        try:
            await migrate(engine)
            return await work(Store(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


@pytest.fixture
def api_with_versions(tmp_path: Path) -> Iterator[LiveServer]:
    settings = scripted_settings(tmp_path)
    on_database(settings.database_url, register_two)
    with LiveServer(settings) as server:
        yield server


def test_versions_are_listed_newest_first_and_filtered_by_role_and_kind(
    api_with_versions: LiveServer,
) -> None:
    with httpx.Client(base_url=api_with_versions.url) as client:
        listed = client.get("/v1/model-versions")
        assert listed.status_code == 200, listed.text
        items = listed.json()["items"]
        assert [v["name"] for v in items] == ["critic-rl-v1", "policy-sft-v1"]
        critic = items[0]
        assert (critic["role"], critic["kind"], critic["parent"]) == (
            "critic",
            "rl",
            "policy-sft-v1",
        )
        assert critic["metrics"] == {"mean_reward": 0.75}

        by_role = client.get("/v1/model-versions", params={"role": "policy"}).json()["items"]
        assert [v["name"] for v in by_role] == ["policy-sft-v1"]
        by_kind = client.get("/v1/model-versions", params={"kind": "rl"}).json()["items"]
        assert [v["name"] for v in by_kind] == ["critic-rl-v1"]
        assert client.get("/v1/model-versions", params={"kind": "dpo"}).json()["items"] == []
        one = client.get("/v1/model-versions", params={"limit": 1}).json()["items"]
        assert [v["name"] for v in one] == ["critic-rl-v1"]
        assert client.get("/v1/model-versions", params={"limit": 0}).status_code == 422


def test_one_version_shows_every_field_and_an_unknown_name_is_a_404(
    api_with_versions: LiveServer, home: Path
) -> None:
    with httpx.Client(base_url=api_with_versions.url) as client:
        version = client.get("/v1/model-versions/policy-sft-v1")
        assert version.status_code == 200, version.text
        body = version.json()
        run_id = body.pop("training_run_id")
        assert isinstance(run_id, str) and run_id
        assert Path(body.pop("adapter_path")) == home / "models" / "adapters" / "policy-sft-v1"
        assert body.pop("created_at")
        assert body == {
            "name": "policy-sft-v1",
            "role": "policy",
            "kind": "sft",
            "base_model": "smollm2",
            "dataset_hash": "ab" * 32,
            "metrics": {"eval_loss": 1.5, "eval_loss_base": 2.5},
            "parent": None,
        }

        missing = client.get("/v1/model-versions/policy-sft-v9")
        assert missing.status_code == 404
        assert "no model version named 'policy-sft-v9'" in missing.json()["detail"]


def test_with_keys_on_any_valid_key_reads_every_version(tmp_path: Path) -> None:
    settings = scripted_settings(tmp_path, auth="on")

    async def prepare(store: Store) -> tuple[str, str]:
        await register_two(store)
        _, first = await api_keys.create_key(store, "first")
        _, second = await api_keys.create_key(store, "second")
        return first, second

    first, second = on_database(settings.database_url, prepare)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as client:
        refused = client.get("/v1/model-versions")
        assert refused.status_code == 401
        for key in (first, second):
            listed = client.get("/v1/model-versions", headers={"Authorization": f"Bearer {key}"})
            assert listed.status_code == 200, listed.text
            assert len(listed.json()["items"]) == 2
