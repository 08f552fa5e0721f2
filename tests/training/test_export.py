"""`thinktank data export`: records built from runs played with a scripted backend."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agents.backends.scripted import ScriptedBackend
from agents.calls import TurnRecord
from agents.model import ModelRequest, ModelResponse
from agents.model_map import ModelRouter
from execution.runner import submit_run
from roles.rlad import RladAbstraction, abstraction_messages
from roles.sdv import verifier_messages
from roles.spc import critic_messages, sneaky_messages
from tests.conftest import RunHarness, run_cli
from tests.graphs import test_discussion as discussion
from tests.graphs import test_rlad as rlad
from tests.graphs import test_spc_game as spc
from tests.training import test_critic_eval as critic_eval
from training.critic_eval import CriticEvalConfig, evaluate_critic
from training.datasets import RLExample, SFTExample, dataset_hash, read_jsonl
from training.export import (
    ExportFilters,
    export_dataset,
    group_signal,
    verifier_length_penalty,
    verifier_reward,
)


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


async def play_spc_game(harness: RunHarness, model: Any) -> tuple[str, Any]:
    """One SPC game on the shared problem, its step 0 attacked, two rollouts a side."""
    return await harness.run(
        model,
        "spc_game",
        spc.PROBLEM,
        reference_answer="10",
        solution=spc.SOLUTION,
        step_index=0,
        rollouts=2,
    )


async def test_spc_critic_and_sneaky_records(harness: RunHarness, tmp_path: Path) -> None:
    run_id, outcome = await play_spc_game(harness, spc.backend())
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
    assert (manifest.groups, manifest.no_signal_groups) == (1, 0)  # the raw +-1 advantage
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
    await play_spc_game(harness, model)
    critic = await export_dataset(harness.store, "spc-critic", ExportFilters(), tmp_path / "c")
    assert critic.records == 0 and critic.skipped == {"invalid_game": 1}
    await export_dataset(harness.store, "spc-sneaky", ExportFilters(), tmp_path / "s")
    [sneaky] = read_jsonl(tmp_path / "s" / "data.jsonl", RLExample)
    assert sneaky.reward == -1.0


async def test_rlad_abstraction_and_solution_records(harness: RunHarness, tmp_path: Path) -> None:
    model = ReportsTokens(
        ScriptedBackend(
            {
                "abstraction_player": [rlad.proposal(rlad.FACT, rlad.PROCEDURE)],
                "solution_player": [
                    rlad.solver({rlad.FACT: ["42", "41"], rlad.PROCEDURE: ["42"], None: ["13"]})
                ],
            }
        )
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
    tagged = "<abstraction>{}</abstraction>".format
    assert [(r.completion, r.reward, r.group_id) for r in records] == [
        (tagged(rlad.FACT), 0.5, run_id),
        (tagged(rlad.PROCEDURE), 1.0, run_id),
    ]
    # each abstraction is trained on exactly the prompt and tokens of the sample that wrote it
    turns = {turn.key: turn for turn in await harness.store.turns(run_id)}
    for record, key in zip(records, ["abstraction/0", "abstraction/1"], strict=True):
        turn = turns[key]
        assert record.prompt == abstraction_messages(rlad.PROBLEM)
        assert [m.model_dump() for m in record.prompt] == turn.messages
        assert record.completion_token_ids == turn.completion_token_ids
        assert record.old_logprobs == turn.completion_logprobs
        assert record.completion_token_ids and not record.truncated
        assert record.id == f"{run_id}/{key}" and record.meta["turn"] == key
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


async def test_rlad_abstractions_written_k_in_one_reply_are_skipped_not_trained_off_policy(
    harness: RunHarness, tmp_path: Path
) -> None:
    """A run stored before the abstraction player was sampled once per abstraction: one turn
    wrote all K, so no sampled turn is any one abstraction's."""
    run_id = await submit_run(harness.store, "rlad", rlad.PROBLEM, {"reference_answer": "42"})
    await harness.store.record_turn(
        TurnRecord(
            run_id=run_id,
            key="abstractions",
            node="propose",
            agent="Abstraction player",
            role="abstraction_player",
            model="m",
            messages=abstraction_messages(rlad.PROBLEM),
            completion="\n".join(
                f"<abstraction>{a}</abstraction>" for a in (rlad.FACT, rlad.PROCEDURE)
            ),
            finish_reason="stop",
        )
    )
    for index, text in enumerate([rlad.FACT, rlad.PROCEDURE]):
        await harness.store.record_outcome(
            run_id,
            RladAbstraction(
                key=f"abstraction/{index}",
                problem=rlad.PROBLEM,
                abstraction_index=index,
                abstraction=text,
                reference_answer="42",
                reward=0.5,
            ),
        )

    await harness.store.finish_run(run_id, status="succeeded", answer="42")

    out = tmp_path / "abs"
    manifest = await export_dataset(harness.store, "rlad-abstraction", ExportFilters(), out)
    assert manifest.records == 0 and (out / "data.jsonl").read_text() == ""
    assert manifest.skipped == {"k_abstractions_in_one_reply": 2}


async def test_m1_sft_keeps_correct_runs_and_m500_roles_as_chats(
    harness: RunHarness, tmp_path: Path
) -> None:
    model = discussion.backend(ceo=[discussion.ceo("Stop")], evaluator=[discussion.RIGHT])
    run_id, outcome = await harness.run(model, "discussion", discussion.PROBLEM, max_rounds=1)
    assert outcome["status"] == "succeeded"
    turns = await harness.store.turns(run_id)
    ceo_turns = sum(turn.role == "ceo" for turn in turns)
    assert ceo_turns == 1

    # No reference answer in the config: by default (M500 keeps correct traces) nothing stays.
    default = await export_dataset(harness.store, "m1-sft", ExportFilters(), tmp_path / "d")
    assert default.records == 0 and default.skipped == {"no_reference": 1}
    assert default.groups is None  # SFT data has no groups

    # --any-answer and --include-ceo: every turn, as the chat the agent saw and answered.
    out = tmp_path / "sft"
    manifest = await export_dataset(
        harness.store, "m1-sft", ExportFilters(only_correct=False, include_ceo=True), out
    )
    records = read_jsonl(out / "data.jsonl", SFTExample)
    assert len(records) == len(turns) == manifest.records
    for record, turn in zip(records, turns, strict=True):
        assert [m.model_dump() for m in record.messages[:-1]] == turn.messages
        assert record.messages[-1].model_dump() == {"role": "assistant", "content": turn.completion}

    # Without --include-ceo, the recruiter's, solver's, critics' and evaluator's turns only.
    manifest = await export_dataset(
        harness.store, "m1-sft", ExportFilters(only_correct=False), tmp_path / "roles"
    )
    records = read_jsonl(tmp_path / "roles" / "data.jsonl", SFTExample)
    assert {r.meta["role"] for r in records} == {"recruiter", "solver", "critic", "evaluator"}
    assert manifest.records == len(turns) - ceo_turns
    assert manifest.skipped == {"not_an_m500_role": ceo_turns}

    # Two more runs that know the answer, one right and one wrong: only the right one stays.
    right_id, _ = await harness.run(
        model, "discussion", discussion.PROBLEM, max_rounds=1, reference_answer=outcome["answer"]
    )
    await harness.run(
        model, "discussion", discussion.PROBLEM, max_rounds=1, reference_answer="not it"
    )
    only = await export_dataset(harness.store, "m1-sft", ExportFilters(), tmp_path / "right")
    assert only.source_runs == [right_id]
    assert only.records == len(await harness.store.turns(right_id)) - ceo_turns
    assert only.skipped == {"no_reference": 1, "not_correct": 1, "not_an_m500_role": ceo_turns}


class ReportsTokens:
    """A scripted model whose completions also report their tokens, one id and log-prob per
    word (the scripted backend counts a word as a token), as the local backend reports its
    own; ids are numbered across calls so every turn's differ."""

    def __init__(self, inner: ScriptedBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.next_id = 100

    async def generate(self, request: ModelRequest, **kwargs: Any) -> ModelResponse:
        response = await self.inner.generate(request, **kwargs)
        for completion in response.completions:
            count = completion.completion_tokens
            completion.token_ids = list(range(self.next_id, self.next_id + count))
            completion.token_logprobs = [-(i + 1) / 8 for i in range(count)]
            self.next_id += count
        return response

    async def close(self) -> None:
        await self.inner.close()


async def test_rl_records_carry_the_sampled_tokens_and_logprobs(
    harness: RunHarness, tmp_path: Path
) -> None:
    model = ReportsTokens(spc.backend())
    run_id, _ = await play_spc_game(harness, model)
    turns = {turn.key: turn for turn in await harness.store.turns(run_id)}

    out = tmp_path / "critic"
    await export_dataset(harness.store, "spc-critic", ExportFilters(), out)
    records = read_jsonl(out / "data.jsonl", RLExample)
    assert [r.completion for r in records] == [spc.DETECTS, spc.APPROVES]
    for record in records:
        turn = turns[record.meta["turn"]]
        assert turn.completion_token_ids and turn.completion_logprobs
        assert record.completion_token_ids == turn.completion_token_ids
        assert record.old_logprobs == turn.completion_logprobs
        assert len(record.completion_token_ids) == len(spc.DETECTS.split())
    import pyarrow.parquet as pq

    table = pq.read_table(out / "data.parquet")
    assert table.column("completion_token_ids").to_pylist() == [
        r.completion_token_ids for r in records
    ]

    await export_dataset(harness.store, "spc-sneaky", ExportFilters(), tmp_path / "sneaky")
    [sneaky] = read_jsonl(tmp_path / "sneaky" / "data.jsonl", RLExample)
    assert sneaky.completion_token_ids == turns[sneaky.meta["turn"]].completion_token_ids
    assert sneaky.old_logprobs is not None


class EndsAs(ReportsTokens):
    """Reports no tokens, and a role's completions end the given way instead of by stopping."""

    def __init__(self, inner: ScriptedBackend, role: str, finish: str) -> None:
        super().__init__(inner)
        self.role, self.finish = role, finish

    async def generate(self, request: ModelRequest, **kwargs: Any) -> ModelResponse:
        response = await self.inner.generate(request, **kwargs)
        if request.tags.get("role") == self.role:
            for completion in response.completions:
                completion.finish_reason = self.finish
        return response


async def test_only_a_reply_the_model_ended_itself_is_trained_with_an_end_of_turn(
    harness: RunHarness, tmp_path: Path
) -> None:
    """Without sampled ids the trainer tokenizes the text, and appends the end-of-turn token
    unless the record says the reply was cut off: by its token limit, or halted."""
    for finish in ("length", "cancelled"):
        await play_spc_game(harness, EndsAs(spc.backend(), "sneaky_generator", finish))
    await export_dataset(harness.store, "spc-sneaky", ExportFilters(), tmp_path / "sneaky")
    sneaky = read_jsonl(tmp_path / "sneaky" / "data.jsonl", RLExample)
    assert [(r.completion_token_ids, r.truncated) for r in sneaky] == [(None, True), (None, True)]
    await export_dataset(harness.store, "spc-critic", ExportFilters(), tmp_path / "critic")
    critic = read_jsonl(tmp_path / "critic" / "data.jsonl", RLExample)
    assert critic and not any(r.truncated for r in critic)


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


def two_judges(request: ModelRequest) -> str:
    """Judge 0 finds the egg error, names the wrong step of the power error and gives no index
    for 3^2; judge 1 always blames the first step."""
    prompt = request.messages[-1].content
    if request.tags["agent"] == "Judge 1":
        return "The first paragraph is wrong. \\boxed{0}"
    if "6 + 5 = 11" in prompt:
        return "Paragraph 1 adds instead of multiplying. \\boxed{1}"
    if "2^5" in prompt:
        return "The conclusion repeats a wrong value. \\boxed{1}"
    if "3^2" in prompt:
        return "Looks fine to me."
    return "Every paragraph checks out. \\boxed{-1}"


def test_flexive_length_shaping_wants_a_short_ok_and_a_medium_error_report() -> None:
    # a correct solution (-1): free up to 50 tokens, then 0.01 a token up to 1
    assert [verifier_length_penalty(n, -1) for n in (5, 50, 100, 150, 400)] == [
        0.0,
        0.0,
        -0.5,
        -1.0,
        -1.0,
    ]
    # an erroneous one: free from 50 to 512 tokens, 0.02 a token short of 50, 1/512 beyond 512
    assert [verifier_length_penalty(n, 2) for n in (0, 25, 50, 512, 768, 2000)] == [
        -1.0,
        -0.5,
        0.0,
        0.0,
        -0.5,
        -1.0,
    ]
    assert verifier_reward(2, 2, 100) == 1.0 and verifier_reward(0, 2, 25) == 0.0
    assert verifier_reward(None, -1, 150) == -1.0


def test_groups_whose_advantage_is_zero_are_counted_as_without_signal() -> None:
    def record(group: str, reward: float, advantage: float | None = None) -> RLExample:
        prompt = verifier_messages("2+2?", ["4"], "fast")
        return RLExample(
            prompt=prompt, completion="-1", reward=reward, group_id=group, advantage=advantage
        )

    records = [
        *[record("mixed", r) for r in (0.0, 1.0)],  # rewards differ: something to compare
        *[record("alike", r) for r in (1.0, 1.0)],  # all equal: advantage 0 for each
        record("alone", 1.0),  # a group of one (a greedy judgment) has nothing to compare
        *[record("bare", r, advantage=0.0) for r in (0.0, 1.0)],  # RLAD's bare prompts: 0
        *[record("game", 1.0, advantage=1.0) for _ in range(2)],  # SPC's raw +-1 outcome
    ]
    assert group_signal(records) == (5, 3)


async def test_verifier_records_are_fast_judgments_grouped_per_run_with_flexive_rewards(
    harness: RunHarness, tmp_path: Path
) -> None:
    labelled = tmp_path / "processbench.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in critic_eval.RECORDS))
    backend = ScriptedBackend({"verifier": [two_judges]})
    # Fast mode, two sampled judgments per solution: the groups FlexiVe's GRPO compares.
    _, items = await evaluate_critic(
        harness.store,
        ModelRouter.single(backend),
        harness.database_url,
        CriticEvalConfig(
            source=str(labelled),
            name="pb",
            mode="fast",
            samples=2,
            options={"temperature": 0.6, "seed": 0},
            concurrency=1,
        ),
    )
    # The same solutions judged in slow mode: FlexiVe trains no slow judgment.
    await evaluate_critic(
        harness.store,
        ModelRouter.single(backend),
        harness.database_url,
        CriticEvalConfig(source=str(labelled), name="pb-slow", concurrency=1),
    )
    # A judge run nobody labelled (solved on its own) gives no record.
    await harness.run(
        ScriptedBackend({"verifier": ["\\boxed{-1}"]}),
        "process_judge",
        "2+2?",
        steps=["4"],
        mode="fast",
    )

    out = tmp_path / "verifier"
    manifest = await export_dataset(harness.store, "verifier", ExportFilters(), out)
    records = read_jsonl(out / "data.jsonl", RLExample)
    got = sorted(
        (
            r.meta["problem_id"],
            r.meta["turn"],
            r.meta["label"],
            r.meta["predicted"],
            r.meta["completion_tokens"],
            r.reward,
        )
        for r in records
    )
    # accuracy (1 the labelled step, 0.5 the right verdict elsewhere, 0 otherwise) plus the
    # length penalty: none for a short "no error", (50 - L) / 50 for an error named in L < 50
    assert got == [
        ("gsm8k-0", "judge/0", -1, -1, 5, 1.0),  # no error, and none found
        ("gsm8k-0", "judge/1", -1, 0, 6, 0.0),  # a correct solution flagged
        ("gsm8k-1", "judge/0", 1, 1, 7, pytest.approx(1.0 - 43 / 50)),  # the labelled step
        ("gsm8k-1", "judge/1", 1, 0, 6, pytest.approx(0.5 - 44 / 50)),  # an error, elsewhere
        ("math-0", "judge/0", 0, 1, 7, pytest.approx(0.5 - 43 / 50)),
        ("math-0", "judge/1", 0, 0, 6, pytest.approx(1.0 - 44 / 50)),
        ("math-1", "judge/0", -1, None, 4, 0.0),  # no index at all
        ("math-1", "judge/1", -1, 0, 6, 0.0),
    ]
    runs = {i.problem_id: i.run_id for i in items}
    for record in records:
        problem = next(r for r in critic_eval.RECORDS if r["id"] == record.meta["problem_id"])
        assert record.prompt == verifier_messages(problem["problem"], problem["steps"], "fast")
        assert record.meta["run_id"] == runs[problem["id"]]
        assert record.id == f"{runs[problem['id']]}/{record.meta['turn']}"
        assert record.meta["evaluation"] == "pb" and record.meta["mode"] == "fast"
        assert record.reward == pytest.approx(
            record.meta["accuracy"] + record.meta["length_penalty"]
        )
        # the group is the run: one model's samples of one prompt
        assert record.group_id == f"{problem['id']}/{runs[problem['id']]}"
        assert record.completion == two_judges(
            ModelRequest(
                messages=record.prompt,
                tags={"agent": "Judge 1" if record.meta["turn"] == "judge/1" else "Judge 0"},
            )
        )
    # the two judgments were drawn with distinct seeds (the second solution's: 16 + i)
    turns = await harness.store.turns(runs["gsm8k-1"])
    assert sorted(t.params["seed"] for t in turns) == [16, 17]
    assert {t.params["temperature"] for t in turns} == {0.6}
    assert sorted(manifest.source_runs) == sorted(runs.values())
    # four slow judgments skipped; math-1's judgments both earn 0: nothing to compare
    assert manifest.skipped == {"slow_mode": 4, "no_label": 1}
    assert (manifest.groups, manifest.no_signal_groups) == (4, 1)
    assert manifest_of(out)["kind"] == "verifier"


async def test_m1_sft_keeps_what_m500_keeps_consensus_and_format(
    harness: RunHarness, tmp_path: Path
) -> None:
    d = discussion
    one_round = {"max_rounds": 1, "token_menu": [64], "reference_answer": "42"}
    agreed, _ = await harness.run(d.backend(), "discussion", d.PROBLEM, **one_round)
    # The critics never agree, even with the revised solution.
    disputed, _ = await harness.run(
        d.backend(critic=[d.DISAGREE]), "discussion", d.PROBLEM, **one_round
    )
    # They disagree, the solver revises, and both agree with the revision.
    revised, _ = await harness.run(
        d.backend(critic=[d.DISAGREE, d.DISAGREE, d.AGREE]), "discussion", d.PROBLEM, **one_round
    )
    # The same, but the budget runs out while the revision is reviewed: the one critic who
    # answered agreed, the other never did, so the last solution was never agreed on.
    cut, outcome = await harness.run(
        d.backend(critic=[d.DISAGREE, d.DISAGREE, d.AGREE]),
        "discussion",
        d.PROBLEM,
        **{**one_round, "token_budget": 64},
    )
    assert outcome["stop_reason"] == "token_budget"
    cut_turns = [t.key for t in await harness.store.turns(cut)]
    assert cut_turns[-2:] == ["solve/r0/i1", "critique/r0/i1/c1"]
    # Agreed on and right, but the CEO's reply is unreadable (so one critic is recruited) and
    # the solver's first solution boxes no answer (the critic disagrees; the revision boxes 42
    # and the critic agrees).
    sloppy, outcome = await harness.run(
        d.backend(
            ceo=["I am not sure what to do here."],
            solver=["6 times 7 is 42.", d.SOLUTION],
            critic=[d.DISAGREE, d.AGREE],
        ),
        "discussion",
        d.PROBLEM,
        **one_round,
    )
    assert outcome["answer"] == "42"
    # The same discussion with a wrong answer: M500 keeps no trace of it.
    wrong, _ = await harness.run(
        d.backend(solver=["6 times 7 is 41. \\boxed{41}"]), "discussion", d.PROBLEM, **one_round
    )

    async def keys(run_id: str, *, ceo: bool = False) -> list[tuple[str, str]]:
        turns = await harness.store.turns(run_id)
        return [(run_id, t.key) for t in turns if ceo or t.role != "ceo"]

    async def exported(name: str, **filters: bool) -> tuple[list[tuple[str, str]], dict]:
        manifest = await export_dataset(
            harness.store, "m1-sft", ExportFilters(**filters), tmp_path / name
        )
        records = read_jsonl(tmp_path / name / "data.jsonl", SFTExample) if manifest.records else []
        return [(r.meta["run_id"], r.meta["turn"]) for r in records], manifest.skipped

    ceo_turns = {"not_an_m500_role": 3}  # one per round of the three agreed-on runs
    sloppy_kept = [k for k in await keys(sloppy) if k[1] != "solve/r0/i0"]
    assert len(sloppy_kept) == len(await keys(sloppy)) - 1
    assert await exported("default") == (
        [*await keys(agreed), *await keys(revised), *sloppy_kept],
        {"not_correct": 1, "no_consensus": 2, "malformed_turn": 1, **ceo_turns},
    )
    assert await exported("any_format", require_format=False) == (
        [*await keys(agreed), *await keys(revised), *await keys(sloppy)],
        {"not_correct": 1, "no_consensus": 2, **ceo_turns},
    )
    everything = [
        k for r in (agreed, disputed, revised, cut, sloppy, wrong) for k in await keys(r, ceo=True)
    ]
    assert await exported(
        "all", only_correct=False, require_consensus=False, require_format=False, include_ceo=True
    ) == (everything, {})


def test_cli_exports_verifier_data_and_takes_the_m500_switches(tmp_path: Path) -> None:
    env = {**os.environ, "THINKTANK_HOME": str(tmp_path), "COLUMNS": "200"}
    verifier = run_cli(env, "data", "export", "--kind", "verifier", "--out", str(tmp_path / "v"))
    assert verifier.returncode == 0, verifier.stdout + verifier.stderr
    assert "0 verifier records from 0 runs" in verifier.stdout
    assert manifest_of(tmp_path / "v")["kind"] == "verifier"

    args = ["data", "export", "--kind", "m1-sft", "--out", str(tmp_path / "m")]
    switches = ("require_consensus", "require_format", "only_correct", "include_ceo")
    loose = run_cli(
        env, *args, "--no-require-consensus", "--no-require-format", "--any-answer", "--include-ceo"
    )
    assert loose.returncode == 0, loose.stdout + loose.stderr
    filters = manifest_of(tmp_path / "m")["filters"]
    assert [filters[s] for s in switches] == [False, False, False, True]
    strict = run_cli(env, *args)
    assert strict.returncode == 0, strict.stdout + strict.stderr
    filters = manifest_of(tmp_path / "m")["filters"]
    assert [filters[s] for s in switches] == [True, True, True, False]
