"""Who drives the campaigns the API starts: the Celery workers, or this process.

With a broker, a campaign's chain goes to the workers (``services.campaign_chains``).
Embedded, the API process drives each campaign as an asyncio task, and picks up campaigns
whose driver went silent (a previous process that died) every ``interval_s``, as the workers'
reapers do. Its trainings are tied to the API process: at its close they are asked to
checkpoint and stop (and killed after ``TRAINING_STOP_S``), and if it dies the kernel stops
them; the campaign resumes them from their checkpoints when a server drives it again. A
trainer on a Ray cluster is the cluster's and goes on.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess

from celery import Celery

from agents.model_map import ModelRouter
from execution.cancelling import cancel_and_wait
from execution.celery_app import make_celery
from execution.recovery import repeat_forever
from services.campaign_chains import start_on_celery
from store import campaigns as repo
from store.runs import Store
from training.campaigns import CampaignEnv, drive
from training.jobs import stop_tied

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
TRAINING_STOP_S = 30.0


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
        self._celery: Celery | None = None
        self._trainings: list[tuple[subprocess.Popen[bytes], str]] = []
        self.starting = asyncio.Lock()
        """Held while a campaign is checked against its caller's limit and stored."""

    @property
    def driver(self) -> str:
        return "celery" if self.broker_url else EMBEDDED

    async def start(self, campaign_id: str, token: str) -> None:
        if self.broker_url:
            if self._celery is None:
                self._celery = make_celery(self.broker_url)
            await start_on_celery(self._celery, self.store, campaign_id, token)
            return
        # pruned in place: the drivers already running hold this same list
        self._trainings[:] = [(p, run) for p, run in self._trainings if p.poll() is None]
        env = CampaignEnv(
            self.store, self.models, self.database_url, tied_trainings=self._trainings
        )
        task = asyncio.create_task(drive(env, campaign_id, token), name=f"campaign-{campaign_id}")
        self._tasks[campaign_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(campaign_id, None))

    async def resume_stalled(self) -> int:
        """Embedded: drive the campaigns nobody drives any more; returns how many."""
        taken = await repo.take_over_stalled(
            self.store, stale_after_s=self.stale_after_s, driver=EMBEDDED, skip=self._tasks
        )
        for campaign, token in taken:
            log.warning("campaign %s had no driver; resuming it here", campaign.name)
            await self.start(campaign.id, token)
        return len(taken)

    async def resume_forever(self, interval_s: float) -> None:
        await repeat_forever(self.resume_stalled, interval_s=interval_s, what="stalled campaigns")

    async def close(self) -> None:
        # Cancelled drivers leave their campaigns where they are; the next start resumes them.
        await cancel_and_wait(list(self._tasks.values()))
        await stop_tied(self.store, self._trainings, grace_s=TRAINING_STOP_S)
        if self._celery is not None:
            self._celery.close()
