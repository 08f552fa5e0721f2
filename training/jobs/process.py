"""The job process: ``python -m training.jobs run RUN_ID`` trains a stored run to its end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from store import model_versions
from store.db import create_engine, default_database_url
from store.runs import Store
from store.tables.training import ModelVersion, TrainingRun
from training.config import TrainConfig, TrainingError
from training.datasets import DatasetError, dataset_hash
from training.jobs.common import EXIT_INTERRUPTED, PROGRESS_EVERY_S, T, config_for
from training.jobs.local import die_with_parent
from training.jobs.submission import refresh_status

log = logging.getLogger(__name__)


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
    die_with_parent()  # after the handlers: the launcher's death stops it like a SIGTERM
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
