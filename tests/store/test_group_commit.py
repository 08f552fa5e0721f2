"""Writes that arrive together share a transaction, and one write's error stays its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from store.runs import Store
from tests.conftest import solver_turn


@pytest.fixture
def commits() -> Iterator[list[object]]:
    """Every transaction committed by any engine while the test runs."""
    seen: list[object] = []

    def count(connection: object) -> None:
        seen.append(connection)

    event.listen(Engine, "commit", count)
    yield seen
    event.remove(Engine, "commit", count)


async def test_a_fan_in_of_sixteen_turns_commits_once_and_keeps_them_all(
    any_store: Store, commits: list[object]
) -> None:
    run, _ = await any_store.create_run("single", "2+2?", {})
    commits.clear()
    await asyncio.gather(
        *(
            any_store.record_turn(solver_turn(run.id, f"critic/{i}", "2+2?", completion=str(i)))
            for i in range(16)
        )
    )
    assert len(commits) == 1
    turns = await any_store.turns(run.id)
    assert sorted(t.key for t in turns) == sorted(f"critic/{i}" for i in range(16))
    events = await any_store.events_after(run.id)
    assert [e.type for e in events] == ["turn_finished"] * 16
    assert [e.payload["key"] for e in events] == [f"critic/{i}" for i in range(16)]


async def test_a_write_that_fails_in_a_shared_transaction_fails_alone(any_store: Store) -> None:
    """Two requests with one idempotency key at once: the second insert breaks the key's
    uniqueness inside the batch, and still the run stands once, and a turn of another run
    written in the same moment is kept."""
    other, _ = await any_store.create_run("single", "3+3?", {})
    first, second, _ = await asyncio.gather(
        any_store.create_run("single", "2+2?", {}, idempotency_key="same"),
        any_store.create_run("single", "2+2?", {}, idempotency_key="same"),
        any_store.record_turn(solver_turn(other.id, "solve", "3+3?", completion="6")),
    )
    assert first[0].id == second[0].id
    assert sorted([first[1], second[1]]) == [False, True]
    assert [t.key for t in await any_store.turns(other.id)] == ["solve"]
