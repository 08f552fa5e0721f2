"""The Celery worker: ``thinktank worker`` (or ``celery -A services.worker.app worker -Q
runs,campaigns``).

Each worker process keeps one asyncio event loop in a background thread
(:mod:`services.worker.loop`). Tasks are acknowledged late and requeued when a worker dies,
so a killed worker's run is executed again and resumes from its checkpoint.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_ready

from execution.celery_app import (
    CAMPAIGN_NEXT_ROUND_TASK,
    CAMPAIGN_STEP_TASK,
    DEFAULT_BROKER,
    EXECUTE_RUN_TASK,
    make_celery,
)
from services.settings import Settings
from services.worker.campaign_tasks import campaign_next_round, campaign_step
from services.worker.loop import WorkerLoop
from services.worker.run_tasks import execute_run_task


def make_worker_app(broker_url: str) -> Celery:
    """The app with every task's code registered under its name."""
    app = make_celery(broker_url)
    # A run that could not even start (database or model server unreachable) is retried with
    # backoff; executing a run again is safe, it resumes from its checkpoint.
    app.task(
        name=EXECUTE_RUN_TASK,
        acks_late=True,
        autoretry_for=(Exception,),
        retry_backoff=True,
        retry_backoff_max=300,
        retry_jitter=True,
        max_retries=8,
    )(execute_run_task)
    app.task(name=CAMPAIGN_STEP_TASK, bind=True, acks_late=True, max_retries=None)(campaign_step)
    app.task(name=CAMPAIGN_NEXT_ROUND_TASK, acks_late=True)(campaign_next_round)
    return app


@worker_ready.connect
def _open_at_start(**_: Any) -> None:
    """Open the loop when the worker starts, not at its first task: its reaper must look
    for abandoned runs even while no task arrives (a queue that Redis lost is empty)."""
    WorkerLoop.get()


app = make_worker_app(Settings().broker_url or DEFAULT_BROKER)
