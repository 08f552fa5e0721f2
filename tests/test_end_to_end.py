"""End to end with the real local model: `thinktank solve` stores a complete transcript."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.local_model


def test_a_discussion_on_smollm2_stores_every_turn(tmp_path: Path) -> None:
    env = {**os.environ, "THINKTANK_HOME": str(tmp_path), "COLUMNS": "120"}
    env["THINKTANK_MODELS__DEFAULT"] = '{"backend": "local", "model": "smollm2-135m"}'
    solved = run_cli(
        env,
        "solve",
        "What is 2 + 3?",
        "--pattern", "discussion",
        "--agents", "2",
        "--max-rounds", "1",
        "--max-inner-turns", "0",
        "--token-menu", "[32]",
        "--ceo-max-tokens", "48",
        "--recruiter-max-tokens", "24",
        "--evaluator-max-tokens", "24",
        timeout=900,
    )  # fmt: skip
    assert solved.returncode == 0, solved.stdout + solved.stderr
    assert "CEO decides" in solved.stdout
    run_id = solved.stdout.split("run id:")[1].split()[0]

    shown = run_cli(env, "runs", "show", run_id, "--json")
    run = json.loads(shown.stdout)
    assert run["status"] == "succeeded"
    assert [t["node"] for t in run["turns"]] == ["ceo", "recruit", "solve", "critique", "evaluate"]
    for turn in run["turns"]:
        assert turn["model"] == "smollm2-135m"
        assert turn["completion"].strip(), f"{turn['agent']} said nothing"
        assert 0 < turn["completion_tokens"] <= turn["params"]["max_tokens"]
        assert turn["prompt_tokens"] > 20
        assert turn["latency_ms"] > 0
        assert turn["messages"][0]["role"] == "system"
    assert run["completion_tokens"] == sum(t["completion_tokens"] for t in run["turns"])
