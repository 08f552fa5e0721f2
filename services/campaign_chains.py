"""Campaigns on Celery: a round is one chain of step tasks on the ``campaigns`` queue.

A round is ``step(play) | step(export) | step(train) | step(serve) | step(evaluate) |
next_round``; ``next_round`` sends the chain of the following round. The chains are built
from task names (``execution.celery_app``), so the API and the CLI send them without
importing the worker; the tasks' code is in ``services/worker/campaign_tasks.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from celery import Celery, chain

from execution.celery_app import CAMPAIGN_NEXT_ROUND_TASK, CAMPAIGN_STEP_TASK, CAMPAIGNS_QUEUE
from store import campaigns as repo
from store.runs import Store
from training.campaigns import CampaignConfig, steps_of

log = logging.getLogger(__name__)

DRIVER = "celery"


def round_chain(app: Celery, campaign_id: str, token: str, round_: int, steps: list[str]) -> Any:
    """The chain that does ``steps`` of ``round_`` and then sends the next round's."""
    signatures = [
        app.signature(
            CAMPAIGN_STEP_TASK,
            args=(campaign_id, token, round_, step),
            queue=CAMPAIGNS_QUEUE,
            immutable=True,
        )
        for step in steps
    ]
    signatures.append(
        app.signature(
            CAMPAIGN_NEXT_ROUND_TASK,
            args=(campaign_id, token, round_),
            queue=CAMPAIGNS_QUEUE,
            immutable=True,
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
    """Send the chain that continues the campaign from its stored round and step."""
    campaign = await repo.get_campaign(store, campaign_id)
    if campaign.step is None:
        return
    config = CampaignConfig.model_validate(campaign.config)
    await asyncio.to_thread(
        send_from_position, app, campaign_id, token, config, campaign.round, campaign.step
    )


async def resume_stalled(store: Store, app: Celery, *, stale_after_s: float) -> int:
    """Take over the Celery campaigns whose driver went silent and send their chains again."""
    taken = await repo.take_over_stalled(store, stale_after_s=stale_after_s, driver=DRIVER)
    for campaign, token in taken:
        log.warning("campaign %s's driver went silent; resuming it", campaign.name)
        await start_on_celery(app, store, campaign.id, token)
    return len(taken)
