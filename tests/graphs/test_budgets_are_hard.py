"""A run's token budget is a hard cap: models that always write as much as they are allowed,
in parallel branches, still leave the run within it."""

from __future__ import annotations

import pytest

from agents.backends.scripted import ScriptedBackend
from tests.conftest import RunHarness

# far longer than any max_tokens: every reply is cut at its limit, so each call spends all
# it was granted
RAMBLING = " ".join(["word"] * 5_000) + " \\boxed{5}"
CEO = "### Decision: <Continue>\n### Recruit Number: 3\n### Direction: go\n### Maximum Tokens: 256"


@pytest.mark.parametrize("token_budget", [16, 100, 777])
async def test_parallel_samples_at_max_length_stay_within_the_budget(
    harness: RunHarness, token_budget: int
) -> None:
    model = ScriptedBackend({"solver": [RAMBLING]})
    run_id, outcome = await harness.run(
        model,
        "self-consistency",
        "What is 2+3?",
        samples=16,
        max_tokens=512,
        early_stop=False,
        token_budget=token_budget,
    )

    turns = await harness.store.turns(run_id)
    spent = sum(turn.completion_tokens for turn in turns)
    assert spent <= token_budget
    assert outcome["status"] in ("succeeded", "failed")
    assert outcome["stop_reason"] == "token_budget"


@pytest.mark.parametrize("token_budget", [16, 300, 2_000])
async def test_a_discussion_of_ramblers_stays_within_the_budget(
    harness: RunHarness, token_budget: int
) -> None:
    model = ScriptedBackend(
        {
            "ceo": [CEO],
            "recruiter": ["1. A.\n2. B.\n3. C."],
            "solver": [RAMBLING],
            "critic": [RAMBLING],
            "evaluator": [RAMBLING],
        }
    )
    run_id, outcome = await harness.run(
        model, "discussion", "What is 2+3?", agents=3, max_rounds=3, token_budget=token_budget
    )

    turns = await harness.store.turns(run_id)
    assert sum(turn.completion_tokens for turn in turns) <= token_budget
    assert outcome["status"] in ("succeeded", "failed")
