"""``thinktank solve`` and ``thinktank patterns``: solve a problem live; list the patterns."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from pydantic import ValidationError

from agents.model_map import ModelRouter
from execution.runner import execute_run, submit_run
from execution.tracing import configure_tracing
from graphs.patterns import PATTERNS, get_pattern
from services.cli.common import (
    check_models,
    console,
    open_store,
    parse_options,
    pattern_options_error,
    run_async,
)
from services.cli.console import LivePrinter
from services.settings import Settings
from store.runs import Store

T = TypeVar("T")


app = typer.Typer()


async def run_live(
    settings: Settings, prepare: Callable[[Store], Awaitable[str]], *, quiet: bool
) -> None:
    """Execute the run ``prepare`` names, printing the conversation as it happens."""
    check_models(settings)
    configure_tracing()  # `solve` and `runs resume`: exports only with OTEL_EXPORTER_OTLP_*
    printer = LivePrinter(console, quiet=quiet)
    models = ModelRouter(settings.models, on_progress=printer.progress)
    # the model clients are built while the store opens, not at the run's first call
    warming = asyncio.ensure_future(asyncio.to_thread(models.warm))
    async with open_store(settings) as store:
        await warming
        run_id = await prepare(store)
        run = await store.get_run(run_id)
        store.listeners.append(printer.on_event)
        printer.start(run_id, run.pattern, run.problem)
        try:
            outcome = await execute_run(
                run_id,
                store=store,
                models=models,
                database_url=settings.database_url,
                # only the live printer would read them, and it is silent with --quiet
                stream_tokens=settings.stream_tokens and not quiet,
            )
        finally:
            printer.stop()
            await models.close()
        run = await store.get_run(run_id)
    printer.summary(run)
    if outcome["status"] != "succeeded":
        raise typer.Exit(1)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Pattern options (--agents 3, --max-rounds 3, --samples 8, ...): `thinktank patterns`.",
)
def solve(
    ctx: typer.Context,
    problem: str = typer.Argument(..., help="the problem text"),
    pattern: str = typer.Option("discussion", "--pattern", "-p", help="collaboration pattern"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only the answer"),
) -> None:
    """Solve PROBLEM with a pattern, printing the conversation live, and store the run."""
    settings = Settings()

    async def main() -> None:
        spec = get_pattern(pattern)
        options = parse_options(ctx.args)
        try:
            spec.config_model.model_validate(options)
        except ValidationError as exc:
            raise pattern_options_error(spec.name, exc) from None

        async def submit(store: Store) -> str:
            return await submit_run(store, spec.name, problem, options)

        await run_live(settings, submit, quiet=quiet)

    run_async(main)


@app.command()
def patterns() -> None:
    """List the patterns and every option each one takes."""
    for spec in PATTERNS.values():
        console.print(f"[bold]{spec.name}[/bold]: {spec.summary}")
        for name, field in spec.config_model.model_fields.items():
            if field.is_required():
                default = "required"
            else:
                default = f"default: {json.dumps(field.get_default(call_default_factory=True))}"
            console.print(
                f"  --{name.replace('_', '-'):<22} {field.description or ''} [dim]({default})[/dim]"
            )
