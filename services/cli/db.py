"""``thinktank db``: database maintenance."""

from __future__ import annotations

from typing import TypeVar

import typer

from services.cli.common import console, open_store, run_async
from services.settings import Settings

T = TypeVar("T")


app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the store's tables (every command also does this at start)."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings):
            console.print("database is at the newest schema")

    run_async(main)
