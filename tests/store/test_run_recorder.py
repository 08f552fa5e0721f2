"""A run's recorder: writes go behind the run, in order, and none after one that failed."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from execution.checkpoints import settle_first
from store.run_recorder import RunRecorder
from store.runs import Store
from tests.conftest import solver_turn

NOT_JSON = "not JSON serializable"


def heard(store: Store) -> list[tuple[str, Any]]:
    """What the store's listeners are told, in order: (event, its turn key or payload)."""
    seen: list[tuple[str, Any]] = []
    store.listeners.append(lambda _run, event, payload: seen.append((event, payload)))
    return seen


async def test_writes_return_at_once_and_are_stored_and_announced_in_order(
    any_store: Store,
) -> None:
    run, _ = await any_store.create_run("single", "2+2?", {})
    recorder = RunRecorder(any_store, run.id)
    told = heard(any_store)
    await recorder.record_turn(solver_turn(run.id, "a", completion="3"))
    await recorder.emit(run.id, "turn_started", {"key": "b"})
    await recorder.record_turn(solver_turn(run.id, "b", completion="4"))
    await recorder.emit(run.id, "decision", {"by": "vote", "answer": "4"})
    await recorder.settle()

    assert [t.key for t in await any_store.turns(run.id)] == ["a", "b"]
    stored = [
        (e.type, e.payload.get("key", e.payload.get("by")))
        for e in await any_store.events_after(run.id)
    ]
    assert stored == [("turn_finished", "a"), ("turn_finished", "b"), ("decision", "vote")]
    # the live-only event is announced in its place, between the turns it came between
    assert [(event, p.get("key", p.get("by"))) for event, p in told] == [
        ("turn_finished", "a"),
        ("turn_started", "b"),
        ("turn_finished", "b"),
        ("decision", "vote"),
    ]


async def test_nothing_of_a_run_is_stored_after_a_write_that_failed(any_store: Store) -> None:
    """An event that cannot be stored (its payload is not JSON) fails; the turn queued right
    behind it is not stored either, so the store keeps a prefix of the run. The failure is
    raised by the next write and by settle, once; then the run may write again."""
    run, _ = await any_store.create_run("single", "2+2?", {})
    recorder = RunRecorder(any_store, run.id)
    await recorder.record_turn(solver_turn(run.id, "a", completion="3"))
    await recorder.emit(run.id, "decision", {"by": "vote", "answer": object()})
    await recorder.record_turn(solver_turn(run.id, "b", completion="4"))
    with pytest.raises(Exception, match=NOT_JSON):
        await recorder.committed()
    with pytest.raises(Exception, match=NOT_JSON):
        await recorder.record_turn(solver_turn(run.id, "c", completion="5"))
    with pytest.raises(Exception, match=NOT_JSON):
        await recorder.settle()
    assert [t.key for t in await any_store.turns(run.id)] == ["a"]

    await recorder.record_turn(solver_turn(run.id, "d", completion="6"))
    await recorder.settle()
    assert [t.key for t in await any_store.turns(run.id)] == ["a", "d"]
    assert [e.payload["key"] for e in await any_store.events_after(run.id)] == ["a", "d"]


def thread(run_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": run_id, "checkpoint_ns": ""}}


async def test_a_checkpoint_is_written_only_after_the_turns_before_it(any_store: Store) -> None:
    run, _ = await any_store.create_run("single", "2+2?", {})
    recorder = RunRecorder(any_store, run.id)
    saver = InMemorySaver()
    settle_first(saver, recorder.committed)

    await recorder.record_turn(solver_turn(run.id, "a", completion="4"))
    await saver.aput(thread(run.id), empty_checkpoint(), {}, {})
    assert [t.key for t in await any_store.turns(run.id)] == ["a"]
    assert await saver.aget_tuple(thread(run.id)) is not None

    # after a write that failed, no checkpoint: it would be ahead of what the store holds
    other, _ = await any_store.create_run("single", "3+3?", {})
    broken = RunRecorder(any_store, other.id)
    settle_first(saver, broken.committed)
    await broken.emit(other.id, "decision", {"by": "vote", "answer": object()})
    with pytest.raises(Exception, match=NOT_JSON):
        await saver.aput(thread(other.id), empty_checkpoint(), {}, {})
    assert await saver.aget_tuple(thread(other.id)) is None
