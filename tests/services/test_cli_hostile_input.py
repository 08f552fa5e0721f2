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
