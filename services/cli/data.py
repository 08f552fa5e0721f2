"""``thinktank data``: training data from stored runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

import typer

from services.cli.common import CliError, console, open_store, run_async
from services.settings import Settings

T = TypeVar("T")


app = typer.Typer(help="Training data from stored runs.", no_args_is_help=True)


@app.command("export")
def data_export(
    out: Annotated[Path, typer.Option(help="directory for data.jsonl and manifest.json")],
    kind: str = typer.Option(
        ..., help="spc-critic, spc-sneaky, rlad-abstraction, rlad-solution, m1-sft or verifier"
    ),
    pattern: str | None = typer.Option(None, help="only runs of this pattern"),
    since: str | None = typer.Option(None, help="only runs created on or after (ISO date)"),
    only_correct: bool = typer.Option(
        True,
        "--only-correct/--any-answer",
        help="m1-sft: only runs whose answer matches their reference answer (as M500)",
    ),
    limit: int | None = typer.Option(None, min=1, help="most source runs, newest first"),
    require_consensus: bool = typer.Option(
        True, help="m1-sft: only discussions whose critics all agreed with the last solution"
    ),
    require_format: bool = typer.Option(
        True, help="m1-sft: only turns in their role's format (parsed; solver's \\boxed{})"
    ),
    include_ceo: bool = typer.Option(
        False, "--include-ceo", help="m1-sft: also the CEO's turns (M500 has none)"
    ),
) -> None:
    """Write a training dataset (records the trainers read) from stored runs."""
    from datetime import UTC, datetime

    from training.export import ExportFilters, export_dataset

    settings = Settings()

    async def main() -> None:
        try:
            after = datetime.fromisoformat(since) if since else None
        except ValueError:
            raise CliError(f"--since {since!r} is not an ISO date") from None
        if after is not None and after.tzinfo is None:
            after = after.replace(tzinfo=UTC)
        filters = ExportFilters(
            pattern=pattern,
            since=after,
            only_correct=only_correct,
            limit=limit,
            require_consensus=require_consensus,
            require_format=require_format,
            include_ceo=include_ceo,
        )
        async with open_store(settings) as store:
            manifest = await export_dataset(store, kind, filters, out)
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(manifest.skipped.items())) or "none"
        groups = ""
        if manifest.groups is not None:
            groups = f", {manifest.groups} groups ({manifest.no_signal_groups} without signal)"
        console.print(
            f"{manifest.records} {kind} records from {len(manifest.source_runs)} runs{groups} "
            f"(skipped: {skipped}) -> {out}",
            markup=False,
        )

    run_async(main)
