"""API keys in the store, on SQLite and on this machine's real PostgreSQL."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from store import api_keys
from store.runs import Store
from store.tables.runs import ApiKey


async def test_a_key_is_found_by_itself_and_stored_only_as_a_hash(any_store: Store) -> None:
    row, key = await api_keys.create_key(any_store, " ci bot ", rate_limit_per_minute=5)
    assert re.fullmatch(r"tt_[A-Za-z0-9_-]{43}", key)  # 32 random bytes, urlsafe
    assert row.name == "ci bot" and row.rate_limit_per_minute == 5 and row.token_quota is None
    assert row.prefix == key[:11] and row.key_hash == api_keys.hash_key(key)

    found = await api_keys.find_key(any_store, key)
    assert found is not None and found.id == row.id
    assert await api_keys.find_key(any_store, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert await api_keys.find_key(any_store, row.key_hash) is None  # the hash is not a key
    assert await api_keys.find_key(any_store, "tt_" + "x" * 10_000) is None

    for listed in await api_keys.list_keys(any_store):
        assert key not in repr(vars(listed))


async def test_revoke_by_id_or_prefix(any_store: Store) -> None:
    first, first_key = await api_keys.create_key(any_store, "first")
    second, _ = await api_keys.create_key(any_store, "second")

    revoked = await api_keys.revoke_key(any_store, first.prefix)
    assert revoked.id == first.id and revoked.revoked_at is not None
    found = await api_keys.find_key(any_store, first_key)
    assert found is not None and found.revoked_at is not None
    # revoking again is harmless and keeps the first revocation time
    again = await api_keys.revoke_key(any_store, first.id)
    assert again.revoked_at is not None
    # (SQLite hands datetimes back without their zone)
    assert again.revoked_at.replace(tzinfo=None) == revoked.revoked_at.replace(tzinfo=None)

    assert (await api_keys.revoke_key(any_store, second.id)).revoked_at is not None
    with pytest.raises(api_keys.KeyNotFound, match="no API key with id or prefix 'tt_nope'"):
        await api_keys.revoke_key(any_store, "tt_nope")


async def test_a_prefix_two_keys_share_revokes_neither(any_store: Store) -> None:
    # 48 random bits make this rare, not impossible: then only the id will do
    first, _ = await api_keys.create_key(any_store, "first")
    second, _ = await api_keys.create_key(any_store, "second")
    async with any_store.session() as session, session.begin():
        await session.execute(
            update(ApiKey).where(ApiKey.id == second.id).values(prefix=first.prefix)
        )
    with pytest.raises(api_keys.AmbiguousKey, match="give the key's id"):
        await api_keys.revoke_key(any_store, first.prefix)
    both = [k for k in await api_keys.list_keys(any_store) if k.id in (first.id, second.id)]
    assert len(both) == 2 and all(k.revoked_at is None for k in both)
    assert (await api_keys.revoke_key(any_store, second.id)).id == second.id


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": ""}, "name must be 1 to 100 characters"),
        ({"name": "x" * 101}, "name must be 1 to 100 characters"),
        ({"name": "x", "rate_limit_per_minute": 0}, "at least 1 request per minute"),
        ({"name": "x", "token_quota": 0}, "at least 1 token"),
    ],
)
async def test_bad_key_settings_are_refused(
    any_store: Store, options: dict[str, object], message: str
) -> None:
    before = len(await api_keys.list_keys(any_store))  # PostgreSQL's database is shared
    with pytest.raises(ValueError, match=message):
        await api_keys.create_key(any_store, **options)  # type: ignore[arg-type]
    assert len(await api_keys.list_keys(any_store)) == before


def test_idempotency_keys_are_scoped_per_api_key() -> None:
    assert api_keys.scoped_idempotency_key("order-42", None) == "order-42"
    assert api_keys.scoped_idempotency_key(None, "k1") is None
    alice, bob = (api_keys.scoped_idempotency_key("order-42", k) for k in ("a" * 32, "b" * 32))
    assert alice != bob
    assert len(api_keys.scoped_idempotency_key("x" * 200, "a" * 32) or "") <= 200
