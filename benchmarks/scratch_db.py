"""A throwaway PostgreSQL database for one benchmark run, created and dropped by name, and
the one store a benchmark keeps per database for all its runs, as a worker process does."""

from __future__ import annotations

import uuid

from store.db import create_engine, migrate
from store.runs import Store

_STORES: dict[str, Store] = {}


async def store_for(database_url: str) -> Store:
    """The benchmark's store on ``database_url``, migrated when first asked for."""
    if database_url not in _STORES:
        engine = create_engine(database_url)
        await migrate(engine)
        _STORES[database_url] = Store(engine)
    return _STORES[database_url]


async def close_stores() -> None:
    for store in _STORES.values():
        await store.close()
        await store.engine.dispose()
    _STORES.clear()


def _libpq(admin_url: str) -> str:
    return admin_url.replace("postgresql+psycopg://", "postgresql://")


def create_scratch_database(admin_url: str, prefix: str) -> tuple[str, str]:
    """A new empty database on the server of ``admin_url``: (its SQLAlchemy URL, its name)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return f"{base}/{name}", name


def drop_scratch_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
