"""One asyncio event loop per worker process, with the store, the models and the reapers on it.

Celery's threads hand runs and campaign steps to this loop, so the work of one process shares
connection pools and the local model's batching.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import Celery

from agents.model_map import ModelRouter
from execution.celery_app import DEFAULT_BROKER
from execution.executor import CeleryExecutor
from execution.recovery import repeat_forever, requeue_forever
from execution.tracing import configure_tracing
from services.campaign_chains import resume_stalled
from services.settings import Settings
from store.bus import RedisBus
from store.db import create_engine, migrate
from store.runs import Store
from training.campaigns import CampaignEnv

T = TypeVar("T")


class WorkerLoop:
    """The process's loop, started on first use (after any fork)."""

    _instance: WorkerLoop | None = None
    _lock = threading.Lock()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # sends what the reapers find again, by task name, on the worker's own broker
        self.executor = CeleryExecutor(settings.broker_url or DEFAULT_BROKER)
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

    @property
    def sender(self) -> Celery:
        return self.executor.app

    async def _open(self) -> Store:
        configure_tracing("thinktank-worker")  # in the worker process, after any fork
        engine = create_engine(self.settings.database_url)
        await migrate(engine)
        redis_url = self.settings.events_redis_url
        self.models = ModelRouter(self.settings.models)
        await asyncio.to_thread(self.models.warm)  # not at the first run's first call
        store = Store(engine, bus=RedisBus(redis_url) if redis_url else None)
        self.reaper = asyncio.create_task(
            requeue_forever(
                store,
                self.executor,
                interval_s=self.settings.reap_interval_s,
                requeue_after_s=self.settings.requeue_after_s,
            )
        )
        # campaigns whose driver died (a killed worker) get a new chain
        self.campaign_reaper = asyncio.create_task(
            repeat_forever(
                lambda: resume_stalled(
                    store, self.sender, stale_after_s=self.settings.campaign_stale_s
                ),
                interval_s=self.settings.reap_interval_s,
                what="stalled campaigns",
            )
        )
        return store

    def campaign_env(self) -> CampaignEnv:
        return CampaignEnv(
            store=self.store,
            models=self.models,
            database_url=self.settings.database_url,
            poll_s=5.0,
        )

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()
