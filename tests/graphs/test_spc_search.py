"""SPC-guided search, driven by a scripted backend: steps, verdicts, retries and the vote."""

from __future__ import annotations

from agents.backends.scripted import ScriptedBackend, Slow
from agents.model import ModelRequest
from tests.conftest import RunHarness

PROBLEM = "What is 2 + 2, doubled?"
CORRECT = "The step holds. <Answer>Correct</Answer>"
INCORRECT = "The sum is wrong. <Answer>Incorrect</Answer>"


def critic_actions(harness: RunHarness) -> list[tuple[int, int, int, str, str]]:
    return [
        (d["trajectory"], d["step"], d["retry"], d["verdict"], d["action"])
        for d in harness.decisions("critic")
    ]


async def test_a_rejected_step_is_resampled(harness: RunHarness) -> None:
    model = ScriptedBackend(
        {
            "solver": ["2 + 2 = 5.", "2 + 2 = 4.", "Doubled, 4 * 2 = 8, so \\boxed{8}."],
            "critic": [INCORRECT, CORRECT, CORRECT],
        }
    )
    run_id, outcome = await harness.run(model, "spc-search", PROBLEM, trajectories=1)

    assert outcome["status"] == "succeeded"
    assert outcome["answer"] == "8"
    turns = await harness.store.turns(run_id)
    assert [t.key for t in turns] == [
        "t0/s0/r0/step",
        "t0/s0/r0/critic",
        "t0/s0/r1/step",
        "t0/s0/r1/critic",
        "t0/s1/r0/step",
        "t0/s1/r0/critic",
    ]
    assert critic_actions(harness) == [
        (0, 0, 0, "incorrect", "resample"),
        (0, 0, 1, "correct", "accept"),
        (0, 1, 0, "correct", "accept"),
    ]
    # The critic judges the step given the steps so far; the rejected one is gone for good.
    last_critic = turns[-1].messages[1]["content"]
    assert "# Partial Solution\n2 + 2 = 4." in last_critic
    assert "2 + 2 = 5." not in last_critic
    assert "2 + 2 = 5." not in turns[-2].messages[1]["content"]
    assert turns[0].params["stop"] == ["\n\n"]
    assert turns[1].params["temperature"] == 0.0


async def test_the_retry_cap_ends_the_resampling_and_keeps_the_last_sample(
    harness: RunHarness,
) -> None:
    model = ScriptedBackend({"solver": ["2 + 2 = 5, so \\boxed{10}."], "critic": [INCORRECT]})
    run_id, outcome = await harness.run(model, "spc-search", PROBLEM, trajectories=1, max_retries=2)

    assert outcome["status"] == "succeeded"
    steps = [t for t in await harness.store.turns(run_id) if t.role == "solver"]
    assert [t.key for t in steps] == ["t0/s0/r0/step", "t0/s0/r1/step", "t0/s0/r2/step"]
    assert critic_actions(harness) == [
        (0, 0, 0, "incorrect", "resample"),
        (0, 0, 1, "incorrect", "resample"),
        (0, 0, 2, "incorrect", "accept_fallback"),
    ]
    [vote] = harness.decisions("vote")
    assert vote["trajectories"] == [
        {"trajectory": 0, "answer": "10", "stop": "answered", "rejected": 3, "fallbacks": 1}
    ]
    assert outcome["answer"] == "10"


async def test_an_unreadable_verdict_is_asked_again_and_never_accepts_a_step(
    harness: RunHarness,
) -> None:
    model = ScriptedBackend(
        {
            "solver": ["2 + 2 = 4, doubled is \\boxed{8}."],
            "critic": ["Looks fine to me.", "Still fine.", CORRECT],
        }
    )
    run_id, outcome = await harness.run(model, "spc-search", PROBLEM, trajectories=1)

    assert outcome["answer"] == "8"
    keys = [t.key for t in await harness.store.turns(run_id)]
    assert keys == [
        "t0/s0/r0/step",
        "t0/s0/r0/critic",
        "t0/s0/r0/critic/reask",
        "t0/s0/r1/step",
        "t0/s0/r1/critic",
    ]
    assert critic_actions(harness) == [
        (0, 0, 0, "unparsed", "resample"),
        (0, 0, 1, "correct", "accept"),
    ]


async def test_parallel_trajectories_are_voted_on(harness: RunHarness) -> None:
    def by_trajectory(request: ModelRequest) -> str:
        answer = "9" if request.tags["agent"] == "Solver 2" else "8"
        return f"2 + 2 = 4, doubled is \\boxed{{{answer}}}."

    model = ScriptedBackend(
        {"solver": [Slow(by_trajectory, 0.05)], "critic": [Slow(CORRECT, 0.05)]}
    )
    run_id, outcome = await harness.run(model, "spc-search", PROBLEM, trajectories=3)

    assert outcome["answer"] == "8"
    assert outcome["stop_reason"] == "voted"
    assert model.max_in_flight == 3
    [vote] = harness.decisions("vote")
    assert (vote["answer"], vote["votes"], vote["samples"]) == ("8", 2, 3)
    assert len(await harness.store.turns(run_id)) == 6


async def test_a_trajectory_stops_at_max_steps_and_the_budget_is_never_exceeded(
    harness: RunHarness,
) -> None:
    model = ScriptedBackend({"solver": ["Keep adding numbers."], "critic": [CORRECT]})
    _, outcome = await harness.run(
        model, "spc-search", PROBLEM, trajectories=1, max_steps=3, token_budget=10_000
    )
    assert outcome["answer"] is None
    [vote] = harness.decisions("vote")
    assert vote["trajectories"][0]["stop"] == "max_steps"

    run_id, outcome = await harness.run(
        model,
        "spc-search",
        PROBLEM,
        trajectories=2,
        max_steps=50,
        token_budget=60,
        step_max_tokens=16,
        critic_max_tokens=16,
    )
    assert outcome["stop_reason"] == "token_budget"
    run = await harness.store.get_run(run_id)
    assert run.completion_tokens <= 60
