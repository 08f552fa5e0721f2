"""Round-0 SFT data for SPC and RLAD: what `thinktank data warm-start` writes, read back the way
the roles and `train sft` read it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from agents.backends.scripted import ScriptedBackend
from agents.model import ModelRequest
from agents.model_map import ModelRouter
from roles import rlad, spc
from roles.messages import ChatMessage
from tests.conftest import run_cli
from training.datasets import SFTExample, dataset_hash, read_jsonl
from training.problems import load_problems
from training.sft import check_sft_data
from training.step_errors import step_errors
from training.warm_start import (
    WarmStartConfig,
    WarmStartError,
    WarmStartManifest,
    build_warm_start,
    step_fact,
)


def build(out: Path, models: ModelRouter | None = None, **options: Any) -> WarmStartManifest:
    return asyncio.run(build_warm_start(WarmStartConfig(**options), out, models=models))


def records(path: Path) -> list[SFTExample]:
    return read_jsonl(path, SFTExample)


def user_sections(message: ChatMessage) -> dict[str, str]:
    """The critic's and the sneaky generator's user message, section by section."""
    sections: dict[str, str] = {}
    for block in message.content.split("# ")[1:]:
        title, _, body = block.partition("\n")
        sections[title.strip()] = body.strip()
    return sections


def test_spc_critic_targets_give_the_label_as_the_critic_s_own_verdict(tmp_path: Path) -> None:
    manifest = build(tmp_path, recipe="spc", n=30, seed=3)

    critic = manifest.dataset("critic")
    assert (critic.records, manifest.dataset("sneaky").records) == (60, 30)
    assert check_sft_data(tmp_path / "critic.jsonl") == 60  # what `train sft` reads
    assert critic.data_sha256 == dataset_hash(tmp_path / "critic.jsonl")
    saved = WarmStartManifest.model_validate_json((tmp_path / "manifest.json").read_text())
    assert saved.method == "template" and saved.source == "gen:step-errors?difficulty=2&n=30&seed=3"

    rows = records(tmp_path / "critic.jsonl")
    assert sorted(r.meta["expected"] for r in rows) == ["correct"] * 30 + ["incorrect"] * 30
    for row in rows:
        system, user, reply = row.messages
        assert (system.content, reply.role) == (spc.CRITIC_SYSTEM, "assistant")
        assert spc.parse_critic_verdict(reply.content).verdict == row.meta["expected"]
        # the probe is the generator's labelled step after its correct prefix
        index = int(row.meta["problem_id"].rsplit("-", 1)[1])
        shown = step_errors(index, 2, 3, 1.0 if row.meta["expected"] == "incorrect" else 0.0)
        k = row.meta["step_index"]
        assert shown.first_error_step in (k, -1)
        assert [system, user] == spc.critic_messages(
            shown.problem, shown.solution_steps[:k], shown.solution_steps[k]
        )


def test_spc_sneaky_targets_parse_as_a_rewrite_of_the_original_step(tmp_path: Path) -> None:
    build(tmp_path, recipe="spc", n=30, seed=3, difficulty=4)
    rows = records(tmp_path / "sneaky.jsonl")
    assert len(rows) == 30 and check_sft_data(tmp_path / "sneaky.jsonl") == 30
    for row in rows:
        prompt, reply = row.messages[:-1], row.messages[-1]
        original = row.meta["original_step"]
        sections = user_sections(prompt[1])
        assert sections["Correct Step"].startswith(original)
        rewrite = spc.parse_sneaky_rewrite(reply.content, original)
        assert rewrite.parse_ok, rewrite.parse_error
        assert (rewrite.error_type_id, rewrite.error_type) == (2, "Calculation error")
        # the rewrite is the generator's own slip at that step
        index = int(row.meta["problem_id"].rsplit("-", 1)[1])
        slipped = step_errors(index, 4, 3, 1.0)
        assert slipped.first_error_step == row.meta["step_index"]
        assert rewrite.step == slipped.solution_steps[row.meta["step_index"]] != original
        assert str(row.meta["stated"]) in rewrite.step and str(row.meta["stated"]) in rewrite.plan


def test_problems_a_campaign_evaluates_on_are_left_out(tmp_path: Path) -> None:
    held_out = {p.problem for p in load_problems("gen:step-errors?n=200&seed=1000")}
    manifest = build(tmp_path / "default", recipe="spc", n=200, seed=3, difficulty=2)
    assert manifest.excluded == ["gen:step-errors?n=200&seed=1000"]
    rows = records(tmp_path / "default" / "critic.jsonl")
    assert not {user_sections(r.messages[1])["Problem"] for r in rows} & held_out

    # building from the evaluation's own problems leaves nothing, and says so
    with pytest.raises(WarmStartError, match=r"none of the 5 problems is usable \(excluded 5\)"):
        build(tmp_path / "same", recipe="spc", n=5, seed=1000)


def last_step_recomputed(request: ModelRequest) -> str:
    """A teacher that redoes the last step's computation right and calls every step wrong."""
    fact = step_fact(user_sections(request.messages[1])["Last Step"])
    assert fact is not None
    return f"It computes {fact.expression} = {fact.value()}. <Answer>Incorrect</Answer>"


def test_a_teacher_s_critiques_are_kept_only_when_their_verdict_is_the_label(
    tmp_path: Path,
) -> None:
    """Rejection sampling: a teacher that calls every step wrong keeps only its right calls."""
    teacher = ScriptedBackend({"critic": [last_step_recomputed]})
    manifest = build(
        tmp_path, ModelRouter.single(teacher), recipe="spc", n=10, seed=3, teacher="critic",
        samples=3,
    )  # fmt: skip

    assert manifest.method == "teacher" and manifest.teacher == "critic"
    assert manifest.skipped == {"teacher_wrong_verdict_correct": 10}
    rows = records(tmp_path / "critic.jsonl")
    assert len(rows) == 10 and {r.meta["expected"] for r in rows} == {"incorrect"}
    for row in rows:
        assert spc.parse_critic_verdict(row.messages[-1].content).verdict == "incorrect"
        assert row.messages[-1].content == last_step_recomputed(
            ModelRequest(messages=row.messages[:2])
        )
    calls = teacher.calls("critic")
    assert len(calls) == 20 and {c.params.n for c in calls} == {3}
    assert calls[0].messages == rows[0].messages[:2]
    # the sneaky generator's targets stay the known slips
    assert manifest.dataset("sneaky").records == 10


def test_a_right_verdict_without_the_right_result_is_not_kept(tmp_path: Path) -> None:
    """A critique that never names what the step should compute may have reached its verdict
    by wrong arithmetic: nothing of such a teacher is kept, and the command says why."""
    teacher = ScriptedBackend({"critic": ["It is off by a lot. <Answer>Incorrect</Answer>"]})
    with pytest.raises(WarmStartError) as refused:
        build(tmp_path, ModelRouter.single(teacher), recipe="spc", n=3, seed=3, teacher="t")
    assert str(refused.value).startswith(
        "the teacher 't' got none of the 6 probes right (teacher_misses_result_incorrect 3, "
        "teacher_wrong_verdict_correct 3)"
    )
    assert not (tmp_path / "manifest.json").exists()


def test_rlad_abstractions_follow_the_player_s_format_and_never_leak(tmp_path: Path) -> None:
    manifest = build(tmp_path, recipe="rlad", n=40, seed=3, problems="gen:mixed?difficulty=3")
    rows = records(tmp_path / "abstraction.jsonl")
    assert manifest.dataset("abstraction").records == len(rows) > 0
    assert check_sft_data(tmp_path / "abstraction.jsonl") == len(rows)
    problems = {p.id: p for p in load_problems("gen:mixed?difficulty=3", limit=40, seed=3)}
    for row in rows:
        problem = problems[row.meta["problem_id"]]
        assert row.messages[:-1] == rlad.abstraction_messages(problem.problem)
        parsed = rlad.parse_abstraction(row.messages[-1].content)
        assert parsed.parse_ok and parsed.abstraction
        assert not rlad.check_leak(parsed.abstraction, problem.answer).leaked
    assert "not measured here" in manifest.notes[0]


def test_a_teacher_s_leaking_abstraction_is_dropped(tmp_path: Path) -> None:
    teacher = ScriptedBackend(
        {
            "abstraction_player": [
                "<abstraction>The answer is \\boxed{7}.</abstraction>",
                "<abstraction>Move every term with the unknown to one side first.</abstraction>",
            ]
        }
    )
    manifest = build(
        tmp_path, ModelRouter.single(teacher), recipe="rlad", n=4, seed=3,
        problems="gen:linear?difficulty=1", teacher="abstraction", samples=1, concurrency=1,
        exclude=["gen:linear?n=1&seed=99"],
    )  # fmt: skip
    assert manifest.skipped == {"teacher_leaks_answer": 1}
    rows = records(tmp_path / "abstraction.jsonl")
    assert [rlad.parse_abstraction(r.messages[-1].content).abstraction for r in rows] == [
        "Move every term with the unknown to one side first."
    ] * 3


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "THINKTANK_HOME": str(tmp_path / "home"), "COLUMNS": "200"}


def test_the_command_writes_the_files_and_says_where(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "round0"
    result = run_cli(env, "data", "warm-start", "spc", "--out", str(out), "--n", "12")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "spc warm start (template) from 12 problems of gen:step-errors?difficulty=2&n=12&seed=7 "
        "(skipped: none)",
        f"  critic: 24 records -> {out / 'critic.jsonl'}",
        f"  sneaky: 12 records -> {out / 'sneaky.jsonl'}",
        f"  manifest: {out / 'manifest.json'}",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [d["file"] for d in manifest["datasets"]] == ["critic.jsonl", "sneaky.jsonl"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ppo"], "error: unknown recipe 'ppo'; choose spc or rlad"),
        (["spc", "--n", "0"], "error: --n: Input should be greater than or equal to 1"),
        (["spc", "--difficulty", "7"], "error: --difficulty: Input should be less than or equal"),
        (
            ["rlad", "--problems", "missing.jsonl"],
            "error: --problems 'missing.jsonl': no such file or folder",
        ),
        (
            ["rlad", "--problems", "gen:step-errors?n=3"],
            "error: template abstractions exist for generated problems",
        ),
        (["spc", "--exclude", "gen:nothing"], "error: --exclude 'gen:nothing': unknown generator"),
    ],
)
def test_bad_input_is_refused_in_one_line(
    env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    result = run_cli(env, "data", "warm-start", *args[:1], "--out", str(out), *args[1:])
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.startswith(message), result.stdout
    assert len(result.stdout.strip().splitlines()) == 1
    assert not (out / "manifest.json").exists()


def test_an_output_that_is_a_file_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    result = run_cli(env, "data", "warm-start", "spc", "--out", str(taken))
    assert result.returncode == 2
    assert result.stdout.startswith(f"error: cannot write to {taken}")
