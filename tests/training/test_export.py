"""`thinktank data export`: records built from runs played with a scripted backend."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
from training.export import ExportFilters, export_dataset


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


async def test_verifier_records_reward_each_judgment_against_its_label(
    harness: RunHarness, tmp_path: Path
) -> None:
    labelled = tmp_path / "processbench.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in critic_eval.RECORDS))
    _, items = await evaluate_critic(
        harness.store,
        ModelRouter.single(ScriptedBackend({"verifier": [two_judges]})),
        harness.database_url,
        CriticEvalConfig(source=str(labelled), name="pb", samples=2, concurrency=1),
    )
    # A judge run nobody labelled (solved on its own) gives no record.
    await harness.run(
        ScriptedBackend({"verifier": ["\\boxed{-1}"]}), "process_judge", "2+2?", steps=["4"]
    )

    out = tmp_path / "verifier"
    manifest = await export_dataset(harness.store, "verifier", ExportFilters(), out)
    records = read_jsonl(out / "data.jsonl", RLExample)
    got = sorted(
        (r.meta["problem_id"], r.meta["turn"], r.meta["label"], r.meta["predicted"], r.reward)
        for r in records
    )
    assert got == [
        ("gsm8k-0", "judge/0", -1, -1, 1.0),  # no error, and none found
        ("gsm8k-0", "judge/1", -1, 0, 0.0),  # a correct solution flagged
        ("gsm8k-1", "judge/0", 1, 1, 1.0),  # the labelled step
        ("gsm8k-1", "judge/1", 1, 0, 0.5),  # an error, but not where it is
        ("math-0", "judge/0", 0, 1, 0.5),
        ("math-0", "judge/1", 0, 0, 1.0),
        ("math-1", "judge/0", -1, None, 0.0),  # no index at all
        ("math-1", "judge/1", -1, 0, 0.0),
    ]
    runs = {i.problem_id: i.run_id for i in items}
    for record in records:
        problem = next(r for r in critic_eval.RECORDS if r["id"] == record.meta["problem_id"])
        assert record.prompt == verifier_messages(problem["problem"], problem["steps"], "slow")
        assert record.meta["run_id"] == runs[problem["id"]]
        assert record.id == f"{runs[problem['id']]}/{record.meta['turn']}"
        assert record.meta["evaluation"] == "pb" and record.meta["mode"] == "slow"
        assert record.group_id.startswith(f"{problem['id']}/")
        assert record.completion == two_judges(
            ModelRequest(
                messages=record.prompt,
                tags={"agent": "Judge 1" if record.meta["turn"] == "judge/1" else "Judge 0"},
            )
        )
    # the two judgments of one solution are one group; solutions are apart
    groups = {(r.meta["problem_id"], r.group_id) for r in records}
    assert len(groups) == len({g for _, g in groups}) == 4
    assert sorted(manifest.source_runs) == sorted(runs.values())
    assert manifest.skipped == {"no_label": 1}
    assert manifest_of(out)["kind"] == "verifier"


async def test_m1_sft_keeps_what_m500_keeps_consensus_and_format(
    harness: RunHarness, tmp_path: Path
) -> None:
    d = discussion
    one_round = {"max_rounds": 1, "token_menu": [64]}
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
        token_budget=64,
        **one_round,
    )
    assert outcome["stop_reason"] == "token_budget"
    cut_turns = [t.key for t in await harness.store.turns(cut)]
    assert cut_turns[-2:] == ["solve/r0/i1", "critique/r0/i1/c1"]
    # Agreed on, but the CEO's reply is unreadable and the solver boxes no answer.
    sloppy, _ = await harness.run(
        d.backend(ceo=["I am not sure what to do here."], solver=["6 times 7 is 42."]),
        "discussion",
        d.PROBLEM,
        **one_round,
    )

    async def keys(run_id: str) -> list[tuple[str, str]]:
        return [(run_id, t.key) for t in await harness.store.turns(run_id)]

    async def exported(name: str, **filters: bool) -> tuple[list[tuple[str, str]], dict]:
        manifest = await export_dataset(
            harness.store, "m1-sft", ExportFilters(**filters), tmp_path / name
        )
        records = read_jsonl(tmp_path / name / "data.jsonl", SFTExample) if manifest.records else []
        return [(r.meta["run_id"], r.meta["turn"]) for r in records], manifest.skipped

    sloppy_kept = [k for k in await keys(sloppy) if k[1] not in ("ceo/r0", "solve/r0/i0")]
    assert len(sloppy_kept) == len(await keys(sloppy)) - 2
    assert await exported("default") == (
        [*await keys(agreed), *await keys(revised), *sloppy_kept],
        {"no_consensus": 2, "malformed_turn": 2},
    )
    assert await exported("any_format", require_format=False) == (
        [*await keys(agreed), *await keys(revised), *await keys(sloppy)],
        {"no_consensus": 2},
    )
    everything = [k for r in (agreed, disputed, revised, cut, sloppy) for k in await keys(r)]
    assert await exported("all", require_consensus=False, require_format=False) == (everything, {})


def test_cli_exports_verifier_data_and_takes_the_m500_switches(tmp_path: Path) -> None:
    env = {**os.environ, "THINKTANK_HOME": str(tmp_path), "COLUMNS": "200"}
    verifier = run_cli(env, "data", "export", "--kind", "verifier", "--out", str(tmp_path / "v"))
    assert verifier.returncode == 0, verifier.stdout + verifier.stderr
    assert "0 verifier records from 0 runs" in verifier.stdout
    assert manifest_of(tmp_path / "v")["kind"] == "verifier"

    args = ["data", "export", "--kind", "m1-sft", "--out", str(tmp_path / "m")]
    loose = run_cli(env, *args, "--no-require-consensus", "--no-require-format")
    assert loose.returncode == 0, loose.stdout + loose.stderr
    filters = manifest_of(tmp_path / "m")["filters"]
    assert (filters["require_consensus"], filters["require_format"]) == (False, False)
    strict = run_cli(env, *args)
    assert strict.returncode == 0, strict.stdout + strict.stderr
    filters = manifest_of(tmp_path / "m")["filters"]
    assert (filters["require_consensus"], filters["require_format"]) == (True, True)
