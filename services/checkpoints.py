"""LangGraph checkpointers on the store's own database (thread id = run id)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy.engine import make_url

from services.store.db import check_database_url


@asynccontextmanager
async def open_checkpointer(database_url: str) -> AsyncIterator[BaseCheckpointSaver]:
    """The saver for ``database_url``, with its tables created (idempotent)."""
    url = make_url(check_database_url(database_url))
    if url.drivername.startswith("sqlite"):
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(url.database or ":memory:") as saver:
            await saver.setup()
            yield saver
        return
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    # The saver speaks libpq URLs, not SQLAlchemy's driver-qualified ones.
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    async with AsyncPostgresSaver.from_conn_string(conninfo) as saver:
        await saver.setup()
        yield saver
