"""``thinktank eval`` and ``thinktank eval-critic``: compare patterns, score a critic."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from agents.model_map import ModelRouter
from execution.tracing import configure_tracing
from graphs.options import explain
from graphs.patterns import get_pattern
from services.cli.common import CliError, console, open_store, run_async
from services.settings import Settings
from store.runs import Store

T = TypeVar("T")


app = typer.Typer()


async def _run_evaluation(
    settings: Settings, evaluate: Callable[[Store, ModelRouter, Any], Awaitable[T]]
) -> T:
    """Open the store and the models, show a progress bar on stderr, and run ``evaluate``."""
    from services.cli.eval_progress import ProgressBar

    configure_tracing()
    errors = Console(stderr=True)
    models = ModelRouter(settings.models, on_progress=lambda m: errors.print(f"[dim]· {m}"))
    bar = ProgressBar()
    try:
        async with open_store(settings) as store:
            return await evaluate(store, models, bar)
    except asyncio.CancelledError:
        bar.close()
        errors.print(
            "[yellow]interrupted[/yellow]: what finished is stored; run the same command again "
            "to resume"
        )
        raise
    finally:
        bar.close()
        await models.close()


def _evaluation_out(name: str, out: Path | None) -> Path:
    from agents.paths import data_dir

    return out if out is not None else data_dir() / "evaluations" / name


def _unwritable(out: Path | None, exc: OSError) -> CliError:
    # the evaluation itself is stored: rerunning with a writable --out resumes, not redoes, it
    return CliError(
        f"cannot write the results to {out or 'the data dir'}: {exc.strerror or exc}; "
        "the evaluation is stored, rerun with another --out to write them"
    )


def _config_error(exc: ValidationError) -> CliError:
    return CliError(explain(exc))


def _report_end(status: str, pending: int, results: Path) -> None:
    console.print(f"results: {results}", highlight=False)
    console.print(
        "every item names its run: `thinktank runs show RUN_ID` shows its transcript",
        highlight=False,
    )
    if status != "finished":
        console.print(
            f"[yellow]{pending} item(s) did not finish[/yellow]: run the same command again "
            "to finish them"
        )
        raise typer.Exit(1)


@app.command("eval")
def eval_patterns(
    source: str = typer.Option(
        ...,
        "--source",
        help="a problem file or folder (GSM8K, MATH, AIME, problem/answer JSONL) or "
        "gen:KIND[?difficulty=D&n=N&seed=S]",
    ),
    patterns: str = typer.Option(
        "single,self-consistency", "--patterns", help="comma-separated patterns to compare"
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="the first N problems"),
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=256, help="runs at once"),
    budget_tokens: int | None = typer.Option(
        None,
        "--budget-tokens",
        min=1,
        help="generated tokens each pattern may spend on all the problems (equal cost)",
    ),
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="PATTERN.FIELD=VALUE, or FIELD=VALUE for every pattern that has FIELD "
            "(repeatable)",
        ),
    ] = None,
    seed: int = typer.Option(0, "--seed", help="seed of a gen: source"),
    name: str | None = typer.Option(
        None, "--name", help="the evaluation's name; the same name resumes it (default: a hash)"
    ),
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="folder for results.json and the plot (default: under the data dir)"
        ),
    ] = None,
) -> None:
    """Compare patterns on the same problems: accuracy, tokens, time. Rerun to resume."""
    from training.evaluation import (
        EvalConfig,
        evaluate_patterns,
        pattern_options,
        render_paired,
        render_table,
        write_results,
    )

    settings = Settings()

    async def main() -> None:
        names = [get_pattern(p).name for p in patterns.split(",") if p.strip()]
        if not names:
            raise CliError("--patterns names no pattern")
        try:
            config = EvalConfig(
                patterns=names,
                source=source,
                limit=limit,
                seed=seed,
                options=pattern_options(names, option or []),
                budget_tokens=budget_tokens,
                name=name,
                concurrency=concurrency,
            )
        except ValidationError as exc:
            raise _config_error(exc) from None
        summary, items = await _run_evaluation(
            settings,
            lambda store, models, bar: evaluate_patterns(
                store, models, settings.database_url, config, on_progress=bar
            ),
        )
        console.print(render_table(summary), markup=False, highlight=False, soft_wrap=True)
        if summary.paired:
            console.print(render_paired(summary), markup=False, highlight=False, soft_wrap=True)
        try:
            results, plot = write_results(summary, items, _evaluation_out(summary.name, out))
        except OSError as exc:
            raise _unwritable(out, exc) from None
        console.print(f"plot: {plot}", highlight=False)
        _report_end(summary.status, sum(p.pending for p in summary.patterns), results)

    run_async(main)


@app.command("eval-critic")
def eval_critic(
    source: str = typer.Option(
        ...,
        "--source",
        help="a ProcessBench or PRM800K file (or folder) of labelled steps, or "
        "gen:step-errors[?difficulty=D&n=N&seed=S&error_rate=R]",
    ),
    model: str = typer.Option("verifier", "--model", help="logical model name of the judge"),
    mode: str | None = typer.Option(
        None, "--mode", help="slow: critique each step; fast: at once (default slow)"
    ),
    samples: int | None = typer.Option(
        None,
        "--samples",
        min=1,
        max=16,
        help="judgments per item, their majority scored (default 1; 8 with --training-groups)",
    ),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        min=0.0,
        max=2.0,
        help="the judgments' sampling temperature (default 0, greedy; 0.6 with --training-groups)",
    ),
    seed: int | None = typer.Option(
        None,
        "--seed",
        min=0,
        help="judgment i of item j samples with seed + 16 j + i (default: the backend's draw)",
    ),
    training_groups: bool = typer.Option(
        False,
        "--training-groups",
        help="verifier training data as FlexiVe's GRPO samples it: fast mode, 8 judgments per "
        "item (FlexiVe: 14) at temperature 0.6, distinct seeds from 0; `data export --kind "
        "verifier` then groups them",
    ),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="budget of each judgment"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="the first N solutions"),
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=256, help="runs at once"),
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="FIELD=VALUE of the process_judge pattern (repeatable)"
        ),
    ] = None,
    name: str | None = typer.Option(
        None, "--name", help="the evaluation's name; the same name resumes it (default: a hash)"
    ),
    out: Annotated[
        Path | None,
        typer.Option("--out", help="folder for results.json (default: under the data dir)"),
    ] = None,
) -> None:
    """Score a critic the ProcessBench way: earliest wrong step or -1; F1 per subset."""
    from training.critic_eval import (
        JUDGE_PATTERN,
        TRAINING_GROUP_SIZE,
        TRAINING_TEMPERATURE,
        CriticEvalConfig,
        evaluate_critic,
        render_critic_table,
        write_critic_results,
    )
    from training.evaluation import pattern_options

    settings = Settings()

    async def main() -> None:
        options = pattern_options([JUDGE_PATTERN], option or []).get(JUDGE_PATTERN, {})
        judge_mode, judgments = mode or "slow", samples or 1
        if temperature is not None:
            options["temperature"] = temperature
        if seed is not None:
            options["seed"] = seed
        if training_groups:
            # FlexiVe trains the fast mode only, on groups of distinct samples of one prompt
            if mode not in (None, "fast"):
                raise CliError("--training-groups samples the fast mode (FlexiVe trains no other)")
            judge_mode, judgments = "fast", samples or TRAINING_GROUP_SIZE
            options.setdefault("temperature", TRAINING_TEMPERATURE)
            options.setdefault("seed", 0)
            if judgments < 2 or options["temperature"] == 0:
                raise CliError(
                    "--training-groups needs 2 or more samples at a temperature above 0: "
                    "greedy or single judgments give a group nothing to compare"
                )
        try:
            config = CriticEvalConfig(
                source=source,
                judge_model=model,
                mode=judge_mode,
                samples=judgments,
                max_tokens=max_tokens,
                limit=limit,
                options=options,
                name=name,
                concurrency=concurrency,
            )
        except ValidationError as exc:
            raise _config_error(exc) from None
        result, items = await _run_evaluation(
            settings,
            lambda store, models, bar: evaluate_critic(
                store, models, settings.database_url, config, on_progress=bar
            ),
        )
        console.print(render_critic_table(result), markup=False, highlight=False, soft_wrap=True)
        try:
            results = write_critic_results(result, items, _evaluation_out(result.name, out))
        except OSError as exc:
            raise _unwritable(out, exc) from None
        _report_end(result.status, sum(not i.ended for i in items), results)

    run_async(main)
