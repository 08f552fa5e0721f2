"""`thinktank data export`: records built from runs played with a scripted backend."""

from __future__ import annotations

import json
import os
from pathlib import Path

from agents.backends.scripted import ScriptedBackend
from roles.rlad import abstraction_messages
from roles.spc import critic_messages, sneaky_messages
from tests.conftest import RunHarness, run_cli
from tests.graphs import test_discussion as discussion
from tests.graphs import test_rlad as rlad
from tests.graphs import test_spc_game as spc
from training.datasets import RLExample, SFTExample, dataset_hash, read_jsonl
from training.export import ExportFilters, export_dataset


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


async def test_spc_critic_and_sneaky_records(harness: RunHarness, tmp_path: Path) -> None:
    run_id, outcome = await harness.run(
        spc.backend(),
        "spc_game",
        spc.PROBLEM,
        reference_answer="10",
        solution=spc.SOLUTION,
        step_index=0,
        rollouts=2,
    )
    assert outcome["answer"] == "critic_detected"

    out = tmp_path / "critic"
    manifest = await export_dataset(harness.store, "spc-critic", ExportFilters(), out)
    records = read_jsonl(out / "data.jsonl", RLExample)
    group = f"{run_id}/game"
    assert [(r.prompt, r.completion, r.reward, r.advantage, r.group_id) for r in records] == [
        (critic_messages(spc.PROBLEM, [], spc.SNEAKY_STEP), spc.DETECTS, 1.0, 1.0, group),
        (critic_messages(spc.PROBLEM, [], spc.STEPS[0]), spc.APPROVES, 1.0, 1.0, group),
    ]
    assert manifest.records == 2 and manifest.source_runs == [run_id]
    assert manifest_of(out)["data_sha256"] == dataset_hash(out / "data.jsonl")
    assert manifest_of(out)["kind"] == "spc-critic"
    assert manifest.files == ["data.jsonl", "data.parquet"]
    import pyarrow.parquet as pq

    assert pq.read_table(out / "data.parquet").column("completion").to_pylist() == [
        spc.DETECTS,
        spc.APPROVES,
    ]

    out = tmp_path / "sneaky"
    await export_dataset(harness.store, "spc-sneaky", ExportFilters(), out)
    [sneaky] = read_jsonl(out / "data.jsonl", RLExample)
    assert sneaky.prompt == sneaky_messages(spc.PROBLEM, [], spc.STEPS[0])
    assert (sneaky.completion, sneaky.reward, sneaky.group_id) == (spc.SNEAKY, -1.0, group)


async def test_an_invalid_rewrite_costs_the_sneaky_and_gives_the_critic_nothing(
    harness: RunHarness, tmp_path: Path
) -> None:
    # The sneaky step still reaches 10: not a real error.
    model = spc.backend(solver=[spc.rollout(original=[spc.RIGHT], sneaky=[spc.RIGHT])])
    await harness.run(
        model,
        "spc_game",
        spc.PROBLEM,
        reference_answer="10",
        solution=spc.SOLUTION,
        step_index=0,
        rollouts=2,
    )
    critic = await export_dataset(harness.store, "spc-critic", ExportFilters(), tmp_path / "c")
    assert critic.records == 0 and critic.skipped == {"invalid_game": 1}
    await export_dataset(harness.store, "spc-sneaky", ExportFilters(), tmp_path / "s")
    [sneaky] = read_jsonl(tmp_path / "s" / "data.jsonl", RLExample)
    assert sneaky.reward == -1.0


async def test_rlad_abstraction_and_solution_records(harness: RunHarness, tmp_path: Path) -> None:
    model = ScriptedBackend(
        {
            "abstraction_player": [rlad.proposal(rlad.FACT, rlad.PROCEDURE)],
            "solution_player": [
                rlad.solver({rlad.FACT: ["42", "41"], rlad.PROCEDURE: ["42"], None: ["13"]})
            ],
        }
    )
    run_id, _ = await harness.run(
        model,
        "rlad",
        rlad.PROBLEM,
        abstractions=2,
        solutions_per_abstraction=2,
        reference_answer="42",
        baseline=True,
    )
    # A run without a reference answer has no rewards: skipped and counted.
    await harness.run(model, "rlad", rlad.PROBLEM, abstractions=2, solutions_per_abstraction=2)

    out = tmp_path / "abs"
    manifest = await export_dataset(harness.store, "rlad-abstraction", ExportFilters(), out)
    records = read_jsonl(out / "data.jsonl", RLExample)
    assert [(r.completion, r.reward, r.group_id) for r in records] == [
        (rlad.FACT, 0.5, run_id),
        (rlad.PROCEDURE, 1.0, run_id),
    ]
    assert records[0].prompt == abstraction_messages(rlad.PROBLEM, 1)
    assert manifest.skipped == {"no_reward": 2} and manifest.source_runs == [run_id]

    out = tmp_path / "sol"
    manifest = await export_dataset(harness.store, "rlad-solution", ExportFilters(), out)
    records = read_jsonl(out / "data.jsonl", RLExample)
    rows = sorted((r.group_id, r.reward, r.advantage, r.completion) for r in records)
    boxed = "Working it out step by step. \\boxed{{{}}}".format
    assert rows == [
        (f"{run_id}/abstraction/0", 0.0, None, boxed("41")),
        (f"{run_id}/abstraction/0", 1.0, None, boxed("42")),
        (f"{run_id}/abstraction/1", 1.0, None, boxed("42")),
        (f"{run_id}/abstraction/1", 1.0, None, boxed("42")),
        (f"{run_id}/baseline", 0.0, 0.0, boxed("13")),
        (f"{run_id}/baseline", 0.0, 0.0, boxed("13")),
    ]
    assert manifest.skipped == {"no_reward": 4}  # the unreferenced run: 2 x 2, no baseline
    assert all(r.prompt[-1].role == "user" for r in records)


async def test_m1_sft_turns_as_chats_and_only_correct(harness: RunHarness, tmp_path: Path) -> None:
    model = discussion.backend(ceo=[discussion.ceo("Stop")], evaluator=[discussion.RIGHT])
    run_id, outcome = await harness.run(model, "discussion", discussion.PROBLEM, max_rounds=1)
    assert outcome["status"] == "succeeded"
    turns = await harness.store.turns(run_id)

    out = tmp_path / "sft"
    manifest = await export_dataset(harness.store, "m1-sft", ExportFilters(), out)
    records = read_jsonl(out / "data.jsonl", SFTExample)
    assert len(records) == len(turns) == manifest.records
    for record, turn in zip(records, turns, strict=True):
        assert [m.model_dump() for m in record.messages[:-1]] == turn.messages
        assert record.messages[-1].model_dump() == {"role": "assistant", "content": turn.completion}

    # No reference answer in the config: --only-correct keeps nothing.
    only = await export_dataset(
        harness.store, "m1-sft", ExportFilters(only_correct=True), tmp_path / "ok"
    )
    assert only.records == 0 and only.skipped == {"not_correct": 1}

    # Two more runs that know the answer, one right and one wrong: only the right one stays.
    right_id, _ = await harness.run(
        model, "discussion", discussion.PROBLEM, max_rounds=1, reference_answer=outcome["answer"]
    )
    await harness.run(
        model, "discussion", discussion.PROBLEM, max_rounds=1, reference_answer="not it"
    )
    only = await export_dataset(
        harness.store, "m1-sft", ExportFilters(only_correct=True), tmp_path / "right"
    )
    assert only.source_runs == [right_id]
    assert only.records == len(await harness.store.turns(right_id))
    assert only.skipped == {"not_correct": 2}


def test_cli_exports_and_refuses_bad_input(tmp_path: Path) -> None:
    env = {**os.environ, "THINKTANK_HOME": str(tmp_path), "COLUMNS": "200"}
    bad = run_cli(env, "data", "export", "--kind", "nope", "--out", str(tmp_path / "o"))
    assert bad.returncode == 2
    assert "unknown kind 'nope'" in bad.stdout and "Traceback" not in bad.stderr

    blocker = tmp_path / "file"
    blocker.write_text("")
    bad = run_cli(env, "data", "export", "--kind", "m1-sft", "--out", str(blocker / "o"))
    assert bad.returncode == 2 and "cannot write to" in bad.stdout

    good = run_cli(env, "data", "export", "--kind", "m1-sft", "--out", str(tmp_path / "o"))
    assert good.returncode == 0, good.stdout + good.stderr
    assert manifest_of(tmp_path / "o")["records"] == 0
