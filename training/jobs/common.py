"""What every part of a training job shares: its options, its configs, its errors, its end."""

from __future__ import annotations

import logging
import signal
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from store import model_versions
from store.tables.training import TrainingRun
from training.config import RLConfig, SFTConfig, TrainConfig

log = logging.getLogger(__name__)


T = TypeVar("T")
Kind = Literal["sft", "rl"]
CONFIGS: dict[str, type[TrainConfig]] = {"sft": SFTConfig, "rl": RLConfig}
PROGRESS_EVERY_S = 1.0
EXIT_INTERRUPTED = 130

Action = Literal["start", "resume", "running", "done", "stopped"]


class JobConflict(Exception):
    """The asked-for training cannot start as asked; the message says what to do instead."""


class LaunchOptions(BaseModel):
    launcher: Literal["subprocess", "torchrun", "ray"] = Field(
        "subprocess",
        description="one process here, torchrun with --nproc-per-node processes here, or a "
        "Ray Job on a Ray cluster",
    )
    nproc_per_node: int = Field(1, ge=1, description="processes (GPUs) for torchrun")
    ray_address: str | None = Field(
        None, description="the Ray cluster's job server (http://HOST:8265); default $RAY_ADDRESS"
    )
    gpus: float = Field(0.0, ge=0, description="GPUs the Ray job asks the cluster for")
    ray_python: str = Field("python", description="the interpreter on the Ray cluster's nodes")


def config_for(kind: str, options: dict[str, Any]) -> TrainConfig:
    """The trainer config of ``kind`` from flags or a stored run (pydantic errors propagate)."""
    if kind not in CONFIGS:
        raise ValueError(f"unknown training kind {kind!r} (sft or rl)")
    return CONFIGS[kind].model_validate(options)


async def settle(
    store: Any, run_id: str, exit_code: int, *, error: str | None = None
) -> TrainingRun:
    """The run's final state once its process has ended; a job that died before it could
    record its end (killed, or failed while starting) is marked here, with ``error`` as the
    reason when the caller knows more than the exit status."""
    run = await model_versions.get_training_run(store, run_id)
    if run.status in ("queued", "running"):
        stopped = exit_code in (EXIT_INTERRUPTED, -signal.SIGINT, -signal.SIGTERM)
        await model_versions.finish_training_run(
            store,
            run_id,
            "interrupted" if stopped else "failed",
            error=error or f"the training process exited with status {exit_code}",
        )
        run = await model_versions.get_training_run(store, run_id)
    return run
