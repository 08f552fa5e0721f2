"""The Redis event bus: every subscriber of a process shares one pub/sub connection, each
gets only its own run's events, and a lost connection comes back with a resync."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from store.bus import CONTROL, RESYNC, RedisBus, channel

URL = "redis://127.0.0.1:6379/12"


def _pubsub_clients(client: redis.Redis, name: str) -> list[dict]:
    return [c for c in client.client_list(_type="pubsub") if c.get("name") == name]


@pytest.fixture
def admin() -> redis.Redis:
    client = redis.Redis.from_url(URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    return client


async def _next(queue: asyncio.Queue) -> dict:
    return await asyncio.wait_for(queue.get(), timeout=5)


async def test_many_subscribers_share_one_connection_and_get_their_own_events(
    admin: redis.Redis,
) -> None:
    tag = f"bus-{uuid.uuid4().hex[:8]}"
    bus = RedisBus(f"{URL}?client_name={tag}")
    runs = [f"run-{i}-{tag}" for i in range(20)]
    try:
        async with asyncio.TaskGroup() as group:
            contexts = [bus.subscribe(run) for run in runs]
            tasks = [group.create_task(ctx.__aenter__()) for ctx in contexts]
        queues = [task.result() for task in tasks]
        # a second subscriber of one run shares its channel
        extra_ctx = bus.subscribe(runs[0])
        extra = await extra_ctx.__aenter__()

        assert len(_pubsub_clients(admin, tag)) == 1
        assert admin.pubsub_numsub(channel(runs[3]))[0][1] == 1

        for i, run in enumerate(runs):
            await bus.publish(run, {"id": i, "run_id": run, "type": "t", "data": {}})
        for i, queue in enumerate(queues):
            assert (await _next(queue))["id"] == i
            assert queue.empty()
        assert (await _next(extra))["id"] == 0

        await extra_ctx.__aexit__(None, None, None)
        for ctx in contexts:
            await ctx.__aexit__(None, None, None)
        for _ in range(50):  # UNSUBSCRIBE is sent, not waited for
            if admin.pubsub_numsub(channel(runs[0]))[0][1] == 0:
                break
            await asyncio.sleep(0.05)
        assert admin.pubsub_numsub(channel(runs[0]))[0][1] == 0
        assert admin.pubsub_numsub(CONTROL)[0][1] >= 1  # the connection stays for the next
    finally:
        await bus.close()


async def test_a_killed_connection_comes_back_with_a_resync_and_live_events(
    admin: redis.Redis,
) -> None:
    tag = f"bus-{uuid.uuid4().hex[:8]}"
    bus = RedisBus(f"{URL}?client_name={tag}")
    run = f"run-{tag}"
    try:
        async with bus.subscribe(run) as queue:
            for client in _pubsub_clients(admin, tag):
                admin.client_kill_filter(_id=client["id"])
            assert await _next(queue) == RESYNC
            for _ in range(50):
                if admin.pubsub_numsub(channel(run))[0][1] == 1:
                    break
                await asyncio.sleep(0.05)
            await bus.publish(run, {"id": 7, "run_id": run, "type": "t", "data": {}})
            assert (await _next(queue))["id"] == 7
    finally:
        await bus.close()
