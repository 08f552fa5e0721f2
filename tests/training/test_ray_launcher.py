"""A training job as a Ray Job on a real (local, one-CPU) Ray cluster, launched twice."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.store.repository import Store
from training import jobs, registry
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
    assert (await registry.get_training_run(store, run.id)).launcher == "ray"

    log = io.StringIO()
    assert jobs.wait_ray(options, first, out=log) == 0, log.getvalue()
    assert "registered model version policy-sft-v1" in log.getvalue()
    finished = await registry.get_training_run(store, run.id)
    assert finished.status == "succeeded"
    version = await registry.get_model_version(store, "policy-sft-v1")
    assert version.training_run_id == run.id
    assert (Path(version.adapter_path) / "adapter_config.json").is_file()
