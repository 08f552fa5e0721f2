"""A small real evaluation on the local model (SmolLM2-135M on the CPU) runs to its table."""

from __future__ import annotations

import pytest

from agents.model import ModelBackend
from agents.model_map import ModelRouter
from store.runs import Store
from training.evaluation import EvalConfig, evaluate_patterns, render_table

pytestmark = pytest.mark.local_model


async def test_two_patterns_on_generated_problems_with_the_local_model(
    store: Store, sqlite_url: str, smollm2: ModelBackend
) -> None:
    config = EvalConfig(
        patterns=["single", "self-consistency"],
        source="gen:arithmetic?difficulty=1",
        limit=2,
        options={
            "single": {"max_tokens": 24},
            "self_consistency": {"samples": 2, "max_tokens": 24, "early_stop": False},
        },
        concurrency=2,
    )
    summary, items = await evaluate_patterns(store, ModelRouter.single(smollm2), sqlite_url, config)

    assert summary.status == "finished"
    assert [(p.pattern, p.problems, p.failed) for p in summary.patterns] == [
        ("single", 2, 0),
        ("self_consistency", 2, 0),
    ]
    for item in items:
        assert isinstance(item.correct, bool) and item.reason
        turns = await store.turns(item.run_id)
        assert len(turns) == (1 if item.pattern == "single" else 2)
        assert all(0 < t.completion_tokens <= 24 for t in turns)
        assert item.completion_tokens == sum(t.completion_tokens for t in turns)
    table = render_table(summary).splitlines()
    assert table[2].startswith("single") and table[3].startswith("self_consistency")
