"""Training jobs: run a trainer in a process of its own, keyed so a repeat never trains twice.

Training never runs inside the process that asks for it (a CLI, a Celery worker, the API):
hours of GPU work do not fit a Celery prefork slot or its visibility timeout, and a crashed
trainer must not take a worker down. The asker stores a training run, launches the job and
tracks it through the store; the job records its progress there itself.

- :func:`submit_training` stores the run under an idempotency key (by default a hash of the
  kind, the settings and the data's contents), or finds the run that holds the key and says
  what to do with it: ``start``, ``resume``, ``running``, ``done`` or ``stopped``.
- :func:`launch` starts ``python -m training.jobs run RUN_ID`` here (or the same under
  ``torchrun --nproc-per-node N`` for several GPUs) with the run id as its only argument;
  :func:`launch_ray` submits that command as a Ray Job (``thinktank-train-<run id>-<attempt>``,
  never a second one while an attempt is pending or running). Relaunching the same run
  continues from its last checkpoint.
- :func:`refresh_status` notices a run whose job ended without recording its end: its process
  on this machine died, or (given the cluster's :class:`LaunchOptions`) its Ray job ended.

The job (:func:`run_job`) loads the run's config from the store, trains, publishes the adapter
under ``models/adapters/<name>/`` and registers the model version; SIGINT or SIGTERM makes it
checkpoint at the next step and end ``interrupted``.

A campaign's Celery task calls :func:`submit_training` with the training run id it owns as the
key, then :func:`launch` with ``detach=True`` or :func:`launch_ray`, and polls the store (or
Ray's job status) from a periodic task; the Celery task itself never trains.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from agents.backends.local.catalog import CATALOG
from store import model_versions
from store.db import create_engine, default_database_url
from store.runs import Store
from store.tables.training import ModelVersion, TrainingRun
from training.config import DEFAULT_BASE, RLConfig, SFTConfig, TrainConfig, TrainingError
from training.datasets import DatasetError, RLExample, SFTExample, dataset_hash, read_jsonl

log = logging.getLogger(__name__)

T = TypeVar("T")
Kind = Literal["sft", "rl"]
CONFIGS: dict[str, type[TrainConfig]] = {"sft": SFTConfig, "rl": RLConfig}
RECORDS: dict[str, type[BaseModel]] = {"sft": SFTExample, "rl": RLExample}
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


@dataclass
class Submission:
    run: TrainingRun
    action: Action


def config_for(kind: str, options: dict[str, Any]) -> TrainConfig:
    """The trainer config of ``kind`` from flags or a stored run (pydantic errors propagate)."""
    if kind not in CONFIGS:
        raise ValueError(f"unknown training kind {kind!r} (sft or rl)")
    return CONFIGS[kind].model_validate(options)


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie has exited; only its parent has not looked
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


async def refresh_status(
    store: Any, run: TrainingRun, options: LaunchOptions | None = None
) -> TrainingRun:
    """The run, settled if it is still marked running (or launched) but its job has ended.

    A Ray run is judged by the Ray job server that ``options`` names (see
    :func:`_refresh_ray`); without ``options`` the cluster it went to is unknown here (the
    store does not keep it, and asking another cluster would find no job and fail a live
    training), so it is taken at its word. A local run whose process on this machine is gone
    is ``interrupted``; processes on other machines are taken at their word (see heartbeat_at).
    """
    if run.status not in ("running", "queued"):
        return run
    if run.launcher == "ray" and options is not None:
        return await _refresh_ray(store, run, options)
    if run.pid is None:
        return run
    if run.host != socket.gethostname() or _pid_alive(run.pid):
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


def signal_local(run: TrainingRun) -> bool:
    """Ask the run's process on this machine to checkpoint and stop (SIGTERM); whether
    there was one to ask."""
    if run.pid is None or run.host != socket.gethostname() or not _pid_alive(run.pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(run.pid, signal.SIGTERM)
    return True


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


def job_command(run_id: str, options: LaunchOptions, python: str = sys.executable) -> list[str]:
    entry = ["-m", "training.jobs", "run", run_id]
    if options.nproc_per_node > 1 or options.launcher == "torchrun":
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={options.nproc_per_node}",
            *entry,
        ]
    return [python, *entry]


def log_path(run_id: str) -> Path:
    return model_versions.training_dir(run_id) / "train.log"


async def launch(
    store: Any,
    run: TrainingRun,
    *,
    database_url: str,
    options: LaunchOptions | None = None,
    detach: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the job for ``run``. Attached, it shares this terminal (its progress line shows,
    Ctrl-C reaches it); detached, it runs in a session of its own with its output in
    ``train.log`` of its work dir, and outlives the caller."""
    options = options or LaunchOptions()
    child_env = {**os.environ, **(env or {}), "THINKTANK_DATABASE_URL": database_url}
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    work = model_versions.training_dir(run.id)
    work.mkdir(parents=True, exist_ok=True)
    output: Any = None
    if detach:
        output = log_path(run.id).open("ab")
    try:
        process = subprocess.Popen(
            job_command(run.id, options),
            env=child_env,
            stdout=output,
            stderr=subprocess.STDOUT if detach else None,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )
    finally:
        if output is not None:
            output.close()
    await model_versions.record_launch(
        store, run.id, pid=process.pid, host=socket.gethostname(), launcher=options.launcher
    )
    return process


# --- Ray Jobs: the same entry point, run by a Ray cluster --------------------------------

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


async def _refresh_ray(store: Any, run: TrainingRun, options: LaunchOptions) -> TrainingRun:
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


def wait_attached(process: subprocess.Popen[bytes]) -> int:
    """Wait for an attached job to end. Ctrl-C reaches the job too, which checkpoints and
    stops by itself (a second Ctrl-C stops it at once), so this only keeps waiting."""
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


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


# --------------------------------------------------------------------------- the job process


class _StoreThread:
    """The async store on an event loop of its own, for a synchronous training process."""

    def __init__(self, database_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="training-store", daemon=True
        )
        self.thread.start()
        self.engine: Any = None
        self.store: Any = self.call(self._open(database_url))

    async def _open(self, database_url: str) -> Any:
        self.engine = create_engine(database_url)
        return Store(self.engine)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        async def shutdown() -> None:
            await self.store.close()
            await self.engine.dispose()

        with contextlib.suppress(Exception):
            self.call(shutdown(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class _ProgressToStore:
    """Hands progress to the store at most once a second (and always on a status change),
    without ever making a training step wait for the database."""

    def __init__(self, stores: _StoreThread, run_id: str) -> None:
        self.stores = stores
        self.run_id = run_id
        self.sent_at = 0.0
        self.status: str | None = None
        self.pending: Any = None

    def __call__(self, progress: dict[str, Any]) -> None:
        now = time.monotonic()
        if progress.get("status") == self.status and now - self.sent_at < PROGRESS_EVERY_S:
            return
        self.sent_at, self.status = now, progress.get("status")
        self.pending = asyncio.run_coroutine_threadsafe(
            model_versions.record_progress(self.stores.store, self.run_id, progress),
            self.stores.loop,
        )

    def flush(self) -> None:
        """Let the last write land before the final ones, which it must not overwrite."""
        if self.pending is not None:
            with contextlib.suppress(Exception):
                self.pending.result(timeout=60)


def _publish(config: TrainConfig, adapter: Path) -> Path:
    """Move the trained adapter to its versioned home. The name was reserved by this run, so
    a folder already there is this run's own from an attempt that died before registering."""
    target = model_versions.adapter_dir(config.name or "")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    shutil.move(str(adapter), str(target))
    return target


def _register(
    stores: _StoreThread, run: TrainingRun, config: TrainConfig, target: Path, metrics: dict
) -> ModelVersion:
    try:
        return stores.call(
            model_versions.register_model_version(
                stores.store,
                name=run.model_name,
                kind=run.kind,
                role=config.role,
                base_model=config.base,
                adapter_path=target,
                dataset_hash=config.dataset_hash or dataset_hash(config.data),
                metrics=metrics,
                config=config.model_dump(mode="json"),
                training_run_id=run.id,
                parent=config.parent,
            )
        )
    except model_versions.ModelVersionExists:
        existing = stores.call(model_versions.get_model_version(stores.store, run.model_name))
        if existing.training_run_id != run.id:
            raise
        return existing  # registered by an attempt that died right after


def run_job(run_id: str) -> int:
    """The job process: train the stored run, publish and register its model version.

    Its launcher names the database in ``THINKTANK_DATABASE_URL``; run by hand without it,
    the job reads the embedded store."""
    rank = int(os.environ.get("RANK", "0"))
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(
            f"\n[train] {signal.Signals(signum).name}: stopping after this step "
            "(again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stores = _StoreThread(os.environ.get("THINKTANK_DATABASE_URL") or default_database_url())
    try:
        run = stores.call(model_versions.get_training_run(stores.store, run_id))
        if run.status == "succeeded":
            print(f"[train] {run_id} already succeeded ({run.model_name})", file=sys.stderr)
            return 0
        if rank == 0 and run.status == "running" and run.pid != os.getpid():
            run = stores.call(refresh_status(stores.store, run))
            if run.status == "running":
                # a duplicate launch (a retried task): two trainers must never share a work dir
                print(
                    f"error: training run {run_id} is already running (pid {run.pid} on "
                    f"{run.host})",
                    file=sys.stderr,
                )
                return 2
        return _train(stores, run, rank, stop)
    except model_versions.TrainingRunNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:  # launched by hand against a database it cannot read
        reason = getattr(exc, "orig", None) or exc
        print(f"error: cannot read training run {run_id}: {reason}", file=sys.stderr)
        return 2
    finally:
        stores.close()


def _train(stores: _StoreThread, run: TrainingRun, rank: int, stop: threading.Event) -> int:
    main = rank == 0

    def finish(status: str, error: str | None = None) -> None:
        if main:
            stores.call(
                model_versions.finish_training_run(stores.store, run.id, status, error=error)
            )

    try:
        config = config_for(run.kind, run.config)
        if main:
            stores.call(
                model_versions.mark_training_started(
                    stores.store,
                    run.id,
                    pid=os.getpid(),
                    host=socket.gethostname(),
                    launcher=run.launcher or "subprocess",
                )
            )
        if run.kind == "sft":
            from training.sft import train_sft as trainer
        else:
            from training.rl import train_rl as trainer
        progress = _ProgressToStore(stores, run.id) if main else None
        result = trainer(  # type: ignore[operator]
            config, model_versions.training_dir(run.id), on_progress=progress, stop=stop
        )
        if progress is not None:
            progress.flush()
        if result.status == "interrupted":
            finish("interrupted", "stopped by a signal; --resume continues from its checkpoint")
            return EXIT_INTERRUPTED
        if main:
            assert result.adapter is not None
            target = _publish(config, result.adapter)
            metrics = {**result.metrics, "base_name": result.base_name}
            version = _register(stores, run, config, target, metrics)
            latest = stores.call(model_versions.get_training_run(stores.store, run.id)).progress
            stores.call(
                model_versions.update_training_run(
                    stores.store, run.id, progress={**(latest or {}), **_final(result)}
                )
            )
            finish("succeeded")
            print(
                f"[train] registered model version {version.name} (adapter {target})",
                file=sys.stderr,
                flush=True,
            )
        return 0
    except KeyboardInterrupt:
        finish(
            "interrupted", "stopped at once by a second signal; resumes from the last checkpoint"
        )
        return EXIT_INTERRUPTED
    except (TrainingError, DatasetError, model_versions.ModelVersionExists, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        finish("failed", str(exc))
        return 1
    except Exception as exc:
        traceback.print_exc()
        finish("failed", f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        from training.loop import close_distributed

        close_distributed()


def _final(result: Any) -> dict[str, Any]:
    steps = result.metrics.get("steps")
    return {"status": "succeeded", "step": steps, "total_steps": steps}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        print("usage: python -m training.jobs run TRAINING_RUN_ID", file=sys.stderr)
        return 2
    return run_job(args[1])


if __name__ == "__main__":
    sys.exit(main())
