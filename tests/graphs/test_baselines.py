"""The baselines: one chain of thought, and self-consistency with its early stop."""

from __future__ import annotations

from agents.backends.scripted import ScriptedBackend, Slow
from tests.conftest import RunHarness


async def test_single_answers_with_one_call(harness: RunHarness) -> None:
    model = ScriptedBackend({"solver": ["2 + 3 = 5, so \\boxed{5}"]})
    run_id, outcome = await harness.run(model, "single", "What is 2+3?")

    assert outcome["status"] == "succeeded"
    assert outcome["answer"] == "5"
    turns = await harness.store.turns(run_id)
    assert len(turns) == 1 and turns[0].completion_tokens == 7


async def test_self_consistency_votes_and_stops_once_the_majority_is_decided(
    harness: RunHarness,
) -> None:
    fast, slow = 0.01, 5.0
    model = ScriptedBackend(
        {
            "solver": [
                Slow("\\boxed{5}", fast),
                Slow("\\boxed{5}", fast),
                Slow("\\boxed{5}", fast),
                Slow("\\boxed{6}", slow),
                Slow("\\boxed{6}", slow),
            ]
        }
    )
    run_id, outcome = await harness.run(model, "self-consistency", "What is 2+3?", samples=5)

    assert outcome["answer"] == "5"
    assert outcome["stop_reason"] == "majority_decided"
    vote = harness.decisions("vote")[0]
    assert vote == {"by": "vote", "answer": "5", "votes": 3, "samples": 3, "cancelled": 2}
    # the cancelled samples were never stored as turns and spent no budget
    assert len(await harness.store.turns(run_id)) == 3


async def test_self_consistency_without_early_stop_waits_for_every_sample(
    harness: RunHarness,
) -> None:
    model = ScriptedBackend({"solver": ["\\boxed{5}", "\\boxed{5}", "\\boxed{7}", "\\boxed{7}"]})
    _, outcome = await harness.run(
        model, "self_consistency", "What is 2+3?", samples=4, early_stop=False
    )

    assert outcome["stop_reason"] == "all_samples"
    assert harness.decisions("vote")[0]["samples"] == 4
    assert outcome["answer"] == "5"  # ties go to the answer seen first
