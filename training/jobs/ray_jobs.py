"""Training jobs as Ray Jobs: the same entry point, run by a Ray cluster."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
import time
from typing import Any

from store import model_versions
from store.tables.training import TrainingRun
from training.jobs.common import EXIT_INTERRUPTED, JobConflict, LaunchOptions, settle
from training.jobs.local import job_command

log = logging.getLogger(__name__)


RAY_JOB_PREFIX = "thinktank-train-"
RAY_EXIT_CODES = {"SUCCEEDED": 0, "STOPPED": EXIT_INTERRUPTED, "FAILED": 1}
RAY_STATUS_TIMEOUT_S = 30.0
"""How long a status refresh waits for the Ray job server (its client sets no timeout)."""


def _ray_where(options: LaunchOptions) -> str:
    return options.ray_address or os.environ.get("RAY_ADDRESS") or "the local Ray cluster"


def _ray_client(options: LaunchOptions) -> Any:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise JobConflict("--launcher ray needs ray (pip install 'thinktank[serve]')") from None
    try:
        return JobSubmissionClient(options.ray_address)
    except Exception as exc:  # ray raises ConnectionError, ValueError, RuntimeError alike
        raise JobConflict(
            f"cannot reach the Ray job server at {_ray_where(options)}: {exc}"
        ) from None


def ray_jobs_of(client: Any, run_id: str) -> list[Any]:
    """The Ray jobs launched for a training run, first attempt first."""
    prefix = f"{RAY_JOB_PREFIX}{run_id}-"
    jobs = [job for job in client.list_jobs() if (job.submission_id or "").startswith(prefix)]
    return sorted(jobs, key=lambda job: int(job.submission_id.rsplit("-", 1)[1]))


async def launch_ray(
    store: Any,
    run: TrainingRun,
    *,
    database_url: str,
    options: LaunchOptions,
    env: dict[str, str] | None = None,
) -> str:
    """Submit the job for ``run`` to a Ray cluster; returns its submission id.

    Idempotent: while an attempt of this run is pending or running on the cluster, that one's
    id comes back and nothing is submitted. Attempts are ``thinktank-train-<run id>-<n>``, so a
    resumed run is a new Ray job that continues from the same checkpoints (the cluster's nodes
    must share the data directory, ``THINKTANK_HOME``, and reach the database).
    """
    client = _ray_client(options)
    attempts = ray_jobs_of(client, run.id)
    live = [job for job in attempts if not job.status.is_terminal()]
    if live:
        return str(live[-1].submission_id)
    submission = f"{RAY_JOB_PREFIX}{run.id}-{len(attempts) + 1}"
    env_vars = {k: v for k, v in os.environ.items() if k.startswith("THINKTANK_")}
    env_vars.update(env or {})
    env_vars.update({"THINKTANK_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"})
    try:
        client.submit_job(
            entrypoint=shlex.join(job_command(run.id, options, python=options.ray_python)),
            submission_id=submission,
            runtime_env={"env_vars": env_vars},
            entrypoint_num_gpus=options.gpus or None,
            metadata={"training_run_id": run.id, "model_name": run.model_name},
        )
    except RuntimeError:
        if client.get_job_info(submission) is None:
            raise
        # another launcher submitted the same attempt a moment ago; that job is this training
    await model_versions.record_launch(
        store, run.id, pid=None, host=f"ray:{submission}", launcher="ray"
    )
    return submission


async def refresh_ray(store: Any, run: TrainingRun, options: LaunchOptions) -> TrainingRun:
    """Settle a Ray run whose newest Ray job has ended (or that the cluster does not know)
    while the store still says it is queued or running: the job died before the training
    could record its end (its entrypoint failed to start, its node died, it was stopped).
    A job server that cannot be reached leaves the run as it is: the cluster may be away for
    a moment, and the caller (a campaign's poll, ``train show``) must go on."""

    def newest_attempts() -> list[Any]:
        return ray_jobs_of(_ray_client(options), run.id)

    try:
        attempts = await asyncio.wait_for(
            asyncio.to_thread(newest_attempts), timeout=RAY_STATUS_TIMEOUT_S
        )
    except Exception as exc:  # JobConflict, ConnectionError, RuntimeError, TimeoutError alike
        log.warning(
            "cannot ask the Ray job server at %s about training run %s; it stays %s: %s",
            _ray_where(options),
            run.id,
            run.status,
            str(exc) or type(exc).__name__,
        )
        return run
    newest = attempts[-1] if attempts else None
    if newest is not None and not newest.status.is_terminal():
        return run
    # read after Ray answered: a job that recorded its end did so before it ended
    fresh = await model_versions.get_training_run(store, run.id)
    if fresh.status not in ("queued", "running"):
        return fresh
    if newest is None:
        return await settle(
            store,
            run.id,
            RAY_EXIT_CODES["FAILED"],
            error=f"the Ray job server at {_ray_where(options)} knows no Ray job of this "
            "training run (a restarted cluster forgets its jobs)",
        )
    submission = str(newest.submission_id)
    if (fresh.host or "").startswith("ray:") and fresh.host != f"ray:{submission}":
        return fresh  # launched again since the listing: that attempt is not judged yet
    status = str(newest.status.value)
    exit_code = getattr(newest, "driver_exit_code", None)
    how = f"{status} (exit code {exit_code})" if exit_code is not None else status
    return await settle(
        store,
        run.id,
        RAY_EXIT_CODES.get(status, 1),
        error=f"the Ray job {submission} ended {how} before the training recorded its end",
    )


def wait_ray(options: LaunchOptions, submission: str, out: Any = None) -> int | None:
    """Follow a Ray job's log until it ends; its exit status, or None on Ctrl-C (the job goes
    on: Ray owns it now)."""
    out = out or sys.stderr
    client = _ray_client(options)
    shown = 0
    try:
        while True:
            status = client.get_job_status(submission)
            logs = client.get_job_logs(submission)
            out.write(logs[shown:])
            out.flush()
            shown = len(logs)
            if status.is_terminal():
                return RAY_EXIT_CODES.get(str(status.value), 1)
            time.sleep(1.0)
    except KeyboardInterrupt:
        return None
