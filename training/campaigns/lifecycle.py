"""Starting, resuming, cancelling and failing a campaign."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from store import campaigns as repo
from store import model_versions
from store.runs import Store
from store.tables.campaigns import Campaign
from training import jobs
from training.campaigns.config import CampaignConfig, CampaignError, first_position
from training.problems import Problem, ProblemSourceError, load_problems

SOURCE_CHECK_LIMIT = 1000
"""Problems of each source read when a campaign is started; the driver reads the rest."""
SOURCE_CHECK_TIMEOUT_S = 30.0


class TooManyCampaigns(Exception):
    """The owner already has as many campaigns queued or running as it may."""

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"{active} campaign(s) queued or running, the limit is {limit}")
        self.active = active
        self.limit = limit


async def create_campaign(
    store: Store,
    config: CampaignConfig,
    *,
    name: str | None = None,
    driver: str,
    api_key_id: str | None = None,
    max_active: int | None = None,
) -> Campaign:
    """Store a queued campaign after checking its problem sources can be read and, with
    ``max_active``, that its owner (``api_key_id``) has fewer campaigns queued or running."""
    await check_sources(config)  # a bad source fails here, not rounds later
    if max_active is not None:
        active = await repo.count_active(store, api_key_id=api_key_id)
        if active >= max_active:
            raise TooManyCampaigns(active, max_active)
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


async def check_sources(config: CampaignConfig) -> None:
    """Whether the campaign's problem sources can be read and have what it needs, judged by
    the first ``SOURCE_CHECK_LIMIT`` problems of each. Reading a file or generating problems
    is work for a thread: the caller's event loop (the API's) goes on answering meanwhile."""
    try:
        await asyncio.wait_for(asyncio.to_thread(_check_sources, config), SOURCE_CHECK_TIMEOUT_S)
    except TimeoutError:
        raise CampaignError(
            f"the problem sources took longer than {SOURCE_CHECK_TIMEOUT_S:g} s to read"
        ) from None


def _check_sources(config: CampaignConfig) -> None:
    played = _read("problems", config.problems, config.seed)
    if not any(p.answer is not None for p in played):
        raise CampaignError(
            f"problems: {config.problems}: no problem has a reference answer to play on"
        )
    source = config.eval_source()
    limit = min(config.eval_limit, SOURCE_CHECK_LIMIT)
    problems = _read("eval_problems", source, config.seed, limit=limit)
    if config.kind == "spc" and not any(p.first_error_step is not None for p in problems):
        raise CampaignError(
            f"eval_problems: {source}: no step-labelled solutions to evaluate the critic on "
            "(ProcessBench, PRM800K, or gen:step-errors)"
        )
    if config.kind == "rlad" and not any(p.answer for p in problems):
        raise CampaignError(
            f"eval_problems: {source}: no problem has an answer to measure a solve rate"
        )


def _read(field: str, source: str, seed: int, *, limit: int = SOURCE_CHECK_LIMIT) -> list[Problem]:
    try:
        return load_problems(source, limit=limit, seed=seed)
    except ProblemSourceError as exc:
        raise CampaignError(f"{field}: {exc}") from None


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
