"""Submitting a training: its key, its data check, its base, and what to do with a stored run."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.backends.local.catalog import CATALOG
from store import model_versions
from store.tables.training import TrainingRun
from training.config import DEFAULT_BASE, TrainConfig
from training.datasets import RLExample, SFTExample, dataset_hash, read_jsonl
from training.jobs.common import Action, JobConflict, LaunchOptions
from training.jobs.local import launch, pid_alive, wait_attached
from training.jobs.ray_jobs import launch_ray, refresh_ray, wait_ray

log = logging.getLogger(__name__)


@dataclass
class Submission:
    run: TrainingRun
    action: Action


def _data_files(config: TrainConfig) -> dict[str, Path]:
    files = {"data": config.data}
    if config.eval_data is not None:
        files["eval_data"] = config.eval_data
    sft_data = getattr(config, "sft_data", None)
    if sft_data is not None:
        files["sft_data"] = sft_data
    return files


def check_data(kind: str, config: TrainConfig) -> None:
    """Read every dataset the job will read, so bad data fail here, not minutes into a job."""
    for field, path in _data_files(config).items():
        record = SFTExample if field in ("sft_data",) or kind == "sft" else RLExample
        read_jsonl(path, record)


def idempotency_key(kind: str, config: TrainConfig) -> str:
    """The same kind, settings and data contents give the same key: the same training."""
    hashes = {field: dataset_hash(path) for field, path in _data_files(config).items()}
    canonical = json.dumps(
        {"kind": kind, "config": config.model_dump(mode="json"), "data": hashes},
        sort_keys=True,
    )
    return f"train-{kind}-" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


async def resolve_base(store: Any, config: TrainConfig) -> TrainConfig:
    """A ``--base`` that names a registered model version becomes its base and its adapter."""
    base = config.base
    if base == DEFAULT_BASE or base in CATALOG:
        return config
    if (Path(base) / "config.json").is_file():
        # stored absolute: a version must still say where its base is when read elsewhere
        return config.model_copy(update={"base": str(Path(base).resolve())})
    try:
        version = await model_versions.get_model_version(store, base)
    except model_versions.ModelVersionNotFound:
        raise JobConflict(
            f"--base {base!r} is not {DEFAULT_BASE!r}, a base model ({', '.join(CATALOG)}), a "
            "transformers model directory (with config.json) or a registered model version "
            "(`thinktank models list`)"
        ) from None
    return config.model_copy(
        update={
            "base": version.base_model,
            "base_adapter": Path(version.adapter_path),
            "parent": version.name,
        }
    )


async def refresh_status(
    store: Any, run: TrainingRun, options: LaunchOptions | None = None
) -> TrainingRun:
    """The run, settled if it is still marked running (or launched) but its job has ended.

    A Ray run is judged by the Ray job server that ``options`` names (see
    :func:`refresh_ray`); without ``options`` the cluster it went to is unknown here (the
    store does not keep it, and asking another cluster would find no job and fail a live
    training), so it is taken at its word. A local run whose process on this machine is gone
    is ``interrupted``; processes on other machines are taken at their word (see heartbeat_at).
    """
    if run.status not in ("running", "queued"):
        return run
    if run.launcher == "ray" and options is not None:
        return await refresh_ray(store, run, options)
    if run.pid is None:
        return run
    if run.host != socket.gethostname() or pid_alive(run.pid):
        return run
    step = (run.progress or {}).get("step")
    where = f" after step {step}" if step is not None else ""
    await model_versions.finish_training_run(
        store,
        run.id,
        "interrupted",
        error=f"the training process (pid {run.pid}) ended without finishing{where}",
    )
    return await model_versions.get_training_run(store, run.id)


async def submit_training(
    store: Any,
    kind: str,
    config: TrainConfig,
    *,
    key: str | None = None,
    resume: bool | None = None,
    options: LaunchOptions | None = None,
) -> Submission:
    """Store the training run for ``config`` or find the one that has its key.

    ``resume``: True continues a stopped run and refuses when there is none; False never
    continues one (the caller says ``stopped``); None does whatever brings the training to an
    end (what a retried task wants). ``options``: the Ray cluster a found Ray run went to, asked
    whether its job still runs (:func:`refresh_status`). The data are read once here, so bad
    data fail at once.
    """
    check_data(kind, config)
    config = await resolve_base(store, config)
    config = config.model_copy(update={"dataset_hash": dataset_hash(config.data)})
    key = key or idempotency_key(kind, config)
    existing = await model_versions.find_training_run(store, key)
    if existing is None:
        if resume:
            raise JobConflict(
                "there is no earlier training run with these settings and data to resume "
                "(`thinktank train list` shows the runs; settings must match exactly)"
            )
        run, created = await model_versions.create_training_run(
            store,
            kind=kind,
            config=config.model_dump(mode="json"),
            model_name=config.name,
            name_prefix=f"{config.role}-{kind}",
            idempotency_key=key,
        )
        if created:
            return Submission(run, "start")
        existing = run  # another asker stored it a moment ago
    existing = await refresh_status(store, existing, options)
    if existing.status == "succeeded":
        return Submission(existing, "done")
    if existing.status in ("running", "queued") and existing.pid is not None:
        return Submission(existing, "running")
    if resume is False:
        return Submission(existing, "stopped")
    return Submission(existing, "resume")


async def launch_run(
    store: Any,
    run: TrainingRun,
    *,
    database_url: str,
    options: LaunchOptions,
    detach: bool,
    tied: bool = False,
) -> subprocess.Popen[bytes] | str:
    """Start the job of a submitted run where ``options`` say: a process here (attached to
    this terminal, or ``detach``-ed into a session of its own, ``tied`` to this process or
    not), or a Ray Job, whose id comes back. The one way the CLI, the API and campaigns start
    a training."""
    if options.launcher == "ray":
        return await launch_ray(store, run, database_url=database_url, options=options)
    return await launch(
        store, run, database_url=database_url, options=options, detach=detach, tied=tied
    )


def wait_run(job: subprocess.Popen[bytes] | str, options: LaunchOptions) -> int | None:
    """Follow an attached job to its end: its exit status, or None when the user stopped
    following a Ray job (which goes on: the cluster owns it)."""
    if isinstance(job, str):
        return wait_ray(options, job)
    return wait_attached(job)
