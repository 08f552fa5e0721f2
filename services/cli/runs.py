"""``thinktank runs``: read stored runs and resume interrupted ones."""

from __future__ import annotations

from typing import TypeVar

import typer

from execution.runner import holder_is_dead, lease_is_live
from graphs.patterns import get_pattern
from services.cli.common import CliError, console, open_store, run_async
from services.cli.console import print_run, print_runs
from services.cli.solve import run_live
from services.settings import Settings
from store.runs import Store

T = TypeVar("T")


app = typer.Typer(help="Read stored runs.", no_args_is_help=True)


@app.command("list")
def runs_list(
    limit: int = typer.Option(20, min=1, max=1000, help="most runs shown, newest first"),
    pattern: str | None = typer.Option(None, help="only this pattern"),
    status: str | None = typer.Option(None, help="queued, running, succeeded, failed, cancelled"),
) -> None:
    """List stored runs, newest first."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            name = get_pattern(pattern).name if pattern else None
            print_runs(console, await store.list_runs(limit=limit, pattern=name, status=status))

    run_async(main)


@app.command("show")
def runs_show(
    run_id: str = typer.Argument(..., help="the run's id (from `runs list`)"),
    as_json: bool = typer.Option(False, "--json", help="print the run and its turns as JSON"),
) -> None:
    """Show a run and every turn: agent, role, model, prompt, completion, parse, tokens, latency."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            run = await store.get_run(run_id)
            turns = await store.turns(run_id)
        print_run(console, run, turns, as_json=as_json)

    run_async(main)


@app.command("resume")
def runs_resume(
    run_id: str = typer.Argument(..., help="a run that was interrupted or failed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only the answer"),
) -> None:
    """Continue a run from its last checkpoint; turns already stored are kept, not re-made."""
    settings = Settings()

    async def main() -> None:
        async def check(store: Store) -> str:
            run = await store.get_run(run_id)
            if run.status == "succeeded":
                raise CliError(f"run {run_id} already succeeded; nothing to resume")
            if lease_is_live(run) and not holder_is_dead(run.lease_owner or ""):
                raise CliError(
                    f"run {run_id} is being executed by {run.lease_owner} (its lease runs "
                    f"until {run.lease_expires_at:%H:%M:%S} UTC); if that process is gone, "
                    "resume after then"
                )
            return run_id

        await run_live(settings, check, quiet=quiet)

    run_async(main)
