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


CONTROL = "thinktank:events"
"""Subscribed on every shared connection; nothing is published to it."""


class RedisBus:
    """Workers publish, API processes subscribe, through Redis pub/sub.

    Live delivery only: every event that matters is in the store first. So a Redis outage
    never fails a run (a publish that cannot reach Redis is dropped), and subscribers
    reconnect by themselves; what they missed meanwhile, the event streams read back from
    the store (services.api.runs).

    A process's subscribers share one pub/sub connection and one reader task: a thousand
    SSE clients are a thousand channels on one socket, not a thousand sockets, and a run's
    first subscriber costs one SUBSCRIBE, not a new connection.
    """

    def __init__(self, url: str, max_queued: int = 10_000) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url)
        self._warned = False
        self._max_queued = max_queued
        self._queues: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self._confirmed: dict[str, asyncio.Event] = {}
        self._pubsub: Any = None
        """The shared connection while it is up; None while the reader (re)connects."""
        self._reader: asyncio.Task[None] | None = None
        self._down = False
        """The reader lost the connection and has not got it back yet."""

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
        name = channel(run_id)
        queue: asyncio.Queue = asyncio.Queue(self._max_queued)
        first = not self._queues[name]
        self._queues[name].add(queue)
        if first:
            self._confirmed[name] = asyncio.Event()
            if self._down:  # nothing to wait for: the stream reads the store meanwhile
                self._confirmed[name].set()
            await self._send(name, subscribe=True)
        try:
            # subscribed before the caller replays the store, so no event falls in between
            await asyncio.wait_for(self._confirmed[name].wait(), timeout=5)
        except TimeoutError:
            log.warning("event subscription for run %s is slow to start", run_id)
        try:
            yield queue
        finally:
            queues = self._queues.get(name, set())
            queues.discard(queue)
            if not queues:
                self._queues.pop(name, None)
                self._confirmed.pop(name, None)
                await self._send(name, subscribe=False)

    async def _send(self, name: str, *, subscribe: bool) -> None:
        """(Un)subscribe on the shared connection. While it is down there is nothing to send:
        the reader subscribes to every channel still wanted as it connects again."""
        from redis.exceptions import RedisError

        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="redis-event-reader")
        pubsub = self._pubsub
        if pubsub is None:
            return
        with contextlib.suppress(RedisError, OSError):  # the reader sees the loss too
            await (pubsub.subscribe(name) if subscribe else pubsub.unsubscribe(name))

    async def _connect(self) -> None:
        pubsub = self._redis.pubsub()
        sent: set[str] = set()
        # a control channel keeps the connection subscribed (readable) with no run watched
        wanted = {CONTROL, *self._queues}
        while wanted != sent:  # channels wanted or given up during the awaits
            if wanted - sent:
                await pubsub.subscribe(*(wanted - sent))
            if sent - wanted:
                await pubsub.unsubscribe(*(sent - wanted))
            sent = wanted
            wanted = {CONTROL, *self._queues}
        self._pubsub = pubsub

    async def _read(self) -> None:
        from redis.exceptions import RedisError

        delay = 0.2
        lost = False
        while True:
            try:
                if self._pubsub is None:
                    await self._connect()
                    self._down = False
                    if lost:
                        self._resync()
                        lost = False
                    delay = 0.2
                message = await self._pubsub.get_message(timeout=None)
            except (RedisError, OSError) as exc:
                if not lost:
                    log.info("event subscription lost (%s); reconnecting", exc)
                lost = self._down = True
                # the streams go on from the store meanwhile; none waits for a confirmation
                for confirmed in self._confirmed.values():
                    confirmed.set()
                old, self._pubsub = self._pubsub, None
                if old is not None:
                    with contextlib.suppress(Exception):
                        await old.aclose()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        name = message.get("channel")
        if isinstance(name, bytes):
            name = name.decode()
        kind = message.get("type")
        if kind == "subscribe" and name in self._confirmed:
            self._confirmed[name].set()
        elif kind == "message":
            event = json.loads(message["data"])
            for queue in list(self._queues.get(name, ())):
                with contextlib.suppress(asyncio.QueueFull):
                    # a subscriber that stopped reading loses live events, never the others
                    queue.put_nowait(event)

    def _resync(self) -> None:
        """The live feed is back after a loss: what was published meanwhile is gone from it."""
        for queues in self._queues.values():
            for queue in queues:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(RESYNC)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self._redis.aclose()
