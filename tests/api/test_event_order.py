"""A run's event stream sends every stored event once, whatever order their ids arrive in."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from services.api.runs import stream_events
from services.events import InMemoryBus
from services.store.repository import Store


async def test_a_live_event_with_a_smaller_id_than_one_already_sent_is_still_sent(
    store: Store,
) -> None:
    """Parallel critics commit their turns concurrently: id 10 may be published after 11."""
    bus = InMemoryBus()
    run, _ = await store.create_run("single", "2+2?", {})
    stream = stream_events(SimpleNamespace(bus=bus, store=store), run.id, 0)
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.1)  # subscribed, nothing stored to replay

    def event(event_id: int, kind: str) -> dict[str, object]:
        return {"id": event_id, "run_id": run.id, "type": kind, "data": {"n": event_id}}

    for published in (event(11, "turn_finished"), event(10, "turn_finished")):
        await bus.publish(run.id, published)
    await bus.publish(run.id, event(11, "turn_finished"))  # a repeat is dropped
    await bus.publish(run.id, event(12, "run_finished"))
    sent = [await first] + [e async for e in stream]
    assert [(e.id, e.event) for e in sent] == [
        ("11", "turn_finished"),
        ("10", "turn_finished"),
        ("12", "run_finished"),
    ]
