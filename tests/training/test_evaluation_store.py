"""Evaluations on both databases: the tables match their migration, an evaluation runs on each."""

from __future__ import annotations

import json
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from agents.backends.scripted import ScriptedBackend
from agents.model_map import ModelRouter
from store import evaluations as repo
from store.runs import Store
from store.tables.evaluations import EvaluationItem
from store.tables.runs import Base
from training.evaluation import EvalConfig, evaluate_patterns


async def test_the_tables_match_their_migration_and_hold_an_evaluation(
    any_store: Store, database_url: str, tmp_path: Path
) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection)
        return [d for d in compare_metadata(context, Base.metadata) if "evaluation" in repr(d)]

    async with any_store.engine.connect() as connection:
        assert await connection.run_sync(differences) == []

    source = tmp_path / "two.jsonl"
    source.write_text(
        json.dumps({"id": "x", "problem": "What is 1+1?", "answer": "2"})
        + "\n"
        + json.dumps({"id": "y", "problem": "What is 2+2?", "answer": "4"})
        + "\n"
    )
    backend = ScriptedBackend({"solver": ["one plus one is \\boxed{2}"]})
    summary, items = await evaluate_patterns(
        any_store,
        ModelRouter.single(backend),
        database_url,
        EvalConfig(patterns=["single"], source=str(source), name="tiny", concurrency=2),
    )
    assert [(i.problem_id, i.correct) for i in items] == [("x", True), ("y", False)]
    assert summary.patterns[0].accuracy == 0.5

    evaluation = await repo.get_evaluation(any_store, "tiny")
    assert [e.name for e in await repo.list_evaluations(any_store)] == ["tiny"]
    rows: list[EvaluationItem] = await repo.evaluation_items(any_store, evaluation.id)
    assert [(r.problem_id, r.pattern, r.status, r.correct, r.reference) for r in rows] == [
        ("x", "single", "succeeded", True, "2"),
        ("y", "single", "succeeded", False, "4"),
    ]
    assert all(r.completion_tokens == 5 and r.wall_s is not None for r in rows)
    assert rows[1].reason == "different numbers (2 != 4)"
