"""Starting, resuming, cancelling and failing a campaign."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from store import campaigns as repo
from store import model_versions
from store.runs import Store
from store.tables.campaigns import Campaign
from training import jobs
from training.campaigns.config import CampaignConfig, CampaignError, first_position
from training.campaigns.steps import _round_problems
from training.problems import load_problems


async def create_campaign(
    store: Store,
    config: CampaignConfig,
    *,
    name: str | None = None,
    driver: str,
    api_key_id: str | None = None,
) -> Campaign:
    """Store a queued campaign after checking its problem sources can be read."""
    _round_problems(config, 1)  # a bad source fails here, not rounds later
    _eval_problems_readable(config)
    campaign_name = name or f"{config.kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    try:
        model_versions.check_model_name(f"{campaign_name}-abstraction-r{config.rounds}")
    except ValueError:
        raise CampaignError(
            f"bad campaign name {campaign_name!r}: letters, digits, '.', '_' or '-', at most "
            "70 characters (model versions are named after it)"
        ) from None
    round_, step = first_position(config)
    campaign = await repo.create_campaign(
        store,
        name=campaign_name,
        kind=config.kind,
        config=config.model_dump(mode="json"),
        driver=driver,
        api_key_id=api_key_id,
    )
    await repo.update_campaign(store, campaign.id, None, round=round_, step=step)
    return await repo.get_campaign(store, campaign.id)


def _eval_problems_readable(config: CampaignConfig) -> None:
    source = config.eval_source()
    problems = load_problems(source, limit=config.eval_limit, seed=config.seed)
    if config.kind == "spc" and not any(p.first_error_step is not None for p in problems):
        raise CampaignError(
            f"{source}: no step-labelled solutions to evaluate the critic on (ProcessBench, "
            "PRM800K, or gen:step-errors)"
        )
    if config.kind == "rlad" and not any(p.answer for p in problems):
        raise CampaignError(f"{source}: no problem has an answer to measure a solve rate")


async def resume_campaign(store: Store, campaign_id: str, *, driver: str) -> str:
    """Take a failed, cancelled or stalled campaign over; returns the new driver token.
    Trainings that failed in the current round get their attempts back."""
    campaign = await repo.get_campaign(store, campaign_id)
    if campaign.status == "succeeded":
        raise CampaignError(f"campaign {campaign.name} has finished; nothing to resume")
    token = await repo.take_over(store, campaign.id, driver=driver)
    current = await repo.get_round(store, campaign.id, campaign.round)
    if current.training_runs:
        reset = {model: {**entry, "attempts": 0} for model, entry in current.training_runs.items()}
        await repo.update_round(store, campaign.id, campaign.round, token, training_runs=reset)
    return token


async def cancel_campaign(store: Store, campaign_id: str) -> Campaign:
    """Stop a campaign: its driver stops at its next write; a training it launched here is
    asked to stop at its next step (it keeps its checkpoint)."""
    campaign = await repo.get_campaign(store, campaign_id)
    if campaign.status in ("succeeded", "failed", "cancelled"):
        return campaign
    await repo.update_campaign(
        store,
        campaign.id,
        None,
        status="cancelled",
        driver_token=None,
        finished_at=datetime.now(UTC),
        error="cancelled by its owner",
    )
    current = await repo.get_round(store, campaign.id, campaign.round)
    for entry in current.training_runs.values():
        with contextlib.suppress(Exception):
            run = await model_versions.get_training_run(store, entry["id"])
            if run.status in ("queued", "running"):
                jobs.signal_local(run)
    return await repo.get_campaign(store, campaign.id)


async def fail_campaign(store: Store, campaign_id: str, token: str, error: str) -> None:
    with contextlib.suppress(repo.DriverReplaced):
        await repo.update_campaign(
            store,
            campaign_id,
            token,
            status="failed",
            error=error,
            finished_at=datetime.now(UTC),
        )
