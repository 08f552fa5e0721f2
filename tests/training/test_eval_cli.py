"""``thinktank eval`` and ``thinktank eval-critic`` as a user types them, on a scripted model."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from services.cli.eval_progress import ProgressBar
from tests.conftest import run_cli
from training.evaluation import Progress


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    scripted = {
        "backend": "scripted",
        "replies": {
            "solver": ["It is \\boxed{5}"],
            "verifier": ["Paragraph 1 is wrong. \\boxed{1}"],
        },
    }
    return {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path / "home"),
        "THINKTANK_MODELS__DEFAULT": json.dumps(scripted),
        "COLUMNS": "200",
    }


def test_eval_prints_the_table_writes_results_and_a_rerun_resumes(
    env: dict[str, str], tmp_path: Path
) -> None:
    problems = tmp_path / "three.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": i, "problem": f"Problem {i}", "answer": a}) + "\n"
            for i, a in [("a", "5"), ("b", "42"), ("c", "5.0")]
        )
    )
    args = ["eval", "--source", str(problems), "--patterns", "single,self-consistency"]
    args += ["-o", "samples=2", "--name", "demo", "--out", str(tmp_path / "out")]
    result = run_cli(env, *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"demo: 3 problems from {problems}"
    header = ["pattern", "n", "accuracy", "95% CI", "tokens/problem", "wall s/problem"]
    assert re.split(r"\s{2,}", lines[1]) == [*header, "acc/1k tokens", "failed"]
    single, voted = lines[2].split(), lines[3].split()
    assert single[:5] == ["single", "3", "66.7%", "20.8%-93.9%", "3.0"]
    assert voted[:5] == ["self_consistency", "3", "66.7%", "20.8%-93.9%", "6.0"]
    # the vote beside the lone solver, problem by problem: they agree everywhere
    assert lines[4] == "against single, on the problems both finished:"
    paired = re.split(r"\s{2,}", lines[6])
    assert paired == ["self_consistency", "3", "0", "0", "+0.0 pts", "-47.1 to +47.1", "1.000"]
    assert "demo [########################] 6/6 · 4 correct" in result.stderr
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["items"]) == 6 and all(i["run_id"] for i in saved["items"])
    assert (tmp_path / "out" / "accuracy_vs_tokens.png").stat().st_size > 1000

    again = run_cli(env, *args)
    assert again.returncode == 0, again.stderr
    assert "6/6 · 4 correct · 6 done before" in again.stderr
    assert again.stdout.splitlines()[2].split()[:5] == single[:5]
    listed = run_cli(env, "runs", "list", "--limit", "50")
    assert listed.stdout.count("succeeded") == 6  # the rerun made no new run

    refused = run_cli(env, "eval", "--source", "gen:calculus", "--limit", "2")
    assert refused.returncode == 2
    assert "unknown generator 'calculus'" in refused.stdout
    assert "Traceback" not in refused.stderr


def test_eval_critic_prints_processbench_scores(env: dict[str, str], tmp_path: Path) -> None:
    labelled = tmp_path / "gsm8k.jsonl"
    labelled.write_text(
        "".join(
            json.dumps(
                {"id": f"gsm8k-{i}", "problem": "p", "steps": ["a", "b", "c"], "label": label}
            )
            + "\n"
            for i, label in enumerate([1, 2, -1])
        )
    )
    result = run_cli(env, "eval-critic", "--source", str(labelled), "--name", "judge")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"judge: judge verifier (slow) on {labelled}, 3 labelled solutions"
    assert lines[2].split() == ["gsm8k", "3", "2", "50.0", "1", "0.0", "0.0", "0"]
    assert lines[4] == "average F1 over subsets: 0.0"


def test_a_nul_or_a_byte_that_is_not_utf8_stops_eval_naming_the_file_and_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    good = json.dumps({"id": "a", "problem": "Problem a", "answer": "5"}).encode() + b"\n"
    sources = {
        # a raw NUL byte, a NUL escaped as JSON allows (\u0000), a Latin-1 byte
        "raw.jsonl": (good * 2 + b'{"problem": "P\x00b", "answer": "5"}\n', 3),
        "escaped.jsonl": (good + json.dumps({"problem": "P\x00b", "answer": "5"}).encode(), 2),
        "latin1.jsonl": (good + b'{"problem": "caf\xe9", "answer": "5"}\n', 2),
    }
    nul = "contains a NUL character, which a problem cannot hold"
    for name, (content, line) in sources.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = run_cli(env, "eval", "--source", str(path), "--patterns", "single")
        assert result.returncode == 2, result.stdout + result.stderr
        reason = "not UTF-8 text (byte 0xe9); save the file as UTF-8" if "latin" in name else nul
        assert result.stdout.splitlines() == [f"error: {path}:{line}: {reason}"]
        assert "Traceback" not in result.stderr
    critic = run_cli(env, "eval-critic", "--source", str(tmp_path / "latin1.jsonl"))
    assert critic.returncode == 2 and "latin1.jsonl:2: not UTF-8" in critic.stdout
    assert run_cli(env, "runs", "list").stdout.startswith("no runs stored yet")


def test_the_progress_bar_redraws_on_a_terminal_and_prints_lines_elsewhere() -> None:
    def updates(total: int):
        for ended in range(total + 1):
            yield Progress(name="e", total=total, ended=ended, correct=ended // 2)

    log = io.StringIO()
    bar = ProgressBar(log, tty=False)
    for progress in updates(100):
        bar(progress)
    lines = log.getvalue().splitlines()
    assert len(lines) == 21  # every twentieth of the way, start and end included
    assert lines[-1] == "e [########################] 100/100 · 50 correct"

    terminal = io.StringIO()
    bar = ProgressBar(terminal, tty=True)
    for progress in updates(3):
        bar(progress)
    bar.close()
    assert terminal.getvalue().count("\r") == 4 and terminal.getvalue().endswith("\n")
    assert "\n" not in terminal.getvalue()[:-1]
