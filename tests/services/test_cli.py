"""The ``thinktank`` command as a user runs it, on a scripted model and a fresh data dir."""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import run_cli

CEO = (
    "### Decision: <Continue>\n### Recruit Number: 3\n### Direction: be careful\n"
    "### Maximum Tokens: 64"
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    scripted = {
        "backend": "scripted",
        "replies": {
            "ceo": [CEO],
            "recruiter": ["1. A mathematician.\n2. A teacher.\n3. A checker."],
            "solver": ["3 + 4 = 7. \\boxed{7}"],
            "critic": ["Same answer. [Agree]"],
            "evaluator": ["### Correctness: 1\n### Advice: none"],
        },
    }
    return {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path),
        "THINKTANK_MODELS__DEFAULT": json.dumps(scripted),
        "COLUMNS": "120",
    }


def run_id_of(output: str) -> str:
    for line in output.splitlines():
        if "run id:" in line:
            return line.split("run id:")[1].split()[0]
    raise AssertionError(f"no run id in output:\n{output}")


def test_solve_prints_the_conversation_and_stores_it(env: dict[str, str]) -> None:
    result = run_cli(
        env,
        "solve",
        "What is 3+4?",
        "--pattern",
        "discussion",
        "--agents",
        "3",
        "--max-rounds",
        "3",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "CEO decides CONTINUE: 3 experts, 384 tokens each" in out  # 64 snaps to the menu
    assert "critics: 2 agree, 0 disagree" in out
    assert "evaluator: correct → stop (evaluator_correct)" in out
    assert "answer: 7" in out

    run_id = run_id_of(out)
    listed = run_cli(env, "runs", "list")
    assert run_id in listed.stdout and "succeeded" in listed.stdout

    shown = run_cli(env, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)
    assert run["answer"] == "7" and run["pattern"] == "discussion"
    assert [t["role"] for t in run["turns"]] == [
        "ceo",
        "recruiter",
        "solver",
        "critic",
        "critic",
        "evaluator",
    ]
    solver = run["turns"][2]
    assert solver["role_description"] == "A mathematician."
    assert solver["messages"][0]["content"].endswith("What is 3+4?")
    assert solver["params"]["max_tokens"] == 384
    assert solver["completion_tokens"] == 6 and solver["prompt_tokens"] > 0
    assert solver["latency_ms"] >= 0

    pretty = run_cli(env, "runs", "show", run_id)
    assert "Solver" in pretty.stdout and "completion" in pretty.stdout


def test_baselines_run_from_the_command_line(env: dict[str, str]) -> None:
    single = run_cli(env, "solve", "What is 3+4?", "--pattern", "single", "--quiet")
    assert single.returncode == 0 and single.stdout.strip() == "7"

    voted = run_cli(env, "solve", "What is 3+4?", "--pattern", "self-consistency", "--samples", "8")
    assert voted.returncode == 0, voted.stderr
    assert "vote: 7 with" in voted.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["solve", "x", "--pattern", "nope"], "unknown pattern 'nope'"),
        (["solve", "x", "--agents", "99"], "--agents: Input should be less than or equal to 16"),
        (["solve", "x", "--colour", "red"], "--colour is not an option of discussion"),
        (["solve", "x", "--agents"], "option --agents needs a value"),
        (["solve", "   "], "the problem text is empty"),
        (["runs", "show", "doesnotexist"], "no run with id 'doesnotexist'"),
    ],
)
def test_bad_input_gets_a_clear_message_not_a_traceback(
    env: dict[str, str], args: list[str], message: str
) -> None:
    result = run_cli(env, *args)
    assert result.returncode == 2
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_bad_database_url_is_reported(env: dict[str, str]) -> None:
    result = run_cli({**env, "THINKTANK_DATABASE_URL": "mysql://x@y/z"}, "runs", "list")
    assert result.returncode == 2
    assert "unsupported database 'mysql'" in result.stdout


def test_a_model_call_tried_again_is_shown_with_its_reason(env: dict[str, str]) -> None:
    # seed 1: the first call fails, the second does not (failure_rate 0.5)
    flaky = {"backend": "scripted", "default_reply": "\\boxed{7}", "failure_rate": 0.5, "seed": 1}
    result = run_cli(
        {**env, "THINKTANK_MODELS__DEFAULT": json.dumps(flaky)},
        "solve",
        "What is 3+4?",
        "--pattern",
        "single",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Solver: try 1 of 3 failed (ModelError: " in result.stdout
    assert "injected failure" in result.stdout and "trying again in" in result.stdout
    assert "answer: 7" in result.stdout


def test_version_prints_the_installed_package_version(env: dict[str, str]) -> None:
    result = run_cli(env, "--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"thinktank {version('thinktank')}"


def test_independent_critics_without_an_answer_are_counted_apart(env: dict[str, str]) -> None:
    result = run_cli(
        env, "solve", "What is 3+4?", "--pattern", "discussion", "--critic-view", "independent"
    )
    assert result.returncode == 0, result.stderr
    # the scripted critics say "Same answer. [Agree]": no boxed answer of their own
    assert "critics: 0 agree, 0 disagree, 2 without an answer" in result.stdout
    assert "answer: 7" in result.stdout
