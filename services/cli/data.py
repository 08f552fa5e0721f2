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


@app.command("warm-start")
def data_warm_start(
    recipe: Annotated[
        str,
        typer.Argument(
            help="spc (the critic's and the sneaky generator's) or rlad (the abstraction player's)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="directory for the JSONL files and manifest.json")],
    n: int = typer.Option(200, help="problems to build from"),
    seed: int = typer.Option(7, help="the problems' seed (keep it apart from evaluations')"),
    difficulty: int = typer.Option(2, help="spc: gen:step-errors difficulty (1-5)"),
    problems: str = typer.Option(
        "gen:mixed?difficulty=1", help="rlad: problems with reference answers (file or gen: spec)"
    ),
    teacher: str | None = typer.Option(
        None,
        help="logical model whose replies become the targets, filtered (spc: the critic's, kept "
        "when the verdict equals the label; rlad: abstractions that do not leak); default: "
        "deterministic templates",
    ),
    samples: int = typer.Option(4, help="teacher: samples per item"),
    temperature: float = typer.Option(0.7, help="teacher: sampling temperature"),
    max_tokens: int = typer.Option(512, help="teacher: tokens per sample"),
    concurrency: int = typer.Option(4, help="teacher: calls at once"),
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="problem sources left out, repeatable (default: the campaigns' held-out "
            "evaluation set of the recipe, seed 1000)"
        ),
    ] = None,
) -> None:
    """Write round-0 SFT data (`train sft`'s format) from generated problems: SPC's critic and
    sneaky generator, RLAD's abstraction player."""
    from pydantic import ValidationError
    from rich.console import Console

    from agents.model_map import ModelRouter
    from graphs.options import explain
    from training.warm_start import WarmStartConfig, WarmStartError, build_warm_start

    settings = Settings()
    errors = Console(stderr=True)
    shown = -1

    def progress(done: int, total: int) -> None:
        # a line every twentieth of the way: a long teacher run shows it moves, briefly
        nonlocal shown
        if done * 20 // total != shown or done == total:
            shown = done * 20 // total
            errors.print(f"[dim]· teacher {done}/{total}", highlight=False)

    async def main() -> None:
        if recipe not in ("spc", "rlad"):
            raise CliError(f"unknown recipe {recipe!r}; choose spc or rlad")
        try:
            config = WarmStartConfig(
                recipe=recipe,  # type: ignore[arg-type]
                n=n,
                seed=seed,
                difficulty=difficulty,
                problems=problems,
                teacher=teacher,
                samples=samples,
                temperature=temperature,
                max_tokens=max_tokens,
                concurrency=concurrency,
                exclude=exclude or [],
            )
        except ValidationError as exc:
            raise CliError(explain(exc)) from None
        models = None
        if config.teacher is not None:
            models = ModelRouter(settings.models, on_progress=lambda m: errors.print(f"[dim]· {m}"))
        try:
            manifest = await build_warm_start(
                config,
                out,
                models=models,
                on_progress=progress,
            )
        except WarmStartError as exc:
            raise CliError(str(exc)) from None
        finally:
            if models is not None:
                await models.close()
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(manifest.skipped.items())) or "none"
        console.print(
            f"{recipe} warm start ({manifest.method}) from {manifest.problems} problems of "
            f"{manifest.source} (skipped: {skipped})",
            markup=False,
            soft_wrap=True,
        )
        for item in manifest.datasets:
            console.print(
                f"  {item.role}: {item.records} records -> {out / item.file}", markup=False
            )
        for note in manifest.notes:
            console.print(f"  note: {note}", markup=False, soft_wrap=True)
        console.print(f"  manifest: {out / 'manifest.json'}", markup=False, soft_wrap=True)

    run_async(main)
