"""The Celery worker: ``thinktank worker`` (or ``celery -A services.worker worker -Q runs``).

Each worker process keeps one asyncio event loop in a background thread, with one store, one
model router and one event bus on it. Celery's threads hand runs to that loop, so runs in one
process share connection pools and the local model's batching. Tasks are acknowledged late and
requeued when a worker dies, so a killed worker's run is executed again and resumes from its
checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import Celery
from celery.signals import worker_ready

from agents.model_map import ModelRouter
from execution.executor import EXECUTE_RUN_TASK, CeleryExecutor
from execution.recovery import requeue_forever
from execution.runner import execute_run
from execution.tracing import configure_tracing
from services.campaign_tasks import campaign_env, resume_stalled
from services.campaign_tasks import register as register_campaign_tasks
from services.settings import Settings
from store.bus import RedisBus
from store.db import create_engine, migrate
from store.runs import Store
from training.campaigns import CampaignEnv

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"

# A run holds its task until it ends; Redis redelivers a task unacknowledged for longer.
VISIBILITY_TIMEOUT_S = 12 * 3600


def make_celery(broker_url: str) -> Celery:
    app = Celery("thinktank", broker=broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="runs",
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
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
    register_campaign_tasks(app)
    return app


class WorkerLoop:
    """One event loop per worker process, started on first use (after any fork)."""

    _instance: WorkerLoop | None = None
    _lock = threading.Lock()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="runs")
        self.thread.start()
        self.store: Store = self.submit(self._open())

    @classmethod
    def get(cls) -> WorkerLoop:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(Settings())
            return cls._instance

    async def _open(self) -> Store:
        configure_tracing("thinktank-worker")  # in the worker process, after any fork
        engine = create_engine(self.settings.database_url)
        await migrate(engine)
        redis_url = self.settings.events_redis_url
        self.models = ModelRouter(self.settings.models)
        store = Store(engine, bus=RedisBus(redis_url) if redis_url else None)
        broker_url = self.settings.broker_url or DEFAULT_BROKER
        self.reaper = asyncio.create_task(
            requeue_forever(
                store,
                CeleryExecutor(broker_url),
                interval_s=self.settings.reap_interval_s,
                requeue_after_s=self.settings.requeue_after_s,
            )
        )
        self.campaign_reaper = asyncio.create_task(self._resume_stalled_campaigns(store))
        return store

    @property
    def app(self) -> Celery:
        return app

    def campaign_env(self) -> CampaignEnv:
        return campaign_env(self.store, self.models, self.settings.database_url)

    async def _resume_stalled_campaigns(self, store: Store) -> None:
        """Campaigns whose driver died (a killed worker) get a new chain; see
        services.campaign_tasks."""
        while True:
            try:
                await resume_stalled(store, app, stale_after_s=self.settings.campaign_stale_s)
            except Exception as exc:  # the database or broker is away; next time
                log.warning("could not look for stalled campaigns: %s", exc)
            await asyncio.sleep(self.settings.reap_interval_s)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


@worker_ready.connect
def _open_at_start(**_: Any) -> None:
    """Open the loop when the worker starts, not at its first task: its reaper must look
    for abandoned runs even while no task arrives (a queue that Redis lost is empty)."""
    WorkerLoop.get()


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


def _default_app() -> Celery:
    settings = Settings()
    return make_celery(settings.broker_url or DEFAULT_BROKER)


app = _default_app()
