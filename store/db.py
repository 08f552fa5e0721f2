"""Engines and schema migrations for the store, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import select
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from agents.paths import data_dir

MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseURLError(ValueError):
    pass


def default_database_url() -> str:
    """The embedded store: a SQLite file in the data directory."""
    return f"sqlite+aiosqlite:///{data_dir() / 'thinktank.db'}"


def check_database_url(url: str) -> str:
    """Accept the async drivers the store runs on; say clearly what else to write."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise DatabaseURLError(f"not a database URL: {url!r}") from exc
    if parsed.drivername in ("sqlite", "sqlite+aiosqlite"):
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if parsed.drivername in ("postgresql", "postgresql+psycopg", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise DatabaseURLError(
        f"unsupported database {parsed.drivername!r}: use sqlite+aiosqlite:///FILE "
        "or postgresql+psycopg://USER@HOST/DB"
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while a worker writes; NORMAL sync is durable across process
    # kills (not power loss), which is what "a killed worker loses nothing" asks.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    url = check_database_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # Kept open: as many connections as the widest fan-out writes at once (RLAD's K x M = 16
    # turns of one step), since opening one costs ~15 ms; up to the largest configurable
    # fan-out (64 samples) beyond that.
    engine = create_async_engine(url, pool_size=16, max_overflow=48)
    event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection the server has closed (a restart) is replaced before it is used.

    Instead of ``pool_pre_ping``'s round trip on every checkout: an idle connection has
    nothing to read, so a readable socket means the server hung up or said it would
    (PostgreSQL's "terminating connection" notice). A connection that dies unnoticed still
    fails its statement as invalidated, which every store write retries.
    """
    connection = dbapi_connection.driver_connection
    if connection.closed or select.select([connection.fileno()], [], [], 0)[0]:
        raise DisconnectionError("the server closed the connection")


def sync_twin(engine: AsyncEngine) -> Engine:
    """A synchronous engine on the same SQLite file (plain sqlite3), with the same pragmas."""
    url = engine.url.set(drivername="sqlite")
    twin = sqlalchemy.create_engine(url, pool_size=1, max_overflow=0)
    event.listen(twin, "connect", _sqlite_pragmas)
    return twin


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


# Any fixed number, the same in every process: the key of the advisory lock migrations hold.
MIGRATION_LOCK = 0x7468696E6B


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Processes that start together on a new database (a worker and the CLI) would each
        # create the tables, and the second fails on PostgreSQL's catalog (pg_type's unique
        # index). One at a time instead: the lock is held until this transaction commits, and
        # whoever waited then finds the schema at head.
        connection.execute(
            sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
        )
    command.upgrade(alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (idempotent; run at every start)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


def is_transient(exc: BaseException) -> bool:
    """Whether a database error may go away by waiting: a lost or refused connection, a
    server restarting, a locked SQLite file. Not a schema or constraint error."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)
    if _is_psycopg_connection_error(exc):
        return True
    if isinstance(exc, InterfaceError):
        return True
    if isinstance(exc, OperationalError):
        message = str(exc.orig).lower()
        return not any(word in message for word in ("no such table", "no such column", "syntax"))
    return False


def _is_psycopg_connection_error(exc: BaseException) -> bool:
    """The checkpointer talks to PostgreSQL through psycopg directly, not SQLAlchemy."""
    try:
        import psycopg
    except ImportError:  # the postgres extra is not installed: no such errors
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
