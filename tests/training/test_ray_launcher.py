"""A training job as a Ray Job on a real (local, one-CPU) Ray cluster: launched twice, it
trains once; a job that dies before the training can record its end fails its run (and the
campaign waiting on it) with the Ray job named, while a job still running is left alone."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.model_map import ModelRouter
from store import campaigns as repo
from store import model_versions
from store.runs import Store
from tests.conftest import run_cli
from tests.training.test_campaigns import spc_config, spc_world
from training import jobs
from training.campaigns import CampaignEnv, create_campaign, drive
from training.config import SFTConfig

pytestmark = pytest.mark.local_model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # tests send nothing off the machine
    # address="local": a cluster of our own, never one another process started on this machine
    context = ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=True,
        dashboard_port=free_port(),
        log_to_driver=False,
    )
    yield f"http://{context.dashboard_url}"
    ray.shutdown()


async def test_a_ray_job_trains_once_and_registers_the_version(
    ray_address: str, store: Store, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / "home"))
    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": chat}) + "\n")
    config = SFTConfig(data=data, max_steps=1, batch_size=1, lora_r=4, threads=1)
    submitted = await jobs.submit_training(store, "sft", config)
    run = submitted.run
    options = jobs.LaunchOptions(launcher="ray", ray_address=ray_address, ray_python=sys.executable)

    first = await jobs.launch_ray(store, run, database_url=sqlite_url, options=options)
    again = await jobs.launch_ray(store, run, database_url=sqlite_url, options=options)
    assert first == again == f"thinktank-train-{run.id}-1"  # a retried launch submits nothing
    assert (await model_versions.get_training_run(store, run.id)).launcher == "ray"

    log = io.StringIO()
    assert jobs.wait_ray(options, first, out=log) == 0, log.getvalue()
    assert "registered model version policy-sft-v1" in log.getvalue()
    finished = await model_versions.get_training_run(store, run.id)
    assert finished.status == "succeeded"
    version = await model_versions.get_model_version(store, "policy-sft-v1")
    assert version.training_run_id == run.id
    assert (Path(version.adapter_path) / "adapter_config.json").is_file()


async def submit(store: Store, tmp_path: Path) -> model_versions.TrainingRun:
    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": chat}) + "\n")
    config = SFTConfig(data=data, max_steps=1, batch_size=1, lora_r=4, threads=1)
    return (await jobs.submit_training(store, "sft", config)).run


def wait_until(ray_address: str, submission: str, done: Any, timeout: float = 120) -> str:
    """The Ray job's status once ``done(status)`` holds."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_address)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = str(client.get_job_status(submission).value)
        if done(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"Ray job {submission} is still {status}")


def ended(status: str) -> bool:
    return status in jobs.RAY_EXIT_CODES


async def test_a_ray_job_that_dies_at_start_shows_its_run_failed_with_the_job_named(
    ray_address: str, store: Store, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("THINKTANK_HOME", str(home))
    run = await submit(store, tmp_path)
    # an interpreter that exits 1 at once: the job never reaches the store to record its end
    dies = shutil.which("false")
    assert dies is not None
    options = jobs.LaunchOptions(launcher="ray", ray_address=ray_address, ray_python=dies)
    submission = await jobs.launch_ray(store, run, database_url=sqlite_url, options=options)
    assert wait_until(ray_address, submission, ended) == "FAILED"
    assert (await model_versions.get_training_run(store, run.id)).status == "queued"  # as it died

    env = {**os.environ, "THINKTANK_HOME": str(home), "THINKTANK_DATABASE_URL": sqlite_url}
    shown = run_cli(env, "train", "show", run.id, "--json", "--ray-address", ray_address)
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)
    assert row["status"] == "failed"
    assert row["error"] == (
        f"the Ray job thinktank-train-{run.id}-1 ended FAILED (exit code 1) before the "
        "training recorded its end"
    )
    assert (await model_versions.get_training_run(store, run.id)).status == "failed"


async def test_a_running_ray_job_is_left_alone_and_a_stopped_one_interrupts_its_run(
    ray_address: str, store: Store, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.job_submission import JobSubmissionClient

    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / "home"))
    run = await submit(store, tmp_path)
    sleeper = tmp_path / "sleeper"
    sleeper.write_text("#!/bin/sh\nexec sleep 120\n")  # runs, never touches the store
    sleeper.chmod(0o755)
    options = jobs.LaunchOptions(launcher="ray", ray_address=ray_address, ray_python=str(sleeper))
    submission = await jobs.launch_ray(store, run, database_url=sqlite_url, options=options)
    assert wait_until(ray_address, submission, lambda status: status != "PENDING") == "RUNNING"

    launched = await model_versions.get_training_run(store, run.id)
    assert (launched.launcher, launched.host) == ("ray", f"ray:{submission}")
    still = await jobs.refresh_status(store, launched, options)
    assert (still.status, still.error) == ("queued", None)

    JobSubmissionClient(ray_address).stop_job(submission)
    assert wait_until(ray_address, submission, ended) == "STOPPED"
    stopped = await jobs.refresh_status(store, launched, options)
    assert stopped.status == "interrupted"
    assert stopped.error is not None
    assert stopped.error.startswith(f"the Ray job {submission} ended STOPPED")


async def test_an_unreachable_job_server_leaves_a_ray_run_and_a_forgetful_one_fails_it(
    ray_address: str,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # it would override the address given
    run = await submit(store, tmp_path)
    # launched on a cluster that has since been restarted, which forgot its jobs
    await model_versions.record_launch(
        store, run.id, pid=None, host=f"ray:thinktank-train-{run.id}-1", launcher="ray"
    )
    run = await model_versions.get_training_run(store, run.id)

    away = jobs.LaunchOptions(launcher="ray", ray_address=f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING, logger="training.jobs"):
        kept = await jobs.refresh_status(store, run, away)
    assert (kept.status, kept.error) == ("queued", None)
    assert f"cannot ask the Ray job server at {away.ray_address}" in caplog.text

    forgetful = jobs.LaunchOptions(launcher="ray", ray_address=ray_address)
    failed = await jobs.refresh_status(store, run, forgetful)
    assert failed.status == "failed"
    assert failed.error == (
        f"the Ray job server at {ray_address} knows no Ray job of this training run "
        "(a restarted cluster forgets its jobs)"
    )


async def test_a_campaign_whose_ray_training_dies_retries_once_then_fails_with_the_reason(
    ray_address: str, store: Store, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / "home"))
    launcher = {"launcher": "ray", "ray_address": ray_address, "ray_python": shutil.which("false")}
    config = spc_config(tmp_path, rounds=1, baseline=False, launcher=launcher)
    # one game of two fools the critic: its rewards differ, so it has a signal to train on
    env = CampaignEnv(store, ModelRouter.single(spc_world(fooled_every=2)), sqlite_url, poll_s=0.2)
    campaign = await create_campaign(store, config, name="dies", driver="embedded")
    assert campaign.driver_token is not None

    # before Ray runs were refreshed this waited forever on a run marked queued
    done = await asyncio.wait_for(drive(env, campaign.id, campaign.driver_token), 300)

    row = await repo.get_round(store, campaign.id, 1)
    critic = row.training_runs["critic"]
    assert critic["attempts"] == 2
    assert (done.status, done.step) == ("failed", "train")
    assert done.error == (
        f"round 1: training critic failed 2 times: the Ray job thinktank-train-{critic['id']}-2 "
        "ended FAILED (exit code 1) before the training recorded its end; "
        "`thinktank campaign resume dies` tries again"
    )
