"""API keys: create, look up, revoke, list. Only a key's SHA-256 hash is ever stored.

A key is ``tt_`` and 32 random bytes (urlsafe base64). It is shown once, at creation; the
store keeps its hash and a short display prefix (``tt_`` and 8 characters, 48 of the key's 256
random bits) so people can tell their keys apart. A request's key is checked by hashing it and
looking the hash up, so no comparison of secrets ever happens in Python. Nothing here logs.

Lookups are not cached: every request reads the key's row, so a revoked key fails on the very
next request, in every API process.

Starting a campaign (which plays many games and trains models) is a permission of its own: a
key has it only once it is granted (``thinktank keys grant KEY campaigns``), with a limit on how
many of its campaigns run at once.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from store.runs import Store
from store.tables.runs import ApiKey, Run

KEY_PREFIX = "tt_"
DISPLAY_CHARS = len(KEY_PREFIX) + 8
# a real key is 46 characters; anything much longer is not one, and is not worth hashing
MAX_KEY_CHARS = 200
DEFAULT_RATE_LIMIT_PER_MINUTE = 60
DEFAULT_MAX_RUNNING_CAMPAIGNS = 1
MAX_RUNNING_CAMPAIGNS = 100


class KeyNotFound(LookupError):
    def __str__(self) -> str:
        return f"no API key with id or prefix {self.args[0]!r}"


class AmbiguousKey(LookupError):
    def __str__(self) -> str:
        return f"{self.args[0]!r} matches more than one API key; give the key's id"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_CHARS]


def scoped_idempotency_key(idempotency_key: str | None, api_key_id: str | None) -> str | None:
    """Idempotency keys are unique across the store; with API keys, each key gets its own
    namespace, so one client's ``Idempotency-Key`` can never return another client's run.

    Hashed so the result fits the column whatever the client sent (at most 200 characters).
    """
    if idempotency_key is None or api_key_id is None:
        return idempotency_key
    return f"{api_key_id}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


async def create_key(
    store: Store,
    name: str,
    *,
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT_PER_MINUTE,
    token_quota: int | None = None,
    can_start_campaigns: bool = False,
    max_running_campaigns: int = DEFAULT_MAX_RUNNING_CAMPAIGNS,
) -> tuple[ApiKey, str]:
    """Store a new key; returns its row and the key itself, which nothing can show again."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a key's name must be 1 to 100 characters")
    if rate_limit_per_minute < 1:
        raise ValueError("the rate limit must be at least 1 request per minute")
    if token_quota is not None and token_quota < 1:
        raise ValueError("the token quota must be at least 1 token (omit it for no quota)")
    check_campaign_limit(max_running_campaigns)
    key = generate_key()
    row = ApiKey(
        name=name,
        prefix=display_prefix(key),
        key_hash=hash_key(key),
        rate_limit_per_minute=rate_limit_per_minute,
        token_quota=token_quota,
        can_start_campaigns=can_start_campaigns,
        max_running_campaigns=max_running_campaigns,
    )
    async with store.session() as session, session.begin():
        session.add(row)
    return row, key


def check_campaign_limit(max_running: int) -> None:
    if not 1 <= max_running <= MAX_RUNNING_CAMPAIGNS:
        raise ValueError(
            f"a key's limit of running campaigns must be from 1 to {MAX_RUNNING_CAMPAIGNS}"
        )


async def find_key(store: Store, key: str) -> ApiKey | None:
    """The key's row (revoked or not), or None for a key that was never issued."""
    if not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_CHARS:
        return None
    async with store.session() as session:
        return await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))


async def get_key(store: Store, key_id: str) -> ApiKey | None:
    async with store.session() as session:
        return await session.get(ApiKey, key_id)


async def list_keys(store: Store) -> list[ApiKey]:
    async with store.session() as session:
        rows = await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
        return list(rows.all())


async def _one_key(session: AsyncSession, id_or_prefix: str) -> ApiKey:
    rows = list(
        (
            await session.scalars(
                select(ApiKey).where(or_(ApiKey.id == id_or_prefix, ApiKey.prefix == id_or_prefix))
            )
        ).all()
    )
    if not rows:
        raise KeyNotFound(id_or_prefix)
    if len(rows) > 1:
        raise AmbiguousKey(id_or_prefix)
    return rows[0]


async def revoke_key(store: Store, id_or_prefix: str) -> ApiKey:
    """Revoke by id or display prefix; revoking a revoked key keeps its first revocation time."""
    async with store.session() as session, session.begin():
        row = await _one_key(session, id_or_prefix)
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
    return row


async def set_campaign_permission(
    store: Store, id_or_prefix: str, *, allowed: bool, max_running: int | None = None
) -> ApiKey:
    """Grant (or take back) a key's permission to start campaigns, and set how many of its
    campaigns may run at once (unchanged when ``max_running`` is None). Campaigns already
    running go on."""
    if max_running is not None:
        check_campaign_limit(max_running)
    async with store.session() as session, session.begin():
        row = await _one_key(session, id_or_prefix)
        row.can_start_campaigns = allowed
        if max_running is not None:
            row.max_running_campaigns = max_running
    return row


def _spent_column() -> ColumnElement[int]:
    return func.coalesce(func.sum(Run.prompt_tokens + Run.completion_tokens), 0)


async def tokens_spent(store: Store, api_key_id: str) -> int:
    """Tokens the key's runs have spent. A run's totals are written when it finishes
    (``Store.finish_run``), so a run in flight counts from the moment it ends; a resumed run's
    totals are rewritten, never added twice."""
    async with store.session() as session:
        spent = await session.scalar(select(_spent_column()).where(Run.api_key_id == api_key_id))
    return int(spent or 0)


async def tokens_spent_by_key(store: Store) -> dict[str, int]:
    query = (
        select(Run.api_key_id, _spent_column())
        .where(Run.api_key_id.is_not(None))
        .group_by(Run.api_key_id)
    )
    async with store.session() as session:
        return {key_id: int(spent) for key_id, spent in (await session.execute(query)).all()}
