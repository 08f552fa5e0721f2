"""The run task a worker executes: one run, on the process's loop, resumed from its checkpoint."""

from __future__ import annotations

from execution.runner import execute_run
from services.worker.loop import WorkerLoop


def execute_run_task(run_id: str) -> str:
    worker = WorkerLoop.get()
    outcome = worker.submit(
        execute_run(
            run_id,
            store=worker.store,
            models=worker.models,
            database_url=worker.settings.database_url,
            stream_tokens=worker.settings.stream_tokens,
            lease_s=worker.settings.run_lease_s,
        )
    )
    return str(outcome["status"])
