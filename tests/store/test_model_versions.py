"""Model versions and training runs in the store, on SQLite and the real PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from store import model_versions
from store.runs import Store
from training import jobs
from training.config import SFTConfig


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def sft_data(path: Path, answer: str = "4") -> Path:
    chat = {
        "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": answer}]
    }
    path.write_text(json.dumps(chat) + "\n")
    return path


async def reserve(store: Store, name: str | None = None, key: str | None = None):
    run, _ = await model_versions.create_training_run(
        store, kind="sft", config={}, model_name=name, name_prefix="policy-sft", idempotency_key=key
    )
    return run


async def register(store: Store, name: str, run_id: str | None = None):
    return await model_versions.register_model_version(
        store,
        name=name,
        kind="sft",
        role="policy",
        base_model="smollm2",
        adapter_path=model_versions.adapter_dir(name),
        dataset_hash="ab" * 32,
        metrics={"eval_loss": 1.5, "eval_loss_base": 2.5},
        config={"lora_r": 8},
        training_run_id=run_id,
    )


async def test_versions_are_numbered_and_a_name_is_never_reused(any_store: Store) -> None:
    first = await reserve(any_store)
    second = await reserve(any_store)
    assert (first.model_name, second.model_name) == ("policy-sft-v1", "policy-sft-v2")
    assert first.config["name"] == "policy-sft-v1"

    with pytest.raises(model_versions.ModelVersionExists, match="names are never reused"):
        await reserve(any_store, name="policy-sft-v2")
    await register(any_store, "policy-sft-v1", first.id)
    with pytest.raises(model_versions.ModelVersionExists, match="already registered"):
        await register(any_store, "policy-sft-v1")

    custom = await reserve(any_store, name="critic-special")
    assert custom.model_name == "critic-special"
    assert (await reserve(any_store)).model_name == "policy-sft-v3"

    version = await model_versions.get_model_version(any_store, "policy-sft-v1")
    assert (version.training_run_id, version.metrics["eval_loss"]) == (first.id, 1.5)
    listed = await model_versions.list_model_versions(any_store)
    assert [v.name for v in listed] == ["policy-sft-v1"]
    assert await model_versions.list_model_versions(any_store, kind="rl") == []
    with pytest.raises(model_versions.ModelVersionNotFound, match="models list"):
        await model_versions.get_model_version(any_store, "policy-sft-v9")


async def test_a_left_over_adapter_folder_keeps_its_name(store: Store) -> None:
    (model_versions.adapters_dir() / "policy-sft-v1").mkdir(parents=True)
    assert (await reserve(store)).model_name == "policy-sft-v2"
    with pytest.raises(model_versions.ModelVersionExists):
        await reserve(store, name="policy-sft-v1")


async def test_bad_names_are_refused(store: Store) -> None:
    for name in ("../escape", "", "a b", "-leading"):
        with pytest.raises(ValueError, match="bad model version name"):
            await reserve(store, name=name)


async def test_the_same_key_finds_the_same_run(any_store: Store) -> None:
    run = await reserve(any_store, key="campaign-7-round-2")
    again, created = await model_versions.create_training_run(
        any_store,
        kind="sft",
        config={},
        model_name=None,
        name_prefix="policy-sft",
        idempotency_key="campaign-7-round-2",
    )
    assert (again.id, created) == (run.id, False)


async def test_submitting_the_same_training_says_what_became_of_it(
    store: Store, tmp_path: Path
) -> None:
    config = SFTConfig(data=sft_data(tmp_path / "a.jsonl"), max_steps=3)
    first = await jobs.submit_training(store, "sft", config, resume=False)
    assert first.action == "start"
    assert first.run.config["dataset_hash"] and first.run.config["max_steps"] == 3

    # it died: a process that has already exited, on this machine
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    await model_versions.mark_training_started(
        store, first.run.id, pid=gone.pid, host=socket.gethostname(), launcher="subprocess"
    )
    stopped = await jobs.submit_training(store, "sft", config, resume=False)
    assert (stopped.run.id, stopped.action) == (first.run.id, "stopped")
    assert stopped.run.status == "interrupted"
    assert f"pid {gone.pid}" in (stopped.run.error or "")
    assert (await jobs.submit_training(store, "sft", config, resume=True)).action == "resume"
    assert (await jobs.submit_training(store, "sft", config)).action == "resume"

    # alive: this very process
    await model_versions.mark_training_started(
        store, first.run.id, pid=os.getpid(), host=socket.gethostname(), launcher="subprocess"
    )
    assert (await jobs.submit_training(store, "sft", config)).action == "running"

    await model_versions.finish_training_run(store, first.run.id, "succeeded")
    assert (await jobs.submit_training(store, "sft", config, resume=False)).action == "done"

    # other data contents are another training, with the next version
    sft_data(tmp_path / "a.jsonl", answer="four")
    other = await jobs.submit_training(store, "sft", config, resume=False)
    assert (other.action, other.run.model_name) == ("start", "policy-sft-v2")
    with pytest.raises(jobs.JobConflict, match="no earlier training run"):
        await jobs.submit_training(store, "sft", config.model_copy(update={"seed": 5}), resume=True)


async def test_a_base_that_is_a_model_version_is_continued(store: Store, tmp_path: Path) -> None:
    run = await reserve(store)
    await register(store, run.model_name, run.id)
    config = SFTConfig(data=sft_data(tmp_path / "a.jsonl"), base="policy-sft-v1")
    submitted = await jobs.submit_training(store, "sft", config)
    stored = submitted.run.config
    assert (stored["base"], stored["parent"]) == ("smollm2", "policy-sft-v1")
    assert stored["base_adapter"] == str(model_versions.adapter_dir("policy-sft-v1"))
    with pytest.raises(jobs.JobConflict, match="not 'smollm2'"):
        await jobs.submit_training(store, "sft", config.model_copy(update={"base": "nope-v1"}))


async def test_bad_data_fail_before_anything_is_stored(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": []}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        await jobs.submit_training(store, "sft", SFTConfig(data=path))
    assert await model_versions.list_training_runs(store) == []
