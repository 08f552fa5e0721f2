"""Who drives the campaigns the API starts: the Celery workers, or this process.

With a broker, a campaign's chain goes to the workers (services.campaign_tasks). Embedded,
the API process drives each campaign as an asyncio task, and picks up campaigns whose driver
went silent (a previous process that died) every ``interval_s``, as the workers' reapers do.
"""

from __future__ import annotations

import asyncio
import logging

from agents.model_map import ModelRouter
from execution.cancelling import cancel_and_wait
from services.campaign_tasks import start_on_celery
from store import campaigns as repo
from store.runs import Store
from training.campaigns import CampaignEnv, drive

log = logging.getLogger(__name__)


class CampaignDrivers:
    def __init__(
        self,
        store: Store,
        models: ModelRouter,
        database_url: str,
        broker_url: str | None,
        *,
        stale_after_s: float,
    ) -> None:
        self.store = store
        self.models = models
        self.database_url = database_url
        self.broker_url = broker_url
        self.stale_after_s = stale_after_s
        self._tasks: dict[str, asyncio.Task[object]] = {}
        self._celery = None

    @property
    def driver(self) -> str:
        return "celery" if self.broker_url else "embedded"

    async def start(self, campaign_id: str, token: str) -> None:
        if self.broker_url:
            if self._celery is None:
                from services.worker import make_celery

                self._celery = make_celery(self.broker_url)
            await start_on_celery(self._celery, self.store, campaign_id, token)
            return
        env = CampaignEnv(self.store, self.models, self.database_url)
        task = asyncio.create_task(drive(env, campaign_id, token), name=f"campaign-{campaign_id}")
        self._tasks[campaign_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(campaign_id, None))

    async def resume_stalled(self) -> int:
        """Embedded: drive the campaigns nobody drives any more; returns how many."""
        resumed = 0
        stalled = await repo.stalled_campaigns(
            self.store, stale_after_s=self.stale_after_s, driver="embedded"
        )
        for campaign in stalled:
            if campaign.id in self._tasks:
                continue
            try:
                token = await repo.take_over(
                    self.store, campaign.id, driver="embedded", expected=campaign.driver_token
                )
            except repo.DriverReplaced:
                continue
            log.warning("campaign %s had no driver; resuming it here", campaign.name)
            await self.start(campaign.id, token)
            resumed += 1
        return resumed

    async def resume_forever(self, interval_s: float) -> None:
        while True:
            try:
                await self.resume_stalled()
            except Exception as exc:  # the database is away; next time
                log.warning("could not look for stalled campaigns: %s", exc)
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        # Cancelled drivers leave their campaigns where they are; the next start resumes them.
        await cancel_and_wait(list(self._tasks.values()))
        if self._celery is not None:
            self._celery.close()
