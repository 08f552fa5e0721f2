"""Alembic environment: runs on the connection the store hands it, or on $THINKTANK_DATABASE_URL."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from store.db import create_engine, default_database_url
from store.tables.runs import Base

target_metadata = Base.metadata


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_on_database_url() -> None:
    """Run by the alembic command line: the database the service would use by default."""
    engine = create_engine(os.environ.get("THINKTANK_DATABASE_URL") or default_database_url())
    async with engine.begin() as connection:
        await connection.run_sync(run_on)
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_on(connection)
else:
    asyncio.run(run_on_database_url())
