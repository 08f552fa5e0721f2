"""The SPC patterns from the command line, on a scripted model and a fresh data dir."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli

PROBLEM = "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many apples are left?"
SOLUTION = "3 * 4 = 12 apples.\n\n12 - 2 = 10 apples are left.\n\nThe answer is \\boxed{10}."
SNEAKY = "### Error Type: 2. Calculation error\n### Plan: 14\n### Incorrect Step: 3 * 4 = 14."
RIGHT = "So 12 - 2 = 10. \\boxed{10}"
WRONG = "So 14 - 2 = 12. \\boxed{12}"


def scripted_env(tmp_path: Path, replies: dict[str, list[str]]) -> dict[str, str]:
    spec = {"backend": "scripted", "replies": replies}
    return {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path),
        "THINKTANK_MODELS__DEFAULT": json.dumps(spec),
        "COLUMNS": "200",
    }


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text(json.dumps({"problem": PROBLEM, "answer": "10", "solution": SOLUTION}) + "\n")
    return path


def test_game_spc_plays_games_and_prints_a_summary(tmp_path: Path, problems: Path) -> None:
    # Roll-outs start original first: game 1 gets 2 right originals and 2 wrong sneaky ones;
    # game 2 gets only wrong completions (the last reply repeats), so its original fails.
    env = scripted_env(
        tmp_path,
        {
            "solver": [RIGHT, RIGHT, WRONG],
            "sneaky_generator": [SNEAKY],
            "critic": ["The product is wrong. <Answer>Incorrect</Answer>"],
        },
    )
    result = run_cli(
        env, "game", "spc", "--problems", str(problems), "--games", "2",
        "--rollouts", "2", "--step-index", "0", "--round", "3",
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(
        "game 1/2" in line and "critic_detected (critic +1, sneaky -1; step 1/3" in line
        for line in lines
    ), result.stdout
    assert any("game 2/2" in line and "invalid_rewrite" in line for line in lines)
    rows = re.findall(r"^\W*([a-z][a-z ()]+?)\s*│\s*([+-]?\d+)\s*│", result.stdout, re.M)
    assert dict(rows) == {
        "games played": "2",
        "valid rewrites": "1",
        "critic wins (error detected)": "1",
        "sneaky wins (critic fooled)": "0",
        "invalid rewrites": "1",
        "unreadable verdicts": "0",
        "runs without a game": "0",
        "failed runs": "0",
        "critic reward": "+1",
        "sneaky reward": "-2",
        # the critic also called game 1's untouched original step wrong
        "critic reward on original steps": "-1",
    }

    listed = run_cli(env, "runs", "list", "--pattern", "spc-game")
    assert listed.stdout.count("critic_detected") == 1
    assert listed.stdout.count("invalid_rewrite") == 1


def test_game_spc_refuses_bad_input_with_a_message(tmp_path: Path, problems: Path) -> None:
    env = scripted_env(tmp_path, {})
    cases = [
        (["--problems", str(tmp_path / "missing.jsonl")], "no such file"),
        (["--problems", str(problems), "--reference-answer", "3"], "comes from each problem"),
        (["--problems", str(problems), "--rollouts", "0"], "--rollouts"),
        (["--problems", str(problems), "--colour", "red"], "not an option of spc_game"),
    ]
    for args, message in cases:
        result = run_cli(env, "game", "spc", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stdout, result.stdout
        assert "Traceback" not in result.stdout + result.stderr


def test_solve_spc_game_needs_a_reference_answer(tmp_path: Path) -> None:
    result = run_cli(scripted_env(tmp_path, {}), "solve", PROBLEM, "--pattern", "spc-game")
    assert result.returncode == 2
    assert "--reference-answer: Field required" in result.stdout


def test_solve_with_spc_search_shows_the_verdicts(tmp_path: Path) -> None:
    env = scripted_env(
        tmp_path,
        {
            "solver": ["3 * 4 = 14.", "3 * 4 = 12.", "12 - 2 = 10, so \\boxed{10}."],
            "critic": ["<Answer>Incorrect</Answer>", "<Answer>Correct</Answer>"],
        },
    )
    result = run_cli(env, "solve", PROBLEM, "--pattern", "spc-search", "--trajectories", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict=incorrect, action=resample" in result.stdout
    assert "answer: 10" in result.stdout

    patterns = run_cli(env, "patterns")
    assert "--max-retries" in patterns.stdout and "(default: 5)" in patterns.stdout
    assert "--reference-answer" in patterns.stdout and "(required)" in patterns.stdout
