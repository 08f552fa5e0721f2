"""A run's event stream sends every stored event once, whatever order their ids arrive in."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from services.api.openai_face import stored_event_arrives
from services.api.runs import stream_events
from store.bus import RESYNC, InMemoryBus
from store.runs import Store


async def open_stream(store: Store, bus: InMemoryBus) -> tuple[str, Any, asyncio.Future]:
    """A new run, its event stream from the start, and its first event being awaited."""
    run, _ = await store.create_run("single", "2+2?", {})
    stream = stream_events(SimpleNamespace(bus=bus, store=store), run.id, 0)
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.1)  # subscribed, nothing stored to replay
    return run.id, stream, first


async def test_a_live_event_with_a_smaller_id_than_one_already_sent_is_still_sent(
    store: Store,
) -> None:
    """Parallel critics commit their turns concurrently: id 10 may be published after 11."""
    bus = InMemoryBus()
    run_id, stream, first = await open_stream(store, bus)

    def event(event_id: int, kind: str) -> dict[str, object]:
        return {"id": event_id, "run_id": run_id, "type": kind, "data": {"n": event_id}}

    for published in (event(11, "turn_finished"), event(10, "turn_finished")):
        await bus.publish(run_id, published)
    await bus.publish(run_id, event(11, "turn_finished"))  # a repeat is dropped
    await bus.publish(run_id, event(12, "run_finished"))
    sent = [await first] + [e async for e in stream]
    assert [(e.id, e.event) for e in sent] == [
        ("11", "turn_finished"),
        ("10", "turn_finished"),
        ("12", "run_finished"),
    ]


class DroppingBus(InMemoryBus):
    """A live feed that loses the events of some types, as one does across a Redis restart."""

    def __init__(self, drop: set[str]) -> None:
        super().__init__()
        self.drop = drop

    async def publish(self, run_id: str, event: dict[str, object]) -> None:
        if event["type"] not in self.drop:
            await super().publish(run_id, event)


async def test_events_the_live_feed_dropped_are_sent_from_the_store_before_the_end(
    store: Store,
) -> None:
    """The feed never goes quiet long enough for a poll, yet no stored event is missing."""
    bus = DroppingBus(drop={"turn_finished"})
    store.bus = bus
    run_id, stream, first = await open_stream(store, bus)
    for turn in range(3):
        await store.emit(run_id, "turn_started", {"turn": turn})
        await store.emit(run_id, "turn_finished", {"turn": turn})
    await store.emit(run_id, "run_finished", {"status": "succeeded"})
    sent = [await first] + [e async for e in stream]
    assert [e.event for e in sent] == ["turn_started"] * 3 + ["turn_finished"] * 3 + [
        "run_finished"
    ]
    assert len({e.id for e in sent if e.event != "turn_started"}) == 4


async def test_a_feed_that_comes_back_after_a_loss_makes_the_stream_read_the_store(
    store: Store,
) -> None:
    bus = InMemoryBus()
    run_id, _, first = await open_stream(store, bus)
    await store.emit(run_id, "turn_finished", {"turn": 0})  # stored, never published
    await bus.publish(run_id, RESYNC)
    assert (await asyncio.wait_for(first, timeout=1)).event == "turn_finished"


async def test_the_openai_face_reads_the_store_again_at_a_resync_not_at_a_token() -> None:
    wakeups: asyncio.Queue = asyncio.Queue()
    wakeups.put_nowait({"id": None, "type": "token", "data": {}})
    assert not await stored_event_arrives(wakeups, 0.1)
    wakeups.put_nowait({"id": None, "type": "token", "data": {}})
    wakeups.put_nowait(RESYNC)
    assert await stored_event_arrives(wakeups, 5)
