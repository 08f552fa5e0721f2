"""The store on SQLite and on this machine's real PostgreSQL: runs, turns, checkpoints."""

from __future__ import annotations

from typing import Any

import pytest

from agents.backends.scripted import ScriptedBackend
from agents.calls import TurnRecord
from store.db import DatabaseURLError, check_database_url
from store.runs import RunNotFound, Store
from tests.conftest import RunHarness, solver_turn

HOSTILE = "2+2? it's <b>bold</b>'; DROP TABLE runs;--"


def turn(run_id: str, key: str, **fields: Any) -> TurnRecord:
    return solver_turn(run_id, key, HOSTILE, **fields)


async def test_runs_and_turns_round_trip(any_store: Store) -> None:
    run, _ = await any_store.create_run("single", "2+2?", {"max_tokens": 10})
    await any_store.record_turn(turn(run.id, "a", completion="4", completion_tokens=1))
    await any_store.record_turn(
        turn(
            run.id,
            "b",
            completion="\\boxed{4}",
            completion_tokens=3,
            prompt_tokens=5,
            parsed={"x": [1, 2]},
            latency_s=0.25,
        )
    )

    turns = await any_store.turns(run.id)
    assert [t.key for t in turns] == ["a", "b"]
    assert turns[1].parsed == {"x": [1, 2]}
    assert turns[1].latency_ms == pytest.approx(250.0)
    assert turns[0].messages[0]["content"].endswith("DROP TABLE runs;--")
    assert await any_store.token_totals(run.id) == (5, 4)
    assert (await any_store.find_turn(run.id, "b")).completion == "\\boxed{4}"
    assert await any_store.find_turn(run.id, "zzz") is None


async def test_a_model_reply_with_nul_characters_is_stored_not_fatal(any_store: Store) -> None:
    """PostgreSQL cannot store NUL in text; a model that emits one must not fail its run."""
    run, _ = await any_store.create_run("single", "2+2?", {})
    await any_store.record_turn(
        turn(run.id, "a", completion="4\x00 done", parsed={"note": "a\x00b"}, completion_tokens=2)
    )
    stored = await any_store.find_turn(run.id, "a")
    assert stored.completion == "4\ufffd done"
    assert stored.parsed == {"note": "a\ufffdb"}


async def test_a_turn_made_again_replaces_the_failed_attempt(any_store: Store) -> None:
    run, _ = await any_store.create_run("single", "2+2?", {})
    await any_store.record_turn(turn(run.id, "solve", error="ModelError: timeout"))
    await any_store.record_turn(turn(run.id, "solve", completion="4", completion_tokens=1))

    turns = await any_store.turns(run.id)
    assert len(turns) == 1
    assert turns[0].error is None and turns[0].completion == "4"


async def test_listing_filters_and_finishing(any_store: Store) -> None:
    first, _ = await any_store.create_run("single", "a", {})
    second, _ = await any_store.create_run("discussion", "b", {})
    await any_store.finish_run(first.id, status="succeeded", answer="1", stop_reason="done")

    assert {r.id for r in await any_store.list_runs()} >= {first.id, second.id}
    assert [r.id for r in await any_store.list_runs(pattern="discussion")][:1] == [second.id]
    done = await any_store.list_runs(status="succeeded")
    assert first.id in {r.id for r in done} and second.id not in {r.id for r in done}
    stored = await any_store.get_run(first.id)
    assert stored.answer == "1" and stored.finished_at is not None
    with pytest.raises(RunNotFound, match="no run with id"):
        await any_store.get_run("missing")


async def test_a_whole_discussion_with_checkpoints(any_store: Store, database_url: str) -> None:
    harness = RunHarness(any_store, database_url)
    model = ScriptedBackend({"solver": ["\\boxed{4}"], "critic": ["ok [Agree]"]})
    run_id, outcome = await harness.run(model, "discussion", "2+2?", max_rounds=1)

    assert outcome["status"] == "succeeded" and outcome["answer"] == "4"
    # the unscripted CEO reply is unreadable, so the default team of two: one critic
    assert [t.node for t in await any_store.turns(run_id)] == [
        "ceo",
        "recruit",
        "solve",
        "critique",
        "evaluate",
    ]


def test_database_urls_are_checked() -> None:
    assert check_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert check_database_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    with pytest.raises(DatabaseURLError, match="unsupported database"):
        check_database_url("mysql://u@h/db")
    with pytest.raises(DatabaseURLError, match="not a database URL"):
        check_database_url("::::")


async def test_a_run_cancelled_while_queued_ends_its_event_stream(any_store: Store) -> None:
    run, _ = await any_store.create_run("single", "2+2?", {})
    cancelled = await any_store.request_cancel(run.id)

    assert cancelled.status == "cancelled" and cancelled.cancel_requested
    events = await any_store.events_after(run.id)
    assert [(e.type, e.payload["status"]) for e in events] == [("run_finished", "cancelled")]
