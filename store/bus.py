"""Live event streams of runs: in-memory when embedded, Redis pub/sub between processes.

A published event is a dict ``{"id", "run_id", "type", "data"}``. Events the store keeps
(``id`` set) can be replayed from the database after a reconnect; ``turn_started`` and
``token`` events are live only (``id`` is ``None``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any, Protocol

Event = dict[str, Any]

# Queued for a subscriber when its live feed comes back after a loss: what was published
# meanwhile is gone from the feed, so the subscriber reads the store again.
RESYNC: Event = {"id": None, "type": "resync", "data": {}}


class EventBus(Protocol):
    async def publish(self, run_id: str, event: Event) -> None: ...

    def subscribe(self, run_id: str) -> contextlib.AbstractAsyncContextManager[asyncio.Queue]: ...

    async def close(self) -> None: ...


class InMemoryBus:
    """For the embedded mode, where the API runs the graphs in its own process."""

    def __init__(self, max_queued: int = 10_000) -> None:
        self._queues: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self._max_queued = max_queued

    async def publish(self, run_id: str, event: Event) -> None:
        for queue in list(self._queues.get(run_id, ())):
            with contextlib.suppress(asyncio.QueueFull):
                # a subscriber that stopped reading loses live events, never blocks the run;
                # stored events still reach it on replay
                queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: str) -> AsyncIterator[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue(self._max_queued)
        self._queues[run_id].add(queue)
        try:
            yield queue
        finally:
            self._queues[run_id].discard(queue)
            if not self._queues[run_id]:
                del self._queues[run_id]

    async def close(self) -> None:
        self._queues.clear()


log = logging.getLogger(__name__)


def channel(run_id: str) -> str:
    return f"thinktank:events:{run_id}"


class RedisBus:
    """Workers publish, API processes subscribe, through Redis pub/sub.

    Live delivery only: every event that matters is in the store first. So a Redis outage
    never fails a run (a publish that cannot reach Redis is dropped), and subscribers
    reconnect by themselves; what they missed meanwhile, the event streams read back from
    the store (services.api.runs).
    """

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url)
        self._warned = False

    async def publish(self, run_id: str, event: Event) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.publish(channel(run_id), json.dumps(event, default=str))
            self._warned = False
        except (RedisError, OSError) as exc:
            if not self._warned:  # once per outage, not once per token
                log.warning("live events are not delivered, Redis is unreachable: %s", exc)
                self._warned = True

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: str) -> AsyncIterator[asyncio.Queue]:
        from redis.exceptions import RedisError

        queue: asyncio.Queue = asyncio.Queue(10_000)
        subscribed = asyncio.Event()

        async def pump() -> None:
            delay = 0.2
            lost = False
            while True:
                pubsub = self._redis.pubsub()
                try:
                    await pubsub.subscribe(channel(run_id))
                    subscribed.set()
                    if lost:
                        with contextlib.suppress(asyncio.QueueFull):
                            queue.put_nowait(RESYNC)
                        lost = False
                    delay = 0.2
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            with contextlib.suppress(asyncio.QueueFull):
                                queue.put_nowait(json.loads(message["data"]))
                except (RedisError, OSError) as exc:
                    log.info("event subscription lost (%s); reconnecting", exc)
                    lost = True
                    subscribed.set()  # the stream goes on from the store meanwhile
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

        task = asyncio.create_task(pump())
        try:
            # subscribed before the caller replays the store, so no event falls in between
            await asyncio.wait_for(subscribed.wait(), timeout=5)
        except TimeoutError:
            log.warning("event subscription for run %s is slow to start", run_id)
        try:
            yield queue
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self) -> None:
        await self._redis.aclose()
