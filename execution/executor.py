"""Where runs execute: in this process (embedded), or on Celery workers through Redis."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from agents.model_map import ModelRouter
from execution.cancelling import cancel_and_wait
from execution.celery_app import EXECUTE_RUN_TASK, RUNS_QUEUE, make_celery
from execution.runner import RunInterrupted, execute_run
from store.runs import Store

log = logging.getLogger(__name__)


class Executor(Protocol):
    async def enqueue(self, run_id: str) -> None: ...

    async def close(self) -> None: ...


class InProcessExecutor:
    """Runs as asyncio tasks of the API process, at most ``max_concurrent`` at once.

    On start it picks up runs left queued or running by a previous process, which resume
    from their checkpoints.
    """

    def __init__(
        self,
        store: Store,
        models: ModelRouter,
        database_url: str,
        max_concurrent: int = 4,
        *,
        stream_tokens: bool = True,
        lease_s: float = 30.0,
    ) -> None:
        self.store = store
        self.models = models
        self.database_url = database_url
        self.stream_tokens = stream_tokens
        self.lease_s = lease_s
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def enqueue(self, run_id: str) -> None:
        if run_id in self._tasks:
            return
        task = asyncio.create_task(self._execute(run_id), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run_id, None))

    async def _execute(self, run_id: str) -> None:
        async with self._slots:
            try:
                await execute_run(
                    run_id,
                    store=self.store,
                    models=self.models,
                    database_url=self.database_url,
                    stream_tokens=self.stream_tokens,
                    lease_s=self.lease_s,
                )
            except RunInterrupted as exc:  # enqueued again once its lease is free
                log.warning("run %s was interrupted: %s", run_id, exc)
            except Exception:  # execute_run records failures; this is a bug
                log.exception("run %s could not be executed", run_id)

    async def recover(self) -> int:
        """Enqueue the runs a previous process left unfinished; returns how many.

        Its queue died with it, so queued runs go at once; a run whose lease the previous
        process still holds is skipped now and enqueued again when the lease expires
        (execution.recovery)."""
        unfinished = [
            run
            for status in ("running", "queued")
            for run in await self.store.list_runs(status=status, limit=10_000)
        ]
        for run in reversed(unfinished):
            await self.enqueue(run.id)
        return len(unfinished)

    async def join(self) -> None:
        """Wait for every run in flight (tests, graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        # Interrupted runs stay 'running' with their checkpoints; the next start resumes them.
        await cancel_and_wait(list(self._tasks.values()))


class CeleryExecutor:
    """Sends each run to the ``runs`` queue by task name; a ``thinktank worker`` executes it."""

    def __init__(self, broker_url: str) -> None:
        self.app = make_celery(broker_url)

    async def enqueue(self, run_id: str) -> None:
        await asyncio.to_thread(
            self.app.send_task, EXECUTE_RUN_TASK, args=[run_id], queue=RUNS_QUEUE
        )

    async def close(self) -> None:
        self.app.close()
