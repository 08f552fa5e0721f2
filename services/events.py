"""Live event streams of runs: in-memory when embedded, Redis pub/sub between processes.

A published event is a dict ``{"id", "run_id", "type", "data"}``. Events the store keeps
(``id`` set) can be replayed from the database after a reconnect; ``turn_started`` and
``token`` events are live only (``id`` is ``None``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any, Protocol

Event = dict[str, Any]


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


def channel(run_id: str) -> str:
    return f"thinktank:events:{run_id}"


class RedisBus:
    """Workers publish, API processes subscribe, through Redis pub/sub."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url)

    async def publish(self, run_id: str, event: Event) -> None:
        await self._redis.publish(channel(run_id), json.dumps(event, default=str))

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: str) -> AsyncIterator[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue(10_000)
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(channel(run_id))

        async def pump() -> None:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait(json.loads(message["data"]))

        task = asyncio.create_task(pump())
        try:
            yield queue
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await pubsub.unsubscribe(channel(run_id))
            await pubsub.aclose()

    async def close(self) -> None:
        await self._redis.aclose()
