"""A run is executed by one worker at a time, and one whose worker vanished is found again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import update

from agents.backends.scripted import ScriptedBackend
from agents.model_map import ModelRouter
from execution.runner import execute_run, submit_run
from services.api.runs import stream_events
from store.bus import InMemoryBus
from store.runs import Store
from store.tables.runs import Run


async def backdate(store: Store, run_id: str, **columns: datetime) -> None:
    async with store.engine.begin() as connection:
        await connection.execute(update(Run).where(Run.id == run_id).values(**columns))


async def test_of_two_workers_racing_for_a_run_exactly_one_gets_it(any_store: Store) -> None:
    run, _ = await any_store.create_run("single", "2+2?", {})
    won = await asyncio.gather(
        *(any_store.claim_run(run.id, f"worker-{i}", lease_s=30) for i in range(4))
    )
    assert sorted(won) == [False, False, False, True]
    stored = await any_store.get_run(run.id)
    assert stored.status == "running"
    assert stored.lease_owner == f"worker-{won.index(True)}"
    assert stored.attempts == 1


async def test_a_live_lease_keeps_others_out_until_it_expires(any_store: Store) -> None:
    run, _ = await any_store.create_run("single", "2+2?", {})
    assert await any_store.claim_run(run.id, "worker-a", lease_s=30)
    assert not await any_store.claim_run(run.id, "worker-b", lease_s=30)
    assert await any_store.renew_lease(run.id, "worker-a", lease_s=30)
    assert not await any_store.renew_lease(run.id, "worker-b", lease_s=30)

    await backdate(any_store, run.id, lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert await any_store.claim_run(run.id, "worker-b", lease_s=30)
    # the old holder finds out at its next renewal and stops
    assert not await any_store.renew_lease(run.id, "worker-a", lease_s=30)
    assert (await any_store.get_run(run.id)).attempts == 2


async def test_a_holder_known_dead_is_taken_over_at_once(any_store: Store) -> None:
    run, _ = await any_store.create_run("single", "2+2?", {})
    assert await any_store.claim_run(run.id, "worker-a", lease_s=30)
    assert not await any_store.claim_run(run.id, "worker-b", lease_s=30, take_from="worker-c")
    assert await any_store.claim_run(run.id, "worker-b", lease_s=30, take_from="worker-a")


async def test_finished_runs_are_never_claimed_again(any_store: Store) -> None:
    run, _ = await any_store.create_run("single", "2+2?", {})
    assert await any_store.claim_run(run.id, "worker-a", lease_s=30)
    await any_store.finish_run(run.id, status="succeeded", answer="4")
    assert not await any_store.claim_run(run.id, "worker-b", lease_s=30)
    stored = await any_store.get_run(run.id)
    assert (stored.status, stored.lease_owner) == ("succeeded", None)


async def test_abandoned_and_forgotten_runs_are_enqueued_again_once(any_store: Store) -> None:
    now = datetime.now(UTC)
    fresh, _ = await any_store.create_run("single", "queued just now", {})
    forgotten, _ = await any_store.create_run("single", "queued long ago", {})
    await backdate(any_store, forgotten.id, enqueued_at=now - timedelta(minutes=20))
    busy, _ = await any_store.create_run("single", "running, lease live", {})
    assert await any_store.claim_run(busy.id, "worker-a", lease_s=30)
    abandoned, _ = await any_store.create_run("single", "running, worker died", {})
    assert await any_store.claim_run(abandoned.id, "worker-b", lease_s=30)
    await backdate(
        any_store,
        abandoned.id,
        enqueued_at=now - timedelta(seconds=60),
        lease_expires_at=now - timedelta(seconds=1),
    )
    done, _ = await any_store.create_run("single", "finished", {})
    await any_store.finish_run(done.id, status="failed", error="x")
    await backdate(any_store, done.id, enqueued_at=now - timedelta(minutes=20))

    due = await any_store.requeue_due(requeue_after_s=600)
    assert sorted(due) == sorted([forgotten.id, abandoned.id])
    # enqueued again now: a second reaper, or the next pass, leaves them alone
    assert await any_store.requeue_due(requeue_after_s=600) == []
    assert fresh.id not in due and busy.id not in due


async def test_a_run_that_finishes_as_its_lease_is_renewed_still_ends_its_stream(
    store: Store, sqlite_url: str
) -> None:
    """Renewals every few milliseconds: many fall just after a run's outcome is written. The
    keeper must not take such a run for lost and cut its finishing short: every run ends
    succeeded, with ``run_finished`` as its last event, and a client's stream of it closes."""
    model = ScriptedBackend({"solver": ["2 + 2 = \\boxed{4}"]})
    run_ids = [await submit_run(store, "single", f"2+2? ({i})", {}) for i in range(RACED_RUNS)]
    for run_id in run_ids:
        outcome = await execute_run(
            run_id,
            store=store,
            models=ModelRouter.single(model),
            database_url=sqlite_url,
            lease_s=0.006,
        )
        assert (outcome["status"], outcome["answer"]) == ("succeeded", "4")

    services = SimpleNamespace(store=store, bus=InMemoryBus())
    for run_id in run_ids:
        run = await store.get_run(run_id)
        assert (run.status, run.lease_owner) == ("succeeded", None)
        events = await store.events_after(run_id)
        assert events[-1].type == "run_finished", [e.type for e in events]
        assert events[-1].payload["status"] == "succeeded"
        assert [e.type for e in events].count("run_finished") == 1
        streamed = await asyncio.wait_for(_streamed(services, run_id), timeout=10)
        assert streamed[-1] == "run_finished"


RACED_RUNS = 40


async def _streamed(services: Any, run_id: str) -> list[str]:
    """The event types a client of ``GET /v1/runs/{id}/events`` receives, to the stream's end."""
    return [event.event async for event in stream_events(services, run_id, 0)]
