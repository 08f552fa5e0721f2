"""SPC self-play games, driven by a scripted backend: what is stored and who earns what."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from agents.backends.scripted import ScriptedBackend, Slow
from agents.model import ModelRequest
from agents.model_map import ModelRouter
from execution.runner import execute_run, submit_run
from roles.spc import CRITIC_REASK, SpcGame
from store.runs import Store
from store.tables.runs import Base
from tests.conftest import RunHarness

PROBLEM = "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many apples are left?"
STEPS = [
    "There are 3 boxes with 4 apples each, so 3 * 4 = 12 apples.",
    "He eats 2 of them, so 12 - 2 = 10 apples are left.",
    "The answer is \\boxed{10}.",
]
SOLUTION = "\n\n".join(STEPS)
SNEAKY_STEP = "There are 3 boxes with 4 apples each, so 3 * 4 = 14 apples."
SNEAKY = (
    "### Error Type: 2. Calculation error\n"
    "### Plan: make the product 14 instead of 12.\n"
    f"### Incorrect Step: {SNEAKY_STEP}"
)
RIGHT = "So 12 - 2 = 10. \\boxed{10}"
WRONG = "So 14 - 2 = 12. \\boxed{12}"
DETECTS = "The partial solution sets up the count. The product is wrong. <Answer>Incorrect</Answer>"
APPROVES = "The partial solution sets up the count. The step is right. <Answer>Correct</Answer>"


def sneaky_in(request: ModelRequest) -> bool:
    return "= 14" in request.messages[-1].content


def rollout(*, original: list[str], sneaky: list[str]):
    """Roll-out replies by branch, in order of the calls of each branch."""
    calls = {"original": 0, "sneaky": 0}

    def reply(request: ModelRequest) -> str:
        branch = "sneaky" if sneaky_in(request) else "original"
        script = sneaky if branch == "sneaky" else original
        text = script[min(calls[branch], len(script) - 1)]
        calls[branch] += 1
        return text

    return reply


def judge_by_step(request: ModelRequest) -> str:
    """A critic that catches the planted product and approves everything else."""
    last_step = request.messages[1].content.split("# Last Step", 1)[1]
    return DETECTS if "= 14" in last_step else APPROVES


def backend(**replies: list) -> ScriptedBackend:
    script = {
        "solver": [rollout(original=[RIGHT], sneaky=[WRONG])],
        "sneaky_generator": [SNEAKY],
        "critic": [judge_by_step],
    }
    script.update(replies)
    return ScriptedBackend(script)


async def play(harness: RunHarness, model: ScriptedBackend, **config):
    config = {"reference_answer": "10", "solution": SOLUTION, "step_index": 0, **config}
    run_id, outcome = await harness.run(model, "spc_game", PROBLEM, **config)
    games = await harness.store.outcomes(run_id, SpcGame)
    turns = await harness.store.turns(run_id)
    return outcome, games, turns


async def test_a_valid_sneaky_step_the_critic_detects(harness: RunHarness) -> None:
    model = backend()
    outcome, games, turns = await play(harness, model, rollouts=4, round=2)

    assert outcome["status"] == "succeeded"
    assert outcome["answer"] == "critic_detected"
    [game] = games
    assert game.model_dump() == {
        "key": "game",
        "round": 2,
        "problem": PROBLEM,
        "reference_answer": "10",
        "solution_source": "given",
        "solver_model": "given",
        "step_index": 0,
        "steps_total": 3,
        "prefix": [],
        "original_step": STEPS[0],
        "sneaky_model": "scripted",
        "sneaky_adapter": None,
        "sneaky_turn": "sneaky",
        "error_type": "Calculation error",
        "sneaky_plan": "make the product 14 instead of 12.",
        "sneaky_step": SNEAKY_STEP,
        "rollouts": 4,
        "original_answers": ["10"] * 4,
        "sneaky_answers": ["12"] * 4,
        "original_success_rate": 1.0,
        "sneaky_success_rate": 0.0,
        "min_original_success": 0.75,
        "max_sneaky_success": 0.0,
        "valid": True,
        "invalid_reason": None,
        "critic_model": "scripted",
        "critic_adapter": None,
        "critic_turn": "critic/sneaky",
        "critic_verdict": "incorrect",
        "critic_original_turn": "critic/original",
        "critic_original_verdict": "correct",
        "result": "critic_detected",
        "critic_reward": 1,
        "sneaky_reward": -1,
        "paired_reward": 1,
    }
    assert sorted(t.key for t in turns) == sorted(
        [
            "sneaky",
            *(f"rollout/original/{i}" for i in range(4)),
            *(f"rollout/sneaky/{i}" for i in range(4)),
            "critic/sneaky",
            "critic/original",
        ]
    )
    assert {t.round for t in turns} == {2}
    sneaky_rollout = next(t for t in turns if t.key == "rollout/sneaky/0")
    assert SNEAKY_STEP in sneaky_rollout.messages[-1]["content"]
    assert STEPS[0] not in sneaky_rollout.messages[-1]["content"]
    games_announced = [p for e, p in harness.events if e == "decision" and p["by"] == "game"]
    assert games_announced[0]["critic_reward"] == 1


async def test_a_sneaky_step_that_fools_the_critic(harness: RunHarness) -> None:
    model = backend(critic=[APPROVES])
    outcome, [game], turns = await play(harness, model, rollouts=2)

    assert outcome["answer"] == "critic_fooled"
    assert (game.valid, game.critic_verdict, game.critic_original_verdict) == (
        True,
        "correct",
        "correct",
    )
    assert (game.critic_reward, game.sneaky_reward, game.paired_reward) == (-1, 1, 1)
    assert len([t for t in turns if t.role == "critic"]) == 2


async def test_a_rewrite_is_invalid_when_the_original_prefix_also_fails(
    harness: RunHarness,
) -> None:
    # 2 of 4 original completions reach 10: 50% < 75%, so the planted error proves nothing.
    model = backend(solver=[rollout(original=[RIGHT, "Maybe 11. \\boxed{11}"], sneaky=[WRONG])])
    outcome, [game], turns = await play(harness, model, rollouts=4)

    assert outcome["answer"] == "invalid_rewrite"
    assert (game.valid, game.invalid_reason) == (False, "original_fails")
    assert game.original_answers == ["10", "11", "11", "11"]
    assert game.original_success_rate == 0.25
    assert (game.critic_reward, game.sneaky_reward, game.paired_reward) == (0, -1, None)
    assert game.critic_verdict is None and game.critic_model is None
    assert not [t for t in turns if t.role == "critic"], "the critic plays only valid games"


async def test_a_rewrite_is_invalid_when_the_sneaky_prefix_still_succeeds(
    harness: RunHarness,
) -> None:
    # The solver notices the slip in one completion and still answers 10.
    model = backend(solver=[rollout(original=[RIGHT], sneaky=[WRONG, "Oops, 3*4=12. \\boxed{10}"])])
    outcome, [game], _ = await play(harness, model, rollouts=3)

    assert outcome["answer"] == "invalid_rewrite"
    assert (game.valid, game.invalid_reason) == (False, "sneaky_succeeds")
    assert game.sneaky_answers == ["12", "10", "10"]
    assert (game.original_success_rate, game.sneaky_success_rate) == (1.0, pytest.approx(2 / 3))
    assert (game.critic_reward, game.sneaky_reward) == (0, -1)


async def test_the_validity_thresholds_are_configurable(harness: RunHarness) -> None:
    model = backend(
        solver=[
            rollout(original=[RIGHT, "\\boxed{11}", RIGHT, RIGHT], sneaky=[WRONG, RIGHT, WRONG])
        ]
    )
    _, [game], _ = await play(
        harness, model, rollouts=4, min_original_success=0.75, max_sneaky_success=0.25
    )

    # 3/4 originals meet 75% exactly; 1/4 sneaky completions is within the allowed 25%.
    assert (game.original_success_rate, game.sneaky_success_rate) == (0.75, 0.25)
    assert game.valid and game.result == "critic_detected"


async def test_rollouts_and_the_paired_critic_calls_run_concurrently(
    harness: RunHarness,
) -> None:
    model = backend(
        solver=[Slow(rollout(original=[RIGHT], sneaky=[WRONG]), 0.05)],
        critic=[Slow(judge_by_step, 0.05)],
    )
    _, [game], _ = await play(harness, model, rollouts=3)

    assert game.result == "critic_detected"
    assert model.max_in_flight == 6  # 3 + 3 roll-outs at once; the 2 critic calls overlap too
    critic_calls = model.calls("critic")
    assert len(critic_calls) == 2


async def test_an_unreadable_verdict_is_asked_again_then_counted_as_its_own_outcome(
    harness: RunHarness,
) -> None:
    model = backend(critic=["I think it is fine, probably."])
    outcome, [game], turns = await play(harness, model, rollouts=2)

    assert outcome["answer"] == "critic_unparsed"
    assert (game.critic_verdict, game.critic_original_verdict) == ("unparsed", "unparsed")
    assert (game.critic_reward, game.sneaky_reward, game.paired_reward) == (-1, 0, -1)
    assert game.critic_turn == "critic/sneaky/reask"
    reask = next(t for t in turns if t.key == "critic/sneaky/reask")
    assert [m["role"] for m in reask.messages] == ["system", "user", "assistant", "user"]
    assert reask.messages[-1]["content"] == CRITIC_REASK
    assert not reask.parse_ok
    assert len([t for t in turns if t.role == "critic"]) == 4  # 2 verdicts, each asked twice


async def test_a_reask_that_answers_counts(harness: RunHarness) -> None:
    def mumbles_once_on_the_sneaky_step(request: ModelRequest) -> str:
        if len(request.messages) == 4:  # asked again
            return DETECTS
        return "no idea" if "= 14" in request.messages[1].content else APPROVES

    model = backend(critic=[mumbles_once_on_the_sneaky_step])
    outcome, [game], turns = await play(harness, model, rollouts=1)

    assert outcome["answer"] == "critic_detected"
    assert (game.critic_turn, game.critic_verdict) == ("critic/sneaky/reask", "incorrect")
    assert (game.critic_original_turn, game.critic_original_verdict) == (
        "critic/original",
        "correct",
    )
    assert (game.critic_reward, game.sneaky_reward, game.paired_reward) == (1, -1, 1)
    assert sorted(t.key for t in turns if t.role == "critic") == [
        "critic/original",
        "critic/sneaky",
        "critic/sneaky/reask",
    ]


async def test_an_unusable_rewrite_is_invalid_without_rollouts(harness: RunHarness) -> None:
    model = backend(sneaky_generator=["Sure! Here is a tricky version of the step."])
    outcome, [game], turns = await play(harness, model, rollouts=4)

    assert outcome["answer"] == "invalid_rewrite"
    assert (game.invalid_reason, game.sneaky_step, game.error_type) == (
        "unusable_rewrite",
        None,
        None,
    )
    assert (game.critic_reward, game.sneaky_reward) == (0, -1)
    assert [t.key for t in turns] == ["sneaky"]
    assert not turns[0].parse_ok and "no incorrect step" in (turns[0].parse_error or "")


async def test_a_generated_solution_is_checked_against_the_reference(harness: RunHarness) -> None:
    generated = "3 * 4 = 12.\n\n12 - 2 = 10.\n\nSo \\boxed{10}."
    solver = rollout(original=[RIGHT], sneaky=[WRONG])

    def solve_or_roll_out(request: ModelRequest) -> str:
        if "Beginning of the solution" in request.messages[-1].content:
            return solver(request)
        solve_or_roll_out.attempts += 1
        return "3 * 4 = 7, so \\boxed{5}." if solve_or_roll_out.attempts == 1 else generated

    solve_or_roll_out.attempts = 0
    model = backend(
        solver=[solve_or_roll_out],
        sneaky_generator=["### Error Type: 2\n### Plan: x\n### Incorrect Step: 3 * 4 = 14."],
    )
    outcome, [game], turns = await play(harness, model, solution=None, rollouts=2)

    assert outcome["answer"] == "critic_detected"
    assert [t.key for t in turns[:2]] == ["solution/0", "solution/1"]
    assert (game.solution_source, game.solver_model) == ("generated", "scripted")
    assert (game.original_step, game.steps_total) == ("3 * 4 = 12.", 3)
    checks = harness.decisions("checker")
    assert [c["correct"] for c in checks] == [False, True]


async def test_the_step_played_on_is_one_that_computes(harness: RunHarness) -> None:
    # a plan first and a line restating the boxed answer last, as a small model writes them
    solution = "\n\n".join(["Let's count the apples.", *STEPS])
    picked = set()
    for _ in range(8):
        _, [game], _ = await play(harness, backend(), solution=solution, step_index=None)
        picked.add(game.step_index)
    # the steps "3 * 4 = 12" and "12 - 2 = 10": a random pick of any of the 4 steps would
    # land on the plan or the closing line in 8 games all but once in 250
    assert picked <= {1, 2}


async def test_no_correct_solution_ends_the_run_without_a_game(harness: RunHarness) -> None:
    model = backend(solver=["I think it is \\boxed{7}."])
    outcome, games, turns = await play(harness, model, solution=None, solution_attempts=3)

    assert outcome["status"] == "succeeded"
    assert outcome["stop_reason"] == "no_correct_solution"
    assert outcome["answer"] is None
    assert games == []
    assert [t.key for t in turns] == ["solution/0", "solution/1", "solution/2"]


async def test_roll_outs_the_budget_cannot_pay_in_full_are_not_started(
    harness: RunHarness,
) -> None:
    # 2 x 4 roll-outs of 64 tokens need 512; a roll-out cut short would read as a failure.
    model = backend()
    outcome, games, turns = await play(
        harness, model, rollouts=4, rollout_max_tokens=64, token_budget=400
    )

    assert outcome["status"] == "succeeded"
    assert outcome["stop_reason"] == "token_budget"
    assert games == []
    assert [t.key for t in turns] == ["sneaky"]


async def test_the_sneaky_generator_and_critic_come_from_the_model_map(
    harness: RunHarness,
) -> None:
    """Round-k generator against the round-(k-1) critic: two logical names, two models."""
    solver = ScriptedBackend({"solver": [rollout(original=[RIGHT], sneaky=[WRONG])]})
    sneaky = ScriptedBackend({"sneaky_generator": [SNEAKY]}, name="sneaky-round-1")
    critic = ScriptedBackend({"critic": [judge_by_step]}, name="critic-round-0")
    models = ModelRouter(overrides={"policy": solver, "sneaky-1": sneaky, "critic-0": critic})
    config = {
        "reference_answer": "10",
        "solution": SOLUTION,
        "step_index": 0,
        "rollouts": 2,
        "round": 1,
        "sneaky_model": "sneaky-1",
        "critic_model": "critic-0",
    }
    run_id = await submit_run(harness.store, "spc_game", PROBLEM, config)
    await execute_run(run_id, store=harness.store, models=models, database_url=harness.database_url)

    [game] = await harness.store.outcomes(run_id, SpcGame)
    assert (game.sneaky_model, game.critic_model, game.round) == (
        "sneaky-round-1",
        "critic-round-0",
        1,
    )
    assert len(sneaky.requests) == 1 and len(critic.requests) == 2 and len(solver.requests) == 4


async def test_a_game_without_a_reference_answer_is_refused(harness: RunHarness) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="reference_answer"):
        await submit_run(harness.store, "spc_game", PROBLEM, {"solution": SOLUTION})
    assert await harness.store.list_runs(limit=5) == []


async def test_the_game_table_matches_its_migration_and_round_trips(any_store: Store) -> None:
    def differences(connection) -> list:
        context = MigrationContext.configure(connection)
        diff = compare_metadata(context, Base.metadata)
        return [d for d in diff if "spc_games" in repr(d)]

    async with any_store.engine.connect() as connection:
        assert await connection.run_sync(differences) == []

    run = await submit_run(any_store, "spc_game", PROBLEM, {"reference_answer": "10"})
    game = SpcGame(
        key="game",
        round=0,
        problem=PROBLEM,
        reference_answer="10",
        solution_source="given",
        solver_model="given",
        step_index=1,
        steps_total=3,
        prefix=[STEPS[0]],
        original_step=STEPS[1],
        sneaky_model="m",
        sneaky_turn="sneaky",
        rollouts=2,
        original_answers=["10", None],
        sneaky_answers=["12", "9"],
        original_success_rate=0.5,
        sneaky_success_rate=0.0,
        min_original_success=0.75,
        max_sneaky_success=0.0,
        valid=False,
        invalid_reason="original_fails",
        result="invalid_rewrite",
        critic_reward=0,
        sneaky_reward=-1,
    )
    await any_store.record_outcome(run, game)
    await any_store.record_outcome(run, game.model_copy(update={"sneaky_reward": -1}))
    assert await any_store.outcomes(run, SpcGame) == [game]
