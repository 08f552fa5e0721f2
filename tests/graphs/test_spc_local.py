"""One SPC game end to end on the real local model (SmolLM2 on the CPU), with tiny budgets."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.local_model

SOLUTION = "3 * 4 = 12 apples.\n\n12 - 2 = 10 apples are left.\n\nThe answer is \\boxed{10}."
REWARDS = {"critic_detected": (1, -1), "critic_fooled": (-1, 1), "critic_unparsed": (-1, 0)}


def test_a_game_on_smollm2_stores_its_record_and_every_turn(tmp_path: Path) -> None:
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        json.dumps(
            {
                "problem": "Tom has 3 boxes with 4 apples each. He eats 2. How many are left?",
                "answer": "10",
                "solution": SOLUTION,
            }
        )
    )
    # The sneaky generator is scripted (a 135M model rarely follows its format, and a game
    # without a usable rewrite ends before the roll-outs); the solver and the critic are the
    # real model. Thresholds that accept any roll-out outcome make the critic play for sure.
    sneaky = {
        "backend": "scripted",
        "replies": {
            "sneaky_generator": [
                "### Error Type: 2. Calculation error\n### Plan: 14\n### Incorrect Step: "
                "3 * 4 = 14 apples."
            ]
        },
    }
    env = {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path),
        "THINKTANK_MODELS__MODELS": json.dumps({"sneaky": sneaky}),
        "COLUMNS": "120",
    }
    env["THINKTANK_MODELS__DEFAULT"] = '{"backend": "local", "model": "smollm2-135m"}'
    result = run_cli(
        env, "game", "spc", "--problems", str(problems), "--games", "1",
        "--step-index", "0", "--rollouts", "2", "--rollout-max-tokens", "24",
        "--critic-max-tokens", "32", "--min-original-success", "0",
        "--max-sneaky-success", "1",
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "games played" in result.stdout

    with sqlite3.connect(tmp_path / "thinktank.db") as db:
        db.row_factory = sqlite3.Row
        [game] = db.execute("SELECT * FROM spc_games").fetchall()
        turns = db.execute(
            "SELECT key, role, model, completion, completion_tokens, params FROM turns "
            "WHERE run_id = ? ORDER BY id",
            (game["run_id"],),
        ).fetchall()

    assert game["valid"] and game["sneaky_step"] == "3 * 4 = 14 apples."
    assert game["sneaky_model"] == "scripted"
    assert game["critic_model"] == "smollm2-135m"
    assert len(json.loads(game["original_answers"])) == 2
    assert len(json.loads(game["sneaky_answers"])) == 2
    assert (game["critic_reward"], game["sneaky_reward"]) == REWARDS[game["result"]]

    keys = [t["key"] for t in turns]
    assert sorted(k for k in keys if k.startswith("rollout/")) == [
        "rollout/original/0",
        "rollout/original/1",
        "rollout/sneaky/0",
        "rollout/sneaky/1",
    ]
    assert {"critic/sneaky", "critic/original"} <= set(keys)
    for turn in turns:
        if turn["role"] == "sneaky_generator":
            continue
        assert turn["model"] == "smollm2-135m"
        assert turn["completion"].strip(), f"{turn['key']} said nothing"
        assert 0 < turn["completion_tokens"] <= json.loads(turn["params"])["max_tokens"]
