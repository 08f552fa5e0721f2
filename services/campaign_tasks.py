"""Campaigns on Celery: one chain of step tasks per round, on the ``campaigns`` queue.

A round is ``step(play) | step(export) | step(train) | step(serve) | step(evaluate) |
next_round``; ``next_round`` sends the chain of the following round. Each step task does its
step through :func:`training.campaigns.run_step` on the worker's event loop, which first
checks that the campaign is at that step and that the chain's driver token is still the
campaign's, so a redelivered or stale task does nothing.

A step that waits on a training job retries itself every few seconds (``self.retry``), which
keeps its place in the chain without holding a worker thread. A step that cannot go on fails
the campaign with its reason and ends the chain. Nothing is lost when a worker dies: every
worker's reaper looks for campaigns whose driver has been silent for ``campaign_stale_s``
(a setting),
takes them over with a new token and sends the chain again from the stored step.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from celery import Celery, chain
from celery.exceptions import Ignore

from store import campaigns as repo
from store.db import is_transient
from store.runs import Store
from training.campaigns import (
    CampaignConfig,
    CampaignEnv,
    CampaignError,
    StepPending,
    fail_campaign,
    run_step,
    steps_of,
)

log = logging.getLogger(__name__)

CAMPAIGN_QUEUE = "campaigns"
STEP_TASK = "thinktank.campaign.step"
NEXT_ROUND_TASK = "thinktank.campaign.next_round"
DRIVER = "celery"


def register(app: Celery) -> None:
    app.task(name=STEP_TASK, bind=True, acks_late=True, max_retries=None)(campaign_step)
    app.task(name=NEXT_ROUND_TASK, acks_late=True)(campaign_next_round)


def round_chain(app: Celery, campaign_id: str, token: str, round_: int, steps: list[str]) -> Any:
    """The chain that does ``steps`` of ``round_`` and then sends the next round's."""
    signatures = [
        app.signature(
            STEP_TASK, args=(campaign_id, token, round_, step), queue=CAMPAIGN_QUEUE, immutable=True
        )
        for step in steps
    ]
    signatures.append(
        app.signature(
            NEXT_ROUND_TASK, args=(campaign_id, token, round_), queue=CAMPAIGN_QUEUE, immutable=True
        )
    )
    return chain(*signatures)


def send_from_position(
    app: Celery, campaign_id: str, token: str, config: CampaignConfig, round_: int, step: str
) -> None:
    """Send the rest of ``round_``'s chain, from ``step`` on."""
    steps = list(steps_of(config, round_))
    round_chain(app, campaign_id, token, round_, steps[steps.index(step) :]).apply_async()


async def start_on_celery(app: Celery, store: Store, campaign_id: str, token: str) -> None:
    campaign = await repo.get_campaign(store, campaign_id)
    if campaign.step is None:
        return
    config = CampaignConfig.model_validate(campaign.config)
    await asyncio.to_thread(
        send_from_position, app, campaign_id, token, config, campaign.round, campaign.step
    )


def campaign_step(task: Any, campaign_id: str, token: str, round_: int, step: str) -> str:
    from services.worker import WorkerLoop

    worker = WorkerLoop.get()
    env = worker.campaign_env()
    try:
        moved = worker.submit(run_step(env, campaign_id, token, round_, step))
    except StepPending as pending:
        raise task.retry(countdown=pending.retry_in_s, max_retries=None) from None
    except repo.DriverReplaced:
        raise Ignore() from None
    except Exception as exc:
        if is_transient(exc):  # the database is away: try again later, steps are idempotent
            countdown = min(300, 5 * 2 ** min(task.request.retries, 6))
            raise task.retry(exc=exc, countdown=countdown, max_retries=None) from None
        reason = str(exc) if isinstance(exc, CampaignError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, CampaignError):
            log.exception("campaign %s: step %s of round %s failed", campaign_id, step, round_)
        worker.submit(fail_campaign(worker.store, campaign_id, token, reason))
        raise Ignore() from None  # the chain ends here; the campaign says why
    if not moved:
        raise Ignore()  # replaced, cancelled or failed: the rest of this chain is not ours
    return f"{campaign_id}:{round_}:{step}"


def campaign_next_round(campaign_id: str, token: str, round_: int) -> str:
    from services.worker import WorkerLoop

    worker = WorkerLoop.get()
    campaign = worker.submit(repo.get_campaign(worker.store, campaign_id))
    if campaign.driver_token != token or campaign.status != "running" or campaign.step is None:
        return "done"
    if campaign.round <= round_:
        return "waiting"  # a step of this round has not finished; its own retry goes on
    config = CampaignConfig.model_validate(campaign.config)
    send_from_position(worker.app, campaign_id, token, config, campaign.round, campaign.step)
    return f"round {campaign.round}"


async def resume_stalled(store: Store, app: Celery, *, stale_after_s: float) -> int:
    """Take over the Celery campaigns whose driver went silent and send their chains again."""
    resumed = 0
    for campaign in await repo.stalled_campaigns(store, stale_after_s=stale_after_s, driver=DRIVER):
        try:
            token = await repo.take_over(
                store, campaign.id, driver=DRIVER, expected=campaign.driver_token
            )
        except repo.DriverReplaced:
            continue  # another worker's reaper was quicker
        log.warning("campaign %s's driver went silent; resuming it", campaign.name)
        await start_on_celery(app, store, campaign.id, token)
        resumed += 1
    return resumed


def campaign_env(store: Store, models: Any, database_url: str) -> CampaignEnv:
    return CampaignEnv(store=store, models=models, database_url=database_url, poll_s=5.0)
