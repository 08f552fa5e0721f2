"""The run config of one self-play game on one problem: what `game spc` and campaigns play.

A game needs what the problem knows (its reference answer, a worked solution when there is
one), the player's options, and for a campaign the adapters of the round's model versions.
"""

from __future__ import annotations

from typing import Any

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
