"""LangGraph checkpointers on the store's own database (thread id = run id)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy.engine import make_url

from store.db import check_database_url

if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

_SET_UP: set[str] = set()
_SETUP_LOCK = threading.Lock()


async def _setup_once(saver: BaseCheckpointSaver, database_url: str) -> None:
    """The saver's migrations, once per database and process (they cost tens of ms).

    Runs starting together must not race: the savers' migrations insert their version rows
    without ``ON CONFLICT``, so a second concurrent setup fails on a duplicate key.
    """
    if database_url not in _SET_UP:
        while not _SETUP_LOCK.acquire(blocking=False):
            await asyncio.sleep(0.01)  # another run of this process is setting up
        try:
            if database_url not in _SET_UP:
                for attempt in range(3):
                    try:
                        await saver.setup()
                        break
                    except Exception:
                        # another process set it up at the same moment; its rows now exist
                        if attempt == 2:
                            raise
                        await asyncio.sleep(0.2)
                _SET_UP.add(database_url)
        finally:
            _SETUP_LOCK.release()
    saver.is_setup = True  # the SQLite saver otherwise re-runs its setup on first use


async def _close_sqlite(saver: AsyncSqliteSaver) -> None:
    """Roll back and close the SQLite saver's connection once no query of its is under way.

    LangGraph stores some checkpoint writes from background tasks it does not wait for: a
    cancelled run's error writes for the tasks it cut off are still under way as the run
    ends. One whose INSERT reached the connection between our rollback and our close left a
    transaction the close could not end: SQLite keeps a connection whose statements are not
    all finalized (the write's cursor) as a zombie, write lock held, until that cursor is
    garbage-collected, and every other writer on the file waits on "database is locked".
    Every query of the saver holds its lock, so closing under it lets the write under way
    finish; the writes after it find the connection closed and touch nothing.
    """
    async with saver.lock:
        with contextlib.suppress(Exception):
            await saver.conn.rollback()
        await saver.conn.close()


@asynccontextmanager
async def open_checkpointer(database_url: str) -> AsyncIterator[BaseCheckpointSaver]:
    """The saver for ``database_url``, with its tables created (idempotent)."""
    url = make_url(check_database_url(database_url))
    if url.drivername.startswith("sqlite"):
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        conn = await aiosqlite.connect(url.database or ":memory:", timeout=10)
        saver = AsyncSqliteSaver(conn)
        try:
            # Same durability as the store's own connections (see store.db): a
            # killed process loses nothing, and commits skip the fsync that cost ~5 ms each.
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await _setup_once(saver, database_url)
            yield saver
        finally:
            # A run cancelled between a checkpoint write and its commit leaves a write
            # transaction open, and its lock would stall every other run on the file: roll
            # back and close even while this task is being cancelled.
            await asyncio.shield(_close_sqlite(saver))
        return
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    # The saver speaks libpq URLs, not SQLAlchemy's driver-qualified ones.
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    async with AsyncPostgresSaver.from_conn_string(conninfo) as saver:
        await _setup_once(saver, database_url)
        yield saver
