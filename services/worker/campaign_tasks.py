"""The campaign step tasks a worker runs (sent as chains by ``services.campaign_chains``).

Each step task does its step through :func:`training.campaigns.run_step` on the worker's
event loop, which first checks that the campaign is at that step and that the chain's driver
token is still the campaign's, so a redelivered or stale task does nothing.

A step that waits on a training job retries itself every few seconds (``self.retry``), which
keeps its place in the chain without holding a worker thread. A step that cannot go on fails
the campaign with its reason and ends the chain. Nothing is lost when a worker dies: every
worker's reaper looks for campaigns whose driver has been silent for ``campaign_stale_s``
(a setting), takes them over with a new token and sends the chain again from the stored step.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import Ignore

from services.campaign_chains import send_from_position
from services.worker.loop import WorkerLoop
from store import campaigns as repo
from store.db import is_transient
from training.campaigns import CampaignConfig, CampaignError, StepPending, fail_campaign, run_step

log = logging.getLogger(__name__)


def campaign_step(task: Any, campaign_id: str, token: str, round_: int, step: str) -> str:
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
    worker = WorkerLoop.get()
    campaign = worker.submit(repo.get_campaign(worker.store, campaign_id))
    if campaign.driver_token != token or campaign.status != "running" or campaign.step is None:
        return "done"
    if campaign.round <= round_:
        return "waiting"  # a step of this round has not finished; its own retry goes on
    config = CampaignConfig.model_validate(campaign.config)
    send_from_position(worker.sender, campaign_id, token, config, campaign.round, campaign.step)
    return f"round {campaign.round}"
