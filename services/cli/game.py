"""``thinktank game``: self-play games whose records become training data."""

from __future__ import annotations

from typing import TypeVar

import typer
from pydantic import ValidationError
from rich.table import Column, Table

from agents.model_map import ModelRouter
from execution.tracing import configure_tracing
from graphs.patterns import get_pattern
from roles.spc import summarize_games
from services.cli.common import (
    CliError,
    console,
    escape,
    open_store,
    parse_options,
    pattern_options_error,
    run_async,
)
from services.settings import Settings
from training.games import PlayedGame, play_spc_games
from training.problems import load_problems

T = TypeVar("T")


app = typer.Typer(help="Self-play games whose records become training data.")


@app.command(
    "spc",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Game options (--rollouts 8, --round 1, --critic-model critic-0, ...): "
    "`thinktank patterns`, under spc_game.",
)
def game_spc(
    ctx: typer.Context,
    problems: str = typer.Option(
        ..., "--problems", help='JSONL of {"problem", "answer"[, "solution"]}, or a gen: source'
    ),
    games: int = typer.Option(1, "--games", min=1, help="games to play (problems are cycled)"),
    concurrency: int = typer.Option(1, min=1, max=64, help="games played at once"),
) -> None:
    """Play SPC self-play games: a sneaky generator against a step critic, one run per game."""
    settings = Settings()

    async def main() -> None:
        options = parse_options(ctx.args)
        for taken in ("reference_answer", "solution"):
            if taken in options:
                raise CliError(f"--{taken.replace('_', '-')} comes from each problem of --problems")
        loaded = load_problems(problems)
        playable = [p for p in loaded if p.answer]
        if not playable:
            raise CliError(f"{problems}: no problem has a reference answer to play a game on")
        spec = get_pattern("spc_game")
        try:
            spec.config_model.model_validate({**options, "reference_answer": "0"})
        except ValidationError as exc:
            raise pattern_options_error(spec.name, exc) from None
        if len(playable) < len(loaded):
            console.print(f"[dim]skipping {len(loaded) - len(playable)} problems without an answer")
        schedule = [playable[i % len(playable)] for i in range(games)]
        configure_tracing()
        models = ModelRouter(settings.models, on_progress=lambda m: console.print(f"[dim]· {m}"))
        finished = 0

        def show(game: PlayedGame) -> None:
            nonlocal finished
            finished += 1
            outcome = game.outcome
            if game.games:
                g = game.games[0]
                what = (
                    f"{g.result} (critic {g.critic_reward:+d}, sneaky {g.sneaky_reward:+d}; "
                    f"step {g.step_index + 1}/{g.steps_total}, {g.error_type or 'no error type'})"
                )
            elif outcome["status"] == "succeeded":
                what = f"no game ({outcome['stop_reason']})"
            else:
                what = f"[red]{outcome['status']}[/red]: {escape(str(outcome['error']))}"
            console.print(
                f"game {finished}/{games} · {escape(game.problem.id)} · run {game.run_id} · {what}"
            )

        try:
            async with open_store(settings) as store:
                played = await play_spc_games(
                    store,
                    models,
                    settings.database_url,
                    schedule,
                    options,
                    concurrency=concurrency,
                    on_game=show,
                )
        finally:
            await models.close()
        results = [(game.outcome["status"], game.games) for game in played]
        summary = summarize_games(g for _, played in results for g in played)
        failed = sum(status != "succeeded" for status, _ in results)
        table = Table("SPC games", Column("", justify="right"))
        for label, value in (
            ("games played", str(summary.games)),
            ("valid rewrites", str(summary.valid)),
            ("critic wins (error detected)", str(summary.critic_wins)),
            ("sneaky wins (critic fooled)", str(summary.sneaky_wins)),
            ("invalid rewrites", str(summary.invalid)),
            ("unreadable verdicts", str(summary.unparsed)),
            ("runs without a game", str(len(results) - summary.games - failed)),
            ("failed runs", str(failed)),
            ("critic reward", f"{summary.critic_reward:+d}"),
            ("sneaky reward", f"{summary.sneaky_reward:+d}"),
            ("critic reward on original steps", f"{summary.paired_reward:+d}"),
        ):
            table.add_row(label, value)
        console.print(table)
        if failed:
            raise typer.Exit(1)

    run_async(main)
