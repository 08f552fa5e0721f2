"""What every ``thinktank`` command shares: the console, one-line errors, the store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TypeVar

import typer
from rich.console import Console

from execution.runner import RunInterrupted
from graphs.patterns import UnknownPattern
from services.settings import Settings
from store.campaigns import CampaignNotFound
from store.db import DatabaseURLError, create_engine, migrate
from store.runs import RunNotFound, Store

console = Console()
T = TypeVar("T")


def when(moment: datetime | None) -> str:
    """A stored time as tables show it; empty when it has not happened."""
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(main())
    except (
        CliError,
        CampaignNotFound,
        DatabaseURLError,
        RunNotFound,
        UnknownPattern,
        ValueError,
    ) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)  # one line, however narrow
        raise typer.Exit(2) from None
    except RunInterrupted as exc:
        console.print(
            f"[red]error:[/red] {exc}\nThe run keeps its stored turns; "
            "`thinktank runs resume RUN_ID` continues it once the database is back."
        )
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: the run keeps its stored turns")
        raise typer.Exit(130) from None


@asynccontextmanager
async def open_store(settings: Settings):
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
    except Exception as exc:
        await engine.dispose()
        raise CliError(f"cannot open the database {engine.url!r}: {exc}") from exc
    store = Store(engine)
    try:
        yield store
    finally:
        await store.close()
        await engine.dispose()
