"""RLAD, driven by a scripted backend (and once by the real local model): what a user sees.

The scripted abstraction player's sample k answers with the k-th tagged abstraction; the
scripted solution player reads which abstraction its prompt carries and answers from a
per-abstraction list, so each abstraction and its rewards are known exactly whatever order the
parallel calls run in.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import Connection

from agents.backends.local.config import LocalModelConfig
from agents.backends.scripted import ScriptedBackend, Slow
from agents.model import ModelRequest
from agents.model_map import ModelRouter, build_local_backend
from execution.runner import execute_run, submit_run
from roles.rlad import (
    RladAbstraction,
    RladSolution,
    abstraction_messages,
    check_leak,
    parse_abstraction,
    parse_verifier_choice,
    split_budget,
)
from store.runs import Store
from store.tables.runs import Base
from tests.conftest import RunHarness, run_cli

PROBLEM = "What is 6 times 7?"
FACT = "Multiplying by 7 is multiplying by 5 and by 2 and adding the results."
PROCEDURE = "Write 6 times 7 as 6 times 5 plus 6 times 2."
CAUTION = "Do not add the two numbers instead of multiplying them."


def proposal(*abstractions: str) -> Callable[[ModelRequest], str]:
    """The abstraction player's K samples: sample k writes the k-th abstraction (the sample is
    read from the agent's name, so the parallel calls may run in any order)."""

    def reply(request: ModelRequest) -> str:
        found = re.search(r"sample (\d+)", request.tags["agent"])
        assert found, request.tags
        return f"<abstraction>{abstractions[int(found.group(1))]}</abstraction>"

    return reply


def solver(answers: dict[str | None, list[str]]) -> Callable[[ModelRequest], str]:
    """Solutions by the abstraction in the prompt (``None``: the bare problem), in order."""
    used: Counter[str | None] = Counter()

    def reply(request: ModelRequest) -> str:
        found = re.search(r"<abstraction>(.*?)</abstraction>", request.messages[-1].content, re.S)
        hint = found.group(1) if found else None
        answer = answers[hint][used[hint] % len(answers[hint])]
        used[hint] += 1
        return f"Working it out step by step. \\boxed{{{answer}}}"

    return reply


async def solve_keys(harness: RunHarness, run_id: str) -> list[str]:
    """Keys of the abstraction-conditioned solutions (the baseline's start ``baseline/``)."""
    return sorted(t.key for t in await harness.store.turns(run_id) if t.key.startswith("solve/"))


async def test_k_abstractions_times_m_solutions_are_all_called_at_once(
    harness: RunHarness,
) -> None:
    model = ScriptedBackend(
        {
            "abstraction_player": [proposal(FACT, PROCEDURE, CAUTION)],
            "solution_player": [Slow("So \\boxed{42}", 0.1)],
        }
    )
    run_id, outcome = await harness.run(
        model, "rlad", PROBLEM, abstractions=3, solutions_per_abstraction=4
    )

    assert outcome["status"] == "succeeded" and outcome["answer"] == "42"
    assert await solve_keys(harness, run_id) == sorted(
        f"solve/{k}/{m}" for k in range(3) for m in range(4)
    )
    assert len(model.calls("solution_player")) == 12
    assert model.max_in_flight == 12
    # every solution saw its own abstraction; no reference, so no baseline branch
    for turn in await harness.store.turns(run_id):
        if turn.node == "solve":
            k = int(turn.key.split("/")[1])
            assert [FACT, PROCEDURE, CAUTION][k] in turn.messages[-1]["content"]
    # three samples of the one single-abstraction prompt
    asked = [call.messages for call in model.calls("abstraction_player")]
    assert asked == [abstraction_messages(PROBLEM)] * 3


async def test_the_k_abstractions_are_k_seeded_samples_at_once_each_its_own_turn(
    harness: RunHarness,
) -> None:
    abstraction_model = ScriptedBackend(
        {"abstraction_player": [Slow(proposal(FACT, PROCEDURE, CAUTION), 0.1)]},
        name="abstraction-model",
    )
    solution_model = ScriptedBackend({"solution_player": ["\\boxed{42}"]}, name="solution-model")
    models = ModelRouter(overrides={"abstraction": abstraction_model, "policy": solution_model})

    async def play() -> str:
        # temperature 0: the solutions are greedy, the abstraction samples are not
        run_id = await submit_run(
            harness.store,
            "rlad",
            PROBLEM,
            {"abstractions": 3, "solutions_per_abstraction": 1, "temperature": 0.0},
        )
        outcome = await execute_run(
            run_id, store=harness.store, models=models, database_url=harness.database_url
        )
        assert outcome["status"] == "succeeded" and outcome["answer"] == "42"
        return run_id

    run_id = await play()

    assert abstraction_model.max_in_flight == 3
    turns = {t.key: t for t in await harness.store.turns(run_id) if t.node == "propose"}
    assert sorted(turns) == ["abstraction/0", "abstraction/1", "abstraction/2"]
    records = {r.key: r for r in await harness.store.outcomes(run_id, RladAbstraction)}
    prompt = [m.model_dump() for m in abstraction_messages(PROBLEM)]
    for k, text in enumerate([FACT, PROCEDURE, CAUTION]):
        turn = turns[f"abstraction/{k}"]
        assert turn.messages == prompt and turn.agent == f"Abstraction player (sample {k})"
        assert turn.completion == f"<abstraction>{text}</abstraction>" and turn.parse_ok
        assert (turn.params["temperature"], turn.params["top_p"]) == (0.7, 0.95)
        # the record of the abstraction is keyed by the turn that sampled it
        assert records[turn.key].abstraction == text
        assert records[turn.key].generator_model == "abstraction-model"
    seeds = [turns[f"abstraction/{k}"].params["seed"] for k in range(3)]
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]
    solved = [t for t in await harness.store.turns(run_id) if t.node == "solve"]
    assert {t.params["temperature"] for t in solved} == {0.0}

    again = await play()
    other = [t.params["seed"] for t in await harness.store.turns(again) if t.node == "propose"]
    assert not set(other) & set(seeds)


async def test_a_sample_with_no_abstraction_in_it_is_left_out_and_said_so(
    harness: RunHarness,
) -> None:
    model = ScriptedBackend(
        {"abstraction_player": [proposal(FACT, "")], "solution_player": ["\\boxed{42}"]}
    )
    run_id, outcome = await harness.run(
        model,
        "rlad",
        PROBLEM,
        abstractions=2,
        solutions_per_abstraction=2,
        reference_answer="42",
        baseline=False,
    )

    assert outcome["status"] == "succeeded" and outcome["answer"] == "42"
    assert await solve_keys(harness, run_id) == ["solve/0/0", "solve/0/1"]
    empty = next(t for t in await harness.store.turns(run_id) if t.key == "abstraction/1")
    assert not empty.parse_ok and empty.parse_error == "no abstraction in the reply"
    records = await harness.store.outcomes(run_id, RladAbstraction)
    assert [(r.key, r.reward) for r in records] == [("abstraction/0", 1.0)]
    leak_filter = harness.decisions("leak_filter")[0]
    assert leak_filter["proposed"] == 1 and leak_filter["unreadable"] == [1]
    assert leak_filter["kept"] == [0] and leak_filter["dropped"] == []


async def test_an_abstraction_with_the_reference_answer_is_dropped_and_kept_on_record(
    harness: RunHarness,
) -> None:
    leaking = "Six sevens make 42, so that is what to write."
    model = ScriptedBackend(
        {
            "abstraction_player": [proposal(FACT, leaking, CAUTION)],
            "solution_player": ["\\boxed{42}"],
        }
    )
    run_id, outcome = await harness.run(
        model,
        "rlad",
        PROBLEM,
        abstractions=3,
        solutions_per_abstraction=2,
        reference_answer="42",
        baseline=False,
    )

    assert outcome["status"] == "succeeded"
    assert await solve_keys(harness, run_id) == [
        "solve/0/0",
        "solve/0/1",
        "solve/2/0",
        "solve/2/1",
    ]
    records = {r.key: r for r in await harness.store.outcomes(run_id, RladAbstraction)}
    assert sorted(records) == ["abstraction/0", "abstraction/1", "abstraction/2"]
    dropped = records["abstraction/1"]
    assert dropped.leaked and dropped.abstraction == leaking
    assert dropped.leak_reason == "contains the reference answer '42'"
    assert dropped.solutions == [] and dropped.reward is None
    assert not records["abstraction/0"].leaked and records["abstraction/0"].reward == 1.0
    leak_filter = harness.decisions("leak_filter")[0]
    assert leak_filter["kept"] == [0, 2]
    assert leak_filter["dropped"] == [{"index": 1, "reason": dropped.leak_reason}]


async def test_an_answer_written_beside_the_abstraction_drops_it_too(harness: RunHarness) -> None:
    # the reply, not only the abstraction read from it, is what the player is trained on
    reply = f"<abstraction>{FACT}</abstraction>\nSo it is 42."
    model = ScriptedBackend({"abstraction_player": [reply], "solution_player": ["\\boxed{42}"]})
    run_id, _ = await harness.run(
        model, "rlad", PROBLEM, abstractions=1, solutions_per_abstraction=1, reference_answer="42"
    )

    [record] = [r for r in await harness.store.outcomes(run_id, RladAbstraction) if r.abstraction]
    assert record.abstraction == FACT and record.leaked and record.reward is None
    assert record.leak_reason == "contains the reference answer '42'"
    assert await solve_keys(harness, run_id) == []


async def test_without_a_reference_an_abstraction_that_states_an_answer_is_dropped(
    harness: RunHarness,
) -> None:
    model = ScriptedBackend(
        {
            "abstraction_player": [proposal(FACT, "The answer is \\boxed{41}.")],
            "solution_player": ["\\boxed{42}"],
        }
    )
    run_id, _ = await harness.run(
        model, "rlad", PROBLEM, abstractions=2, solutions_per_abstraction=1
    )

    assert await solve_keys(harness, run_id) == ["solve/0/0"]
    records = {r.key: r for r in await harness.store.outcomes(run_id, RladAbstraction)}
    assert records["abstraction/1"].leaked
    assert records["abstraction/1"].leak_reason == "states a final answer: '\\\\boxed{41}'"
    # no reference: records are stored, without rewards
    assert records["abstraction/0"].reward is None
    assert records["abstraction/0"].solutions[0].answer == "42"
    assert records["abstraction/0"].solutions[0].correct is None


async def test_when_every_abstraction_leaks_the_bare_problem_is_still_solved(
    harness: RunHarness,
) -> None:
    model = ScriptedBackend(
        {
            "abstraction_player": [proposal("It is 42.")],
            "solution_player": ["\\boxed{42}"],
        }
    )
    run_id, outcome = await harness.run(
        model, "rlad", PROBLEM, abstractions=1, solutions_per_abstraction=3, reference_answer="42"
    )

    assert outcome["answer"] == "42"
    assert await solve_keys(harness, run_id) == []
    bare = sorted(t.key for t in await harness.store.turns(run_id) if t.key.startswith("baseline"))
    assert bare == ["baseline/0", "baseline/1", "baseline/2"]


async def test_rewards_and_improvements_on_a_known_case(harness: RunHarness) -> None:
    answers = {
        FACT: ["42", "42", "42", "41"],  # 3 of 4 correct
        PROCEDURE: ["41", "42", "40", "40"],  # 1 of 4
        None: ["42", "41", "42", "40"],  # the baseline: 2 of 4
    }
    model = ScriptedBackend(
        {"abstraction_player": [proposal(FACT, PROCEDURE)], "solution_player": [solver(answers)]}
    )
    run_id, outcome = await harness.run(
        model,
        "rlad",
        PROBLEM,
        abstractions=2,
        solutions_per_abstraction=4,
        reference_answer="42",
    )

    assert outcome["status"] == "succeeded"
    # the baseline runs by default when the reference is known: 2 x 4 + 4 calls
    assert len(model.calls("solution_player")) == 12
    records = {r.key: r for r in await harness.store.outcomes(run_id, RladAbstraction)}
    fact, procedure, baseline = (
        records["abstraction/0"],
        records["abstraction/1"],
        records["baseline"],
    )
    assert (fact.reward, fact.baseline_reward, fact.improvement) == (0.75, 0.5, 0.25)
    assert (procedure.reward, procedure.improvement) == (0.25, -0.25)
    assert (baseline.abstraction, baseline.reward, baseline.improvement) == (None, 0.5, None)
    assert fact.abstraction == FACT and fact.generator_model == "scripted"
    assert fact.reference_answer == "42" and fact.problem == PROBLEM
    assert sorted(s.key for s in fact.solutions) == [f"solve/0/{m}" for m in range(4)]
    assert Counter((s.answer, s.correct, s.reward) for s in fact.solutions) == {
        ("42", True, 1.0): 3,
        ("41", False, 0.0): 1,
    }
    assert Counter(s.reward for s in baseline.solutions) == {1.0: 2, 0.0: 2}
    assert harness.decisions("rewards")[0] == {
        "by": "rewards",
        "baseline_reward": 0.5,
        "abstractions": [
            {"index": 0, "reward": 0.75, "improvement": 0.25},
            {"index": 1, "reward": 0.25, "improvement": -0.25},
        ],
    }
    # 42 has 3 + 1 + 2 of the 12 votes
    assert outcome["answer"] == "42"
    assert harness.decisions("vote")[0]["votes"] == 6


async def test_a_spent_token_budget_ends_the_fan_out_with_the_solutions_it_paid_for(
    harness: RunHarness,
) -> None:
    model = ScriptedBackend(
        {
            "abstraction_player": [proposal(FACT, PROCEDURE)],
            "solution_player": [Slow("\\boxed{42}", 0.05)],
        }
    )
    # The two abstraction samples cost 14 + 12 words; the 124 tokens left pay for 50 + 50 + 24
    # reserved at once (the calls are in flight together), not for a fourth call.
    run_id, outcome = await harness.run(
        model,
        "rlad",
        PROBLEM,
        abstractions=2,
        solutions_per_abstraction=2,
        abstraction_max_tokens=50,
        solution_max_tokens=50,
        token_budget=150,
        reference_answer="42",
        baseline=False,
    )

    assert outcome["status"] == "succeeded"
    assert outcome["stop_reason"] == "token_budget" and outcome["answer"] == "42"
    assert len(await solve_keys(harness, run_id)) == 3
    run = await harness.store.get_run(run_id)
    assert run.completion_tokens <= 150
    records = await harness.store.outcomes(run_id, RladAbstraction)
    assert sorted(len(r.solutions) for r in records) == [1, 2]
    assert all(r.reward == 1.0 for r in records)


async def test_a_budget_the_abstraction_samples_spend_ends_the_run_within_it(
    harness: RunHarness,
) -> None:
    model = ScriptedBackend(
        {"abstraction_player": [proposal(FACT, FACT)], "solution_player": ["\\boxed{42}"]}
    )
    # One sample reserves 16 tokens, the other finds 4 left, under a call's minimum of 8, and
    # is never called; the first writes 14 words, and the 6 left pay for no solution.
    run_id, outcome = await harness.run(
        model,
        "rlad",
        PROBLEM,
        abstractions=2,
        solutions_per_abstraction=2,
        abstraction_max_tokens=16,
        token_budget=20,
        reference_answer="42",
        baseline=False,
    )

    assert outcome["status"] == "succeeded"
    assert outcome["stop_reason"] == "token_budget" and outcome["answer"] is None
    assert len(model.calls("abstraction_player")) == 1 and model.calls("solution_player") == []
    [turn] = await harness.store.turns(run_id)
    assert turn.node == "propose" and turn.completion_tokens == 14
    assert (await harness.store.get_run(run_id)).completion_tokens == 14
    [record] = await harness.store.outcomes(run_id, RladAbstraction)
    assert (record.key, record.abstraction, record.solutions, record.reward) == (
        turn.key,
        FACT,
        [],
        None,
    )


def test_the_budget_split_buys_abstractions_before_solutions_at_large_budgets() -> None:
    splits = {
        c: (p.abstractions, p.solutions_per_abstraction, p.unused)
        for c in (1, 3, 4, 5, 8, 16, 17, 64, 100)
        for p in [split_budget(c, max_abstractions=16)]
    }
    assert splits == {
        1: (1, 1, 0),
        3: (1, 3, 0),
        4: (1, 4, 0),
        5: (2, 2, 1),
        8: (2, 4, 0),
        16: (4, 4, 0),
        17: (5, 3, 2),
        64: (16, 4, 0),
        100: (16, 6, 4),
    }


async def test_budget_mode_splits_the_total_and_records_the_split(harness: RunHarness) -> None:
    model = ScriptedBackend(
        {"abstraction_player": [proposal(FACT, PROCEDURE)], "solution_player": ["\\boxed{42}"]}
    )
    run_id, outcome = await harness.run(model, "rlad", PROBLEM, total_solutions=8)

    assert outcome["status"] == "succeeded"
    assert len(await solve_keys(harness, run_id)) == 8
    split = harness.decisions("split")[0]
    assert split["abstractions"] == 2 and split["solutions_per_abstraction"] == 4
    assert split["total_solutions"] == 8 and split["unused"] == 0
    assert len(model.calls("abstraction_player")) == 2


async def test_a_total_with_an_explicit_split_is_refused_with_the_reason(
    harness: RunHarness, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="total_solutions cannot be combined with abstr"):
        await submit_run(harness.store, "rlad", PROBLEM, {"total_solutions": 8, "abstractions": 2})

    env = {**os.environ, "THINKTANK_HOME": str(tmp_path), "COLUMNS": "200"}
    cli = run_cli(env, "solve", PROBLEM, "--pattern", "rlad", "--total-solutions", "8",
                  "--solutions-per-abstraction", "2")  # fmt: skip
    assert cli.returncode == 2
    shown = cli.stdout + cli.stderr
    assert "total_solutions cannot be combined with solutions_per_abstraction" in shown
    assert "Traceback" not in shown


async def test_the_majority_over_every_solution_is_the_answer(harness: RunHarness) -> None:
    answers = {FACT: ["41", "41"], PROCEDURE: ["42", "42"], CAUTION: ["41", "40"]}
    model = ScriptedBackend(
        {
            "abstraction_player": [proposal(FACT, PROCEDURE, CAUTION)],
            "solution_player": [solver(answers)],
        }
    )
    _, outcome = await harness.run(
        model, "rlad", PROBLEM, abstractions=3, solutions_per_abstraction=2
    )

    assert outcome["answer"] == "41"
    assert harness.decisions("vote")[0] == {
        "by": "vote",
        "answer": "41",
        "votes": 3,
        "samples": 6,
        "cancelled": 0,
    }


async def test_the_verifier_picks_the_answer_when_configured(harness: RunHarness) -> None:
    answers = {FACT: ["41", "41"], PROCEDURE: ["42", "41"]}
    model = ScriptedBackend(
        {
            "abstraction_player": [proposal(FACT, PROCEDURE)],
            "solution_player": [solver(answers)],
            "verifier": ["### Reasoning: 6 times 7 is 42.\n### Choice: 2"],
        }
    )
    run_id, outcome = await harness.run(
        model, "rlad", PROBLEM, abstractions=2, solutions_per_abstraction=2, use_verifier=True
    )

    assert outcome["answer"] == "42"  # the majority said 41
    verifier_prompt = model.calls("verifier")[0].messages[-1].content
    assert "Candidate 1: \\boxed{41} (3 of 4 solutions)" in verifier_prompt
    assert "Candidate 2: \\boxed{42} (1 of 4 solutions)" in verifier_prompt
    assert harness.decisions("verifier")[0]["choice"] == 2
    assert [t.key for t in await harness.store.turns(run_id)][-1] == "verify"


async def test_an_unreadable_verifier_leaves_the_majority_standing(harness: RunHarness) -> None:
    answers = {FACT: ["41", "41"], PROCEDURE: ["42", "41"]}
    model = ScriptedBackend(
        {
            "abstraction_player": [proposal(FACT, PROCEDURE)],
            "solution_player": [solver(answers)],
            "verifier": ["They all look fine to me."],
        }
    )
    run_id, outcome = await harness.run(
        model, "rlad", PROBLEM, abstractions=2, solutions_per_abstraction=2, use_verifier=True
    )

    assert outcome["answer"] == "41"
    verify = next(t for t in await harness.store.turns(run_id) if t.key == "verify")
    assert not verify.parse_ok and verify.parse_error == "no choice"


async def test_the_two_players_can_be_different_models(harness: RunHarness) -> None:
    abstraction_model = ScriptedBackend(
        {"abstraction_player": [proposal(FACT)]}, name="abstraction-model"
    )
    solution_model = ScriptedBackend({"solution_player": ["\\boxed{42}"]}, name="solution-model")
    run_id = await submit_run(
        harness.store, "rlad", PROBLEM, {"abstractions": 1, "solutions_per_abstraction": 2}
    )
    models = ModelRouter(overrides={"abstraction": abstraction_model, "policy": solution_model})
    outcome = await execute_run(
        run_id, store=harness.store, models=models, database_url=harness.database_url
    )

    assert outcome["answer"] == "42"
    models_by_role = {(t.role, t.model) for t in await harness.store.turns(run_id)}
    assert models_by_role == {
        ("abstraction_player", "abstraction-model"),
        ("solution_player", "solution-model"),
    }
    [record] = await harness.store.outcomes(run_id, RladAbstraction)
    assert record.generator_model == "abstraction-model"
    assert {s.model for s in record.solutions} == {"solution-model"}


async def test_a_resumed_run_replays_the_solutions_it_already_made(harness: RunHarness) -> None:
    # Two solution calls return at once, two hang until the worker is killed.
    first = ScriptedBackend(
        {
            "abstraction_player": [proposal(FACT, PROCEDURE)],
            "solution_player": [
                Slow("first worker \\boxed{42}", 0.0),
                Slow("first worker \\boxed{42}", 0.0),
                Slow("never seen", 60.0),
            ],
        }
    )
    run_id = await submit_run(
        harness.store, "rlad", PROBLEM, {"abstractions": 2, "solutions_per_abstraction": 2}
    )
    killed = asyncio.create_task(
        execute_run(
            run_id,
            store=harness.store,
            models=ModelRouter.single(first),
            database_url=harness.database_url,
            owner="worker-a",
            lease_s=0.3,
        )
    )
    while len(await solve_keys(harness, run_id)) < 2:
        await asyncio.sleep(0.01)
    killed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await killed
    made = {t.key: t.completion for t in await harness.store.turns(run_id) if t.node == "solve"}
    assert len(made) == 2
    await asyncio.sleep(0.4)  # the dead worker's lease lapses

    second = ScriptedBackend({"solution_player": ["second worker \\boxed{42}"]})
    resumed = await execute_run(
        run_id,
        store=harness.store,
        models=ModelRouter.single(second),
        database_url=harness.database_url,
        owner="worker-b",
    )

    assert resumed["status"] == "succeeded" and resumed["answer"] == "42"
    assert second.calls("abstraction_player") == []
    assert len(second.calls("solution_player")) == 2
    turns = {t.key: t.completion for t in await harness.store.turns(run_id) if t.node == "solve"}
    assert sorted(turns) == [f"solve/{k}/{m}" for k in range(2) for m in range(2)]
    assert {key: turns[key] for key in made} == made
    records = await harness.store.outcomes(run_id, RladAbstraction)
    assert [len(r.solutions) for r in records] == [2, 2]


async def test_a_resumed_run_replays_the_abstraction_samples_it_already_made(
    harness: RunHarness,
) -> None:
    # Whichever sample asks first is answered at once; the other hangs until the kill.
    samples = proposal(FACT, PROCEDURE)
    first = ScriptedBackend({"abstraction_player": [Slow(samples, 0.0), Slow(samples, 60.0)]})
    run_id = await submit_run(
        harness.store, "rlad", PROBLEM, {"abstractions": 2, "solutions_per_abstraction": 1}
    )
    killed = asyncio.create_task(
        execute_run(
            run_id,
            store=harness.store,
            models=ModelRouter.single(first),
            database_url=harness.database_url,
            owner="worker-a",
            lease_s=0.3,
        )
    )

    async def proposed() -> dict[str, str]:
        turns = await harness.store.turns(run_id)
        return {t.key: t.completion for t in turns if t.node == "propose" and t.error is None}

    while not await proposed():
        await asyncio.sleep(0.01)
    killed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await killed
    made = await proposed()
    assert len(made) == 1
    await asyncio.sleep(0.4)  # the dead worker's lease lapses

    second = ScriptedBackend(
        {"abstraction_player": [samples], "solution_player": ["second worker \\boxed{42}"]}
    )
    resumed = await execute_run(
        run_id,
        store=harness.store,
        models=ModelRouter.single(second),
        database_url=harness.database_url,
        owner="worker-b",
    )

    assert resumed["status"] == "succeeded" and resumed["answer"] == "42"
    assert len(second.calls("abstraction_player")) == 1
    assert {key: (await proposed())[key] for key in made} == made
    records = await harness.store.outcomes(run_id, RladAbstraction)
    assert [(r.key, r.abstraction) for r in records] == [
        ("abstraction/0", FACT),
        ("abstraction/1", PROCEDURE),
    ]


async def test_the_records_table_matches_its_migration_on_both_databases(any_store: Store) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection)
        return [
            d for d in compare_metadata(context, Base.metadata) if "rlad_abstractions" in repr(d)
        ]

    async with any_store.engine.connect() as connection:
        assert await connection.run_sync(differences) == []

    run_id = await submit_run(any_store, "rlad", PROBLEM, {"reference_answer": "42"})
    record = RladAbstraction(
        key="abstraction/0",
        problem=PROBLEM,
        abstraction_index=0,
        abstraction=FACT,
        generator_model="m",
        solutions=[
            RladSolution(
                key="solve/0/0", sample=0, answer="42", correct=True, reward=1.0, model="m"
            )
        ],
        reference_answer="42",
        reward=1.0,
        baseline_reward=0.5,
        improvement=0.5,
    )
    await any_store.record_outcome(run_id, record)
    await any_store.record_outcome(run_id, record.model_copy(update={"reward": 0.0}))
    assert await any_store.outcomes(run_id, RladAbstraction) == [
        record.model_copy(update={"reward": 0.0})
    ]


# --- the abstraction player's reply and the leak filter, read directly ---------------------


def test_an_abstraction_is_read_from_its_tags_or_else_the_whole_reply() -> None:
    tagged = parse_abstraction("<think>hmm</think>Here: <abstraction> Factor first. </abstraction>")
    assert tagged.abstraction == "Factor first." and tagged.parse_ok

    two = parse_abstraction("<abstraction>A</abstraction>\n<abstraction>B")
    assert two.abstraction == "A" and not two.parse_ok
    assert two.parse_error == "2 abstractions in one reply; kept the first"

    untagged = parse_abstraction("Factor first.\n\nThen check the sign.")
    assert untagged.abstraction == "Factor first.\n\nThen check the sign."
    assert not untagged.parse_ok
    assert untagged.parse_error == "no <abstraction> tags; read the whole reply"

    for empty in ("", "   ", "<abstraction></abstraction>", "<think>only thoughts</think>"):
        parsed = parse_abstraction(empty)
        assert parsed.abstraction is None and not parsed.parse_ok
    # anything else is read, and the leak filter judges it
    assert parse_abstraction("\x00{}\\boxed{").abstraction == "\x00{}\\boxed{"


def test_the_leak_filter_reads_answers_not_prose_about_answers() -> None:
    def leaks(text: str, reference: str | None = None) -> bool:
        return check_leak(text, reference).leaked

    assert leaks("Six sevens is 42.", "42")
    assert leaks("It comes to 42.0 in the end.", "42")
    assert not leaks("There are 420 ways to order them.", "42")
    assert leaks("Half of it, 0.5, is what remains.", "\\frac{1}{2}")
    assert leaks("The result is x^2 + 1 after expanding.", "x^2+1")
    assert leaks("Option B is the one.", "B") and not leaks("Be careful with signs.", "B")
    assert leaks("So the answer is 17.") and leaks("Final answer: \\frac{3}{4}")
    assert leaks("Conclude with \\boxed{7}.")
    assert not leaks("The answer is unique, so check both roots.")
    assert not leaks("Check your answer: it must be positive.")


def test_the_verifier_choice_is_a_candidate_number_or_a_parse_failure() -> None:
    assert parse_verifier_choice("### Choice: 2", 3).choice == 2
    assert parse_verifier_choice("Choice: Candidate #3", 3).choice == 3
    out_of_range = parse_verifier_choice("### Choice: 5", 3)
    assert out_of_range.choice is None and not out_of_range.parse_ok


# --- the real local model ------------------------------------------------------------------


@pytest.mark.local_model
async def test_rlad_on_smollm2_stores_abstractions_solutions_and_rewards(
    harness: RunHarness,
) -> None:
    local = build_local_backend(LocalModelConfig(model="smollm2-135m"))
    try:
        run_id, outcome = await harness.run(
            local,
            "rlad",
            "What is 2 + 3?",
            abstractions=2,
            solutions_per_abstraction=1,
            reference_answer="5",
            abstraction_max_tokens=48,
            solution_max_tokens=24,
        )
    finally:
        await local.close()

    assert outcome["status"] == "succeeded", outcome["error"]
    turns = await harness.store.turns(run_id)
    proposed = [t for t in turns if t.node == "propose"]
    assert sorted(t.key for t in proposed) == ["abstraction/0", "abstraction/1"]
    assert all(t.completion.strip() for t in proposed)
    assert all(t.model == "smollm2-135m" for t in turns)
    records = {r.key: r for r in await harness.store.outcomes(run_id, RladAbstraction)}
    assert "baseline" in records and len(records["baseline"].solutions) == 1
    solved = [r for r in records.values() if r.abstraction_index is not None and not r.leaked]
    solve_turns = defaultdict(list)
    for turn in turns:
        if turn.node == "solve":
            solve_turns[turn.key.split("/")[0]].append(turn)
    assert len(solve_turns["solve"]) == len(solved)
    for record in records.values():
        for solution in record.solutions:
            assert solution.reward in (0.0, 1.0)
        if not record.leaked:
            assert record.reward is not None and 0.0 <= record.reward <= 1.0
