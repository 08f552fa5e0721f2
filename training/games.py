"""The run config of one self-play game on one problem: what `game spc` and campaigns play.

A game needs what the problem knows (its reference answer, a worked solution when there is
one), the player's options, and for a campaign the adapters of the round's model versions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.model_map import ModelRouter
from execution.batches import execute_runs
from execution.runner import RunOutcome, submit_run
from roles.spc import SpcGame
from store.runs import Store
from training.problems import Problem

FILLED_FROM_PROBLEM = ("reference_answer", "solution")


def worked_solution(problem: Problem) -> str | None:
    """A solution the game can rewrite: given in the source, or its steps when all are right."""
    solution = problem.meta.get("solution")
    if isinstance(solution, str) and solution.strip():
        return solution
    steps_correct = problem.first_error_step in (None, -1)
    if problem.solution_steps and steps_correct:
        return "\n\n".join(problem.solution_steps)
    return None


def game_config(
    pattern: str,
    problem: Problem,
    options: dict[str, Any],
    *,
    adapters: dict[str, str] | None = None,
    round_: int | None = None,
) -> dict[str, Any]:
    """The run config of ``pattern`` (spc_game or rlad) for ``problem``."""
    config: dict[str, Any] = {**options, "reference_answer": problem.answer}
    if pattern == "spc_game":
        solution = worked_solution(problem)
        if solution is not None:
            config["solution"] = solution
        if round_ is not None:
            config["round"] = round_
    if adapters:
        config["adapters"] = dict(adapters)
    return config


@dataclass
class PlayedGame:
    """One game's run as it ended, and the game record it stored (none when no game came of
    it: the rewrite was refused, or the run failed)."""

    problem: Problem
    run_id: str
    outcome: RunOutcome
    games: list[SpcGame]


async def play_spc_games(
    store: Store,
    models: ModelRouter,
    database_url: str,
    problems: list[Problem],
    options: dict[str, Any],
    *,
    concurrency: int,
    on_game: Callable[[PlayedGame], None] | None = None,
) -> list[PlayedGame]:
    """One ``spc_game`` run per problem (stored first), played ``concurrency`` at a time."""
    run_ids = [
        await submit_run(store, "spc_game", p.problem, game_config("spc_game", p, options))
        for p in problems
    ]
    by_run = dict(zip(run_ids, problems, strict=True))
    played: dict[str, PlayedGame] = {}

    async def ended(run_id: str, outcome: RunOutcome) -> None:
        game = PlayedGame(by_run[run_id], run_id, outcome, await store.outcomes(run_id, SpcGame))
        played[run_id] = game
        if on_game is not None:
            on_game(game)

    await execute_runs(
        run_ids,
        store=store,
        models=models,
        database_url=database_url,
        concurrency=concurrency,
        on_end=ended,
    )
    return [played[run_id] for run_id in run_ids]
