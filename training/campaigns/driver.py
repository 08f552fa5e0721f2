"""Driving a campaign: one step at a time, under the driver's token, with a heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from agents.model import ModelError
from execution.cancelling import cancel_and_wait
from store import campaigns as repo
from store.db import is_transient
from store.tables.campaigns import Campaign, CampaignRound
from training.campaigns.config import (
    CampaignConfig,
    CampaignEnv,
    CampaignError,
    StepPending,
    next_position,
    steps_of,
)
from training.campaigns.lifecycle import fail_campaign
from training.campaigns.steps import STEPS

log = logging.getLogger(__name__)


async def run_step(env: CampaignEnv, campaign_id: str, token: str, round_: int, step: str) -> bool:
    """Do ``step`` of ``round_`` if that is where the campaign is; True when the campaign
    has moved past it (now or earlier), False when this driver may not move it (replaced,
    cancelled, failed). Raises :class:`StepPending` while the step waits on a job, and
    :class:`CampaignError` when it cannot go on."""
    campaign = await repo.get_campaign(env.store, campaign_id)
    if campaign.driver_token != token or campaign.status not in ("queued", "running"):
        return False
    config = CampaignConfig.model_validate(campaign.config)
    at = (campaign.round, campaign.step or "")
    if _order(config, at) > _order(config, (round_, step)):
        return True  # done before (a redelivered task)
    if at != (round_, step):
        raise CampaignError(f"campaign {campaign.name} is at {at}, not at {(round_, step)}")
    await repo.update_campaign(
        env.store, campaign_id, token, status="running", heartbeat_at=datetime.now(UTC)
    )
    row = await repo.get_round(env.store, campaign_id, round_)
    if row.steps.get(step, {}).get("status") != "running":
        await _mark_step(env, campaign, row, token, step, status="running")
    await _with_heartbeat(env, campaign_id, token, STEPS[step](env, campaign, config, row, token))
    row = await repo.get_round(env.store, campaign_id, round_)
    await _mark_step(env, campaign, row, token, step, status="done")
    following = next_position(config, round_, step)
    if following is None:
        await repo.update_campaign(
            env.store,
            campaign_id,
            token,
            status="succeeded",
            step=None,
            finished_at=datetime.now(UTC),
        )
        await repo.update_round(
            env.store, campaign_id, round_, token, finished_at=datetime.now(UTC)
        )
        env.say(f"campaign {campaign.name} finished")
        return True
    if following[0] != round_:
        await repo.update_round(
            env.store, campaign_id, round_, token, finished_at=datetime.now(UTC)
        )
    await repo.update_campaign(env.store, campaign_id, token, round=following[0], step=following[1])
    return True


def _order(config: CampaignConfig, position: tuple[int, str]) -> tuple[int, int]:
    round_, step = position
    if not step:  # finished
        return (config.rounds + 1, 0)
    return (round_, steps_of(config, round_).index(step))


async def _mark_step(
    env: CampaignEnv,
    campaign: Campaign,
    row: CampaignRound,
    token: str,
    step: str,
    *,
    status: str,
) -> None:
    now = datetime.now(UTC).isoformat()
    entry = dict(row.steps.get(step, {}))
    entry["status"] = status
    entry["finished_at" if status == "done" else "started_at"] = now
    await repo.update_round(
        env.store, campaign.id, row.round, token, steps={**row.steps, step: entry}
    )
    if status == "running":
        env.say(f"round {row.round}: {step}")


async def _with_heartbeat(env: CampaignEnv, campaign_id: str, token: str, work: Any) -> None:
    """Run a step while telling the store every few seconds that its driver is alive; a
    driver that was replaced stops its step at once."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=env.heartbeat_s)
            if done:
                return task.result()
            try:
                await repo.heartbeat(env.store, campaign_id, token)
            except repo.DriverReplaced:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise
            except Exception as exc:  # the database is away; the step's own writes wait
                log.warning("could not record campaign %s's heartbeat: %s", campaign_id, exc)
    finally:
        await cancel_and_wait([task])


async def advance(env: CampaignEnv, campaign_id: str, token: str) -> bool:
    """Do the campaign's current step; False once it is finished or no longer ours."""
    campaign = await repo.get_campaign(env.store, campaign_id)
    if campaign.step is None or campaign.driver_token != token:
        return False
    if campaign.status not in ("queued", "running"):
        return False
    moved = await run_step(env, campaign_id, token, campaign.round, campaign.step)
    campaign = await repo.get_campaign(env.store, campaign_id)
    return moved and campaign.status == "running"


async def drive(env: CampaignEnv, campaign_id: str, token: str) -> Campaign:
    """Drive the campaign in this process to its end (or until it is taken over or
    cancelled); a step that fails fails the campaign with its reason."""
    while True:
        try:
            if not await advance(env, campaign_id, token):
                break
        except StepPending as pending:
            await asyncio.sleep(min(pending.retry_in_s, env.poll_s))
        except repo.DriverReplaced:
            break
        except CampaignError as exc:
            await fail_campaign(env.store, campaign_id, token, str(exc))
            break
        except ModelError as exc:
            await fail_campaign(env.store, campaign_id, token, f"model call failed: {exc}")
            break
        except Exception as exc:
            if is_transient(exc):  # the database is away: wait for it, the step is idempotent
                log.warning("campaign %s waits for the database: %s", campaign_id, exc)
                await asyncio.sleep(env.poll_s)
                continue
            log.exception("campaign %s failed", campaign_id)
            await fail_campaign(env.store, campaign_id, token, f"{type(exc).__name__}: {exc}")
            break
    return await repo.get_campaign(env.store, campaign_id)
