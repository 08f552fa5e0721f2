"""The campaigns resource: start a self-play campaign, follow its rounds, cancel it.

Campaigns belong to the API key that started them, as runs do. A campaign's problem sources
are `gen:` specs or files in the server's ``problems/`` folder: a client never names a path
on the server.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import ValidationError

from agents.paths import data_dir
from services.api.deps import get_services
from services.api.runs import caller_key_id
from services.api.schemas.campaigns import (
    CampaignCreate,
    CampaignList,
    CampaignRoundView,
    CampaignView,
)
from store import campaigns as repo
from store.tables.campaigns import Campaign
from training.campaigns import CampaignConfig, CampaignError, cancel_campaign, create_campaign
from training.problems import GENERATOR_PREFIX, ProblemSourceError

router = APIRouter(prefix="/v1", tags=["campaigns"])


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
        stored = await repo.rounds_of(get_services(request).store, campaign.id)
        result.rounds = [CampaignRoundView.model_validate(r) for r in stored]
    return result


@router.post(
    "/campaigns",
    status_code=202,
    response_model=CampaignView,
    responses={409: {"description": "the name is taken"}, 422: {"description": "bad options"}},
)
async def start_campaign(
    body: CampaignCreate, request: Request, response: Response
) -> CampaignView:
    """Start a self-play campaign; it runs in the background (GET it to follow its rounds)."""
    services = get_services(request)
    fields = body.model_dump(exclude={"name"})
    fields["problems"] = server_source(body.problems, "problems")
    if body.eval_problems is not None:
        fields["eval_problems"] = server_source(body.eval_problems, "eval_problems")
    try:
        config = CampaignConfig.model_validate(fields)
    except ValidationError as exc:
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise HTTPException(422, reasons) from None
    try:
        campaign = await create_campaign(
            services.store,
            config,
            name=body.name,
            driver=services.campaigns.driver,
            api_key_id=caller_key_id(request),
        )
    except repo.CampaignNameTaken as exc:
        raise HTTPException(409, str(exc)) from None
    except (CampaignError, ProblemSourceError) as exc:
        raise HTTPException(422, str(exc)) from None
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
