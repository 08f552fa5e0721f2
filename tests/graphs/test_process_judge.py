"""The process judge: a verifier names the earliest wrong step; several judgments are voted."""

from __future__ import annotations

from agents.backends.scripted import ScriptedBackend
from tests.conftest import RunHarness

PROBLEM = "A box holds 6 eggs. How many eggs are in 5 boxes?"
STEPS = ["Each box holds 6 eggs.", "5 boxes hold 6 + 5 = 11 eggs.", "The answer is 11."]


async def test_the_judges_vote_and_an_unreadable_judgment_is_left_out(harness: RunHarness) -> None:
    model = ScriptedBackend(
        {
            "verifier": [
                "\\boxed{1}",
                "I am not sure.",
                "Paragraph 1 is wrong: \\boxed{1}",
                "\\boxed{2}",
            ]
        }
    )
    run_id, outcome = await harness.run(model, "process_judge", PROBLEM, steps=STEPS, samples=4)

    assert outcome["status"] == "succeeded"
    assert (outcome["answer"], outcome["stop_reason"]) == ("1", "judged")
    assert harness.decisions("judge") == [
        {"by": "judge", "first_wrong": 1, "votes": 2, "usable": 3, "samples": 4}
    ]
    turns = await harness.store.turns(run_id)
    assert sorted(t.key for t in turns) == ["judge/0", "judge/1", "judge/2", "judge/3"]
    assert all(t.params["temperature"] == 0.0 for t in turns)  # ProcessBench decodes greedily
    prompt = turns[0].messages[-1]["content"]
    assert "<paragraph_2>\nThe answer is 11.\n</paragraph_2>" in prompt
    unreadable = next(t for t in turns if t.completion == "I am not sure.")
    assert not unreadable.parse_ok


async def test_no_usable_judgment_gives_no_answer(harness: RunHarness) -> None:
    model = ScriptedBackend({"verifier": ["\\boxed{7}"]})  # there is no paragraph 7
    _, outcome = await harness.run(model, "process_judge", PROBLEM, steps=STEPS)

    assert outcome["status"] == "succeeded"
    assert (outcome["answer"], outcome["stop_reason"]) == (None, "no_verdict")
