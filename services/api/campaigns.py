"""The campaigns resource: start a self-play campaign, follow its rounds, cancel it.

Campaigns belong to the API key that started them, as runs do. A campaign's problem sources
are `gen:` specs or files in the server's ``problems/`` folder: a client never names a path
on the server.

A campaign plays many games and trains models, so starting one is a permission of the key
(403 without it) with a limit on how many of its campaigns are queued or running at once (429
over it); with keys off, ``Settings.keyless_campaigns`` is that limit. A campaign trains one
model at a time, so the limit on campaigns is also the key's limit on trainings: the API starts
trainings no other way. Every size a request names is bounded (by the request schema and the
options' own models) before anything is stored, and the problem sources are read in a thread
(``training.campaigns.check_sources``), so other requests are answered meanwhile.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import ValidationError

from agents.paths import data_dir
from services.api.deps import Services, get_services
from services.api.runs import caller_key_id
from services.api.schemas.campaigns import (
    CampaignCreate,
    CampaignList,
    CampaignRoundView,
    CampaignView,
)
from store import api_keys
from store import campaigns as repo
from store.tables.campaigns import Campaign
from training.campaigns import (
    CampaignConfig,
    CampaignError,
    TooManyCampaigns,
    cancel_campaign,
    create_campaign,
)
from training.campaigns.report import load_report
from training.problems import GENERATOR_PREFIX, ProblemSourceError

router = APIRouter(prefix="/v1", tags=["campaigns"])

SERVER_PATH_OPTIONS = ("sft_data", "eval_data")
"""Trainer options that name files on the server; a client's campaign cannot set them."""


def server_source(source: str, field: str) -> str:
    """A `gen:` spec as it is, or a file name inside the server's problems folder."""
    if source.startswith(GENERATOR_PREFIX):
        return source
    folder = (data_dir() / "problems").resolve()
    path = (folder / source).resolve()
    if "\x00" in source or not path.is_relative_to(folder) or path == folder:
        raise HTTPException(
            422, f"{field}: a gen: spec or a file name in the server's problems folder"
        )
    if not path.is_file():
        raise HTTPException(422, f"{field}: no problem file {source!r} on the server")
    return str(path)


async def owned_campaign(request: Request, campaign_id: str) -> Campaign:
    store = get_services(request).store
    try:
        campaign = await repo.get_campaign(store, campaign_id)
    except repo.CampaignNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    key_id = caller_key_id(request)
    if key_id is not None and campaign.api_key_id != key_id:
        raise HTTPException(404, repo.CampaignNotFound(campaign_id).__str__())
    return campaign


async def view(request: Request, campaign: Campaign, *, rounds: bool) -> CampaignView:
    result = CampaignView.model_validate(campaign)
    if rounds:
        store = get_services(request).store
        stored = await repo.rounds_of(store, campaign.id)
        report = await load_report(store, campaign, stored)
        result.rounds = [
            CampaignRoundView.model_validate(r).model_copy(update={"report": line})
            for r, line in zip(stored, report.rounds, strict=True)
        ]
    return result


async def campaign_allowance(services: Services, key_id: str | None) -> int:
    """How many campaigns the caller may have queued or running at once; 403 when it may
    start none."""
    if key_id is None:
        limit = services.settings.keyless_campaigns
        if limit < 1:
            raise HTTPException(403, "campaigns are off on this server (keyless_campaigns is 0)")
        return limit
    key = await api_keys.get_key(services.store, key_id)
    if key is None or not key.can_start_campaigns:
        raise HTTPException(
            403,
            "this API key may not start campaigns (they play many games and train models); "
            "the server's operator can grant it: thinktank keys grant KEY campaigns",
        )
    return key.max_running_campaigns


def too_many(exc: TooManyCampaigns, key_id: str | None) -> str:
    if key_id is not None:
        held = f"this API key has {exc.active} campaign(s) queued or running"
        limit = f"its max_running_campaigns is {exc.limit}"
    else:
        held = f"{exc.active} campaign(s) started without an API key are queued or running"
        limit = f"the server's keyless_campaigns is {exc.limit}"
    return f"{held}, the limit ({limit}); cancel one or wait for one to end"


@router.post(
    "/campaigns",
    status_code=202,
    response_model=CampaignView,
    responses={
        403: {"description": "the API key may not start campaigns"},
        409: {"description": "the name is taken"},
        422: {"description": "bad options, or a size over its limit"},
        429: {"description": "the caller's limit of running campaigns is reached"},
    },
)
async def start_campaign(
    body: CampaignCreate, request: Request, response: Response
) -> CampaignView:
    """Start a self-play campaign; it runs in the background (GET it to follow its rounds).
    The API key needs the campaigns permission."""
    services = get_services(request)
    key_id = caller_key_id(request)
    limit = await campaign_allowance(services, key_id)
    trainer_options = {"train": body.train, "warm_start_train": body.warm_start_train} | {
        f"train_roles.{model}": options for model, options in body.train_roles.items()
    }
    for where, options in trainer_options.items():
        for option in SERVER_PATH_OPTIONS:
            if option in options:
                raise HTTPException(
                    422, f"{where}.{option}: names a file on the server, which a client cannot set"
                )
    fields = body.model_dump(exclude={"name"})
    fields["problems"] = server_source(body.problems, "problems")
    if body.eval_problems is not None:
        fields["eval_problems"] = server_source(body.eval_problems, "eval_problems")
    if body.warm_start is not None:
        warm = dict(body.warm_start)
        if isinstance(warm.get("problems"), str):
            warm["problems"] = server_source(warm["problems"], "warm_start.problems")
        if isinstance(warm.get("exclude"), list):
            warm["exclude"] = [
                server_source(s, "warm_start.exclude") if isinstance(s, str) else s
                for s in warm["exclude"]
            ]
        fields["warm_start"] = warm
    try:
        config = CampaignConfig.model_validate(fields)
    except ValidationError as exc:
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise HTTPException(422, reasons) from None
    # one start at a time in this process, so two requests cannot both take the last place
    async with services.campaigns.starting:
        try:
            campaign = await create_campaign(
                services.store,
                config,
                name=body.name,
                driver=services.campaigns.driver,
                api_key_id=key_id,
                max_active=limit,
            )
        except repo.CampaignNameTaken as exc:
            raise HTTPException(409, str(exc)) from None
        except (CampaignError, ProblemSourceError) as exc:
            raise HTTPException(422, str(exc)) from None
        except TooManyCampaigns as exc:
            raise HTTPException(429, too_many(exc, key_id)) from None
    assert campaign.driver_token is not None
    await services.campaigns.start(campaign.id, campaign.driver_token)
    response.headers["Location"] = f"/v1/campaigns/{campaign.id}"
    return await view(request, campaign, rounds=False)


@router.get("/campaigns", response_model=CampaignList)
async def list_campaigns(
    request: Request,
    status: Annotated[str | None, Query(max_length=16)] = None,
    kind: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> CampaignList:
    """Campaigns of the caller's key, newest first (without their rounds)."""
    found = await repo.list_campaigns(
        get_services(request).store,
        limit=limit,
        status=status,
        kind=kind,
        api_key_id=caller_key_id(request),
    )
    return CampaignList(items=[CampaignView.model_validate(c) for c in found])


@router.get(
    "/campaigns/{campaign_id}",
    response_model=CampaignView,
    responses={404: {"description": "no such campaign"}},
)
async def get_campaign(campaign_id: str, request: Request) -> CampaignView:
    """A campaign (by id or name) with every round's games, datasets, versions and metrics."""
    return await view(request, await owned_campaign(request, campaign_id), rounds=True)


@router.post(
    "/campaigns/{campaign_id}/cancel",
    response_model=CampaignView,
    responses={404: {"description": "no such campaign"}},
)
async def cancel(campaign_id: str, request: Request) -> CampaignView:
    """Stop a campaign; its finished rounds, versions and runs stay."""
    campaign = await owned_campaign(request, campaign_id)
    ended = await cancel_campaign(get_services(request).store, campaign.id)
    return await view(request, ended, rounds=True)
