"""LangGraph checkpointers on the store's own database (thread id = run id)."""

from __future__ import annotations

import asyncio
import contextlib
import select
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy.engine import make_url

from store.db import check_database_url

if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from psycopg import AsyncConnection

# Connections the PostgreSQL savers of one event loop reuse: opening one costs ~15 ms, more
# than a whole step's checkpoint. A run borrows one for its whole execution, as it had one of
# its own before, and a saver of its own (a saver serializes its queries behind one lock).
# Not psycopg_pool's pool: its background tasks survive a loop's cancelling of its tasks at
# shutdown, so every ``asyncio.run`` that used one would hang there. Kept per loop: psycopg's
# connections belong to the loop that opened them (tests run one loop each).
MAX_IDLE = 32
_IDLE: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, list[AsyncConnection]]] = (
    weakref.WeakKeyDictionary()
)
_KEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = (
    weakref.WeakKeyDictionary()
)

_SET_UP: set[str] = set()
_SETUP_LOCK = threading.Lock()


async def _keep_idle() -> AsyncGenerator[None, None]:
    """Closes the loop's idle connections as the loop shuts down: ``asyncio.run`` and every
    other runner close the async generators still suspended in their loop, as this one is."""
    try:
        yield
    finally:
        for idle in _IDLE.pop(asyncio.get_running_loop(), {}).values():
            for conn in idle:
                with contextlib.suppress(Exception):
                    await conn.close()


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


def settle_first(saver: BaseCheckpointSaver, settle: Callable[[], Awaitable[None]]) -> None:
    """Make ``saver`` await ``settle`` before it writes anything: a run's recorder commits its
    turns behind the run (``store.run_recorder``), and a checkpoint must not be on disk ahead
    of the turns it was made from, or a run killed between the two would resume past turns
    it never stored. Wrapped on the instance, so the saver classes stay imported lazily."""
    put, put_writes = saver.aput, saver.aput_writes

    async def aput(*args: Any, **kwargs: Any) -> Any:
        await settle()
        return await put(*args, **kwargs)

    async def aput_writes(*args: Any, **kwargs: Any) -> None:
        await settle()
        await put_writes(*args, **kwargs)

    saver.aput = aput  # type: ignore[method-assign]
    saver.aput_writes = aput_writes  # type: ignore[method-assign]


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

    conn = await _borrow(database_url)
    saver = AsyncPostgresSaver(conn=conn)
    try:
        await _setup_once(saver, database_url)
        yield saver
    finally:
        await asyncio.shield(_give_back(database_url, saver, conn))


async def _borrow(database_url: str) -> AsyncConnection:
    """An idle connection to ``database_url`` the server has not closed, or a new one."""
    from psycopg import AsyncConnection
    from psycopg.rows import dict_row

    loop = asyncio.get_running_loop()
    if loop not in _KEEPERS:
        keeper = _keep_idle()
        await anext(keeper)
        _KEEPERS[loop] = keeper
    idle = _IDLE.setdefault(loop, {}).setdefault(database_url, [])
    while idle:
        conn = idle.pop()
        if _usable(conn):
            return conn
        with contextlib.suppress(Exception):
            await conn.close()
    # The saver speaks libpq URLs, not SQLAlchemy's driver-qualified ones.
    url = make_url(check_database_url(database_url))
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    # as AsyncPostgresSaver.from_conn_string connects
    return await AsyncConnection.connect(
        conninfo, autocommit=True, prepare_threshold=0, row_factory=dict_row
    )


def _usable(conn: AsyncConnection) -> bool:
    """Whether an idle connection is still open, judged without a round trip: an idle
    connection has nothing to read, so a readable socket means the server hung up or said it
    would (PostgreSQL's "terminating connection" notice on a restart)."""
    from psycopg.pq import TransactionStatus

    if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    return not select.select([conn.fileno()], [], [], 0)[0]


async def _give_back(database_url: str, saver: BaseCheckpointSaver, conn: AsyncConnection) -> None:
    """Return the run's connection for the next run, or close it if it is not clean.

    Taken under the saver's lock, so a query of the run under way ends first; a write the
    graph left running in the background after that finds the saver without a connection
    (as it found the connection closed before) and cannot touch the next run's.
    """
    async with saver.lock:  # type: ignore[attr-defined]
        saver.conn = None  # type: ignore[attr-defined]
        idle = _IDLE.get(asyncio.get_running_loop(), {}).setdefault(database_url, [])
        if _usable(conn) and len(idle) < MAX_IDLE:
            idle.append(conn)
            return
        with contextlib.suppress(Exception):
            await conn.close()


async def close_checkpointers() -> None:
    """Close this loop's idle checkpointer connections now, not at the loop's end."""
    keeper = _KEEPERS.pop(asyncio.get_running_loop(), None)
    if keeper is not None:
        await keeper.aclose()
