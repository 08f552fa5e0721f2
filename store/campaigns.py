"""Campaigns in the store: create, read, advance one step at a time, and find stalled ones.

Every write that moves a campaign forward names the driver token it was started with, so a
driver that was replaced (the campaign was resumed elsewhere) cannot move it any more.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from store.runs import Store
from store.tables.campaigns import Campaign, CampaignRound
from store.tables.runs import utcnow


class CampaignNotFound(LookupError):
    def __str__(self) -> str:
        return f"no campaign with id or name {self.args[0]!r} (see `thinktank campaign list`)"


class CampaignNameTaken(ValueError):
    def __str__(self) -> str:
        return f"a campaign named {self.args[0]!r} already exists; choose another --name"


class DriverReplaced(RuntimeError):
    """This driver's token is no longer the campaign's: another driver advances it now."""


def new_token() -> str:
    return uuid.uuid4().hex


async def create_campaign(
    store: Store,
    *,
    name: str,
    kind: str,
    config: dict[str, Any],
    driver: str,
    api_key_id: str | None = None,
) -> Campaign:
    row = Campaign(
        name=name,
        kind=kind,
        config=config,
        driver=driver,
        driver_token=new_token(),
        status="queued",
        round=0,
        versions={},
        api_key_id=api_key_id,
    )
    try:
        async with store.session() as session, session.begin():
            session.add(row)
    except IntegrityError:
        raise CampaignNameTaken(name) from None
    return row


async def find_campaign(store: Store, id_or_name: str) -> Campaign | None:
    async with store.session() as session:
        found = await session.get(Campaign, id_or_name)
        if found is None:
            found = await session.scalar(select(Campaign).where(Campaign.name == id_or_name))
        return found


async def get_campaign(store: Store, id_or_name: str) -> Campaign:
    found = await find_campaign(store, id_or_name)
    if found is None:
        raise CampaignNotFound(id_or_name)
    return found


async def list_campaigns(
    store: Store,
    *,
    limit: int = 50,
    status: str | None = None,
    kind: str | None = None,
    api_key_id: str | None = None,
) -> list[Campaign]:
    query = select(Campaign).order_by(Campaign.created_at.desc(), Campaign.id.desc())
    if status is not None:
        query = query.where(Campaign.status == status)
    if kind is not None:
        query = query.where(Campaign.kind == kind)
    if api_key_id is not None:
        query = query.where(Campaign.api_key_id == api_key_id)
    async with store.session() as session:
        return list((await session.scalars(query.limit(limit))).all())


ACTIVE = ("queued", "running")


async def count_active(store: Store, *, api_key_id: str | None) -> int:
    """Campaigns queued or running that ``api_key_id`` started (None: those started without a
    key, by the CLI or a keyless API)."""
    owner = (
        Campaign.api_key_id.is_(None) if api_key_id is None else Campaign.api_key_id == api_key_id
    )
    query = select(func.count()).select_from(Campaign).where(Campaign.status.in_(ACTIVE), owner)
    async with store.session() as session:
        return int(await session.scalar(query) or 0)


async def rounds_of(store: Store, campaign_id: str) -> list[CampaignRound]:
    query = (
        select(CampaignRound)
        .where(CampaignRound.campaign_id == campaign_id)
        .order_by(CampaignRound.round)
    )
    async with store.session() as session:
        return list((await session.scalars(query)).all())


async def get_round(store: Store, campaign_id: str, round_: int) -> CampaignRound:
    """The round's row, created on first use (a resumed step finds the one it began)."""
    query = select(CampaignRound).where(
        CampaignRound.campaign_id == campaign_id, CampaignRound.round == round_
    )
    async with store.session() as session:
        found = await session.scalar(query)
    if found is not None:
        return found
    try:
        async with store.session() as session, session.begin():
            session.add(CampaignRound(campaign_id=campaign_id, round=round_, steps={}))
    except IntegrityError:
        pass  # another driver created it a moment ago
    async with store.session() as session:
        found = await session.scalar(query)
    assert found is not None
    return found


async def update_campaign(store: Store, campaign_id: str, token: str | None, **values: Any) -> None:
    """Write ``values`` if ``token`` is still the campaign's driver token (None: any)."""
    query = update(Campaign).where(Campaign.id == campaign_id)
    if token is not None:
        query = query.where(Campaign.driver_token == token)
    async with store.session() as session, session.begin():
        result = await session.execute(query.values(**values))
    if result.rowcount == 0:
        raise DriverReplaced(f"campaign {campaign_id} is driven by someone else now")


async def update_round(
    store: Store, campaign_id: str, round_: int, token: str, **values: Any
) -> None:
    """Write a round's fields under the campaign's driver token."""
    async with store.session() as session, session.begin():
        owner = await session.scalar(
            select(Campaign.id).where(Campaign.id == campaign_id, Campaign.driver_token == token)
        )
        if owner is None:
            raise DriverReplaced(f"campaign {campaign_id} is driven by someone else now")
        await session.execute(
            update(CampaignRound)
            .where(CampaignRound.campaign_id == campaign_id, CampaignRound.round == round_)
            .values(**values)
        )


async def heartbeat(store: Store, campaign_id: str, token: str) -> None:
    await update_campaign(store, campaign_id, token, heartbeat_at=utcnow())


async def take_over(
    store: Store, campaign_id: str, *, driver: str, expected: str | None = None
) -> str:
    """Give the campaign a new driver token (resume): earlier drivers stop at their next
    write. With ``expected``, only if the token is still that one (two reapers that saw the
    same silent driver: one of them takes over)."""
    token = new_token()
    await update_campaign(
        store,
        campaign_id,
        expected,
        driver=driver,
        driver_token=token,
        status="running",
        error=None,
        finished_at=None,
        heartbeat_at=utcnow(),
    )
    return token


async def stalled_campaigns(store: Store, *, stale_after_s: float, driver: str) -> list[Campaign]:
    """Running campaigns of ``driver`` whose driver has not been heard of for a while."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    query = select(Campaign).where(
        Campaign.status.in_(("queued", "running")),
        Campaign.driver == driver,
        (Campaign.heartbeat_at.is_(None) & (Campaign.created_at < cutoff))
        | (Campaign.heartbeat_at < cutoff),
    )
    async with store.session() as session:
        return list((await session.scalars(query)).all())


async def take_over_stalled(
    store: Store, *, stale_after_s: float, driver: str, skip: Collection[str] = ()
) -> list[tuple[Campaign, str]]:
    """Take over every stalled campaign of ``driver`` (but those in ``skip``) with a new
    token; returns each campaign taken with its token. A campaign another reaper took first
    is left to it."""
    taken = []
    for campaign in await stalled_campaigns(store, stale_after_s=stale_after_s, driver=driver):
        if campaign.id in skip:
            continue
        try:
            token = await take_over(
                store, campaign.id, driver=driver, expected=campaign.driver_token
            )
        except DriverReplaced:
            continue
        taken.append((campaign, token))
    return taken
