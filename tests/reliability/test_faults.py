"""Nothing is lost when a worker is killed or PostgreSQL or Redis restarts mid-run.

Real processes and real servers: a ``thinktank worker`` killed with SIGKILL, the machine's
PostgreSQL cluster restarted, its Redis restarted (losing everything in it, as it keeps
nothing on disk). These tests restart shared servers, so they run one at a time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import redis

from agents.backends.scripted import ScriptedBackend, ScriptedModelConfig
from agents.model_map import ModelMap, ModelRouter
from execution.executor import CeleryExecutor
from execution.runner import execute_run, submit_run
from services.settings import Settings
from store.db import create_engine, migrate
from store.runs import Store
from tests.api.conftest import LiveServer, wait_for_run
from tests.reliability.conftest import (
    TWO_ROUNDS,
    TWO_ROUNDS_TURNS,
    Workers,
    restart_postgres,
    restart_redis,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[Store]:
    engine = create_engine(postgres_url)
    await migrate(engine)
    yield Store(engine)
    await engine.dispose()


async def turns_of(store: Store, run_id: str) -> list[tuple[int, str, str]]:
    return [(t.id, t.key, t.completion) for t in await store.turns(run_id)]


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 60, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def expected_keys(tmp_path: Path) -> list[str]:
    """The turns the same discussion makes when nothing goes wrong."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'reference.db'}"
    engine = create_engine(url)
    await migrate(engine)
    store = Store(engine)
    run_id = await submit_run(store, "discussion", "What is 2+3?", {})
    backend = ScriptedBackend(TWO_ROUNDS)
    await execute_run(run_id, store=store, models=ModelRouter.single(backend), database_url=url)
    keys = [key for _, key, _ in await turns_of(store, run_id)]
    await store.close()
    await engine.dispose()
    return keys


async def test_a_run_whose_worker_is_killed_finishes_on_another_with_every_turn_once(
    pg_store: Store, workers: Workers, broker: str, tmp_path: Path
) -> None:
    reference = await expected_keys(tmp_path)
    assert len(reference) == TWO_ROUNDS_TURNS
    first = workers.start()
    run_id = await submit_run(pg_store, "discussion", "What is 2+3?", {})
    executor = CeleryExecutor(broker)
    await executor.enqueue(run_id)

    async def mid_discussion() -> bool:
        return len(await turns_of(pg_store, run_id)) >= 6

    await wait_until(mid_discussion, what="the first worker to make 6 turns")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    before = await turns_of(pg_store, run_id)
    assert (await pg_store.get_run(run_id)).status == "running"
    assert len(before) < TWO_ROUNDS_TURNS, "the run should have been killed mid-discussion"

    workers.start()  # its reaper finds the run once the dead worker's lease expires

    async def finished() -> bool:
        return (await pg_store.get_run(run_id)).status in ("succeeded", "failed")

    await wait_until(finished, timeout_s=90, what="the second worker to finish the run")
    run = await pg_store.get_run(run_id)
    assert (run.status, run.answer, run.error) == ("succeeded", "5", None), workers.logs()
    after = await turns_of(pg_store, run_id)
    assert after[: len(before)] == before  # nothing stored before the kill changed
    assert sorted(key for _, key, _ in after) == sorted(reference)  # none lost, none twice
    assert run.attempts == 2
    await executor.close()


async def test_a_worker_killed_mid_fan_out_loses_no_sample_and_asks_none_twice(
    pg_store: Store, workers: Workers, broker: str
) -> None:
    """Checkpoints are written when a run ends: a run killed while 8 samples are in flight
    has none, and the next worker replays the samples stored before the kill."""
    config = {"samples": 8, "early_stop": False}
    first = workers.start(latency_s=0.3, jitter_s=2.0)
    run_id = await submit_run(pg_store, "self_consistency", "What is 2+3?", config)
    executor = CeleryExecutor(broker)
    await executor.enqueue(run_id)

    async def some_samples() -> bool:
        return len(await turns_of(pg_store, run_id)) >= 2

    await wait_until(some_samples, what="the first worker to store 2 samples")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    before = await turns_of(pg_store, run_id)
    assert 2 <= len(before) < 8, "the run should have been killed mid-fan-out"

    workers.start()

    async def finished() -> bool:
        return (await pg_store.get_run(run_id)).status in ("succeeded", "failed")

    await wait_until(finished, timeout_s=90, what="the second worker to finish the run")
    run = await pg_store.get_run(run_id)
    assert (run.status, run.answer, run.error) == ("succeeded", "5", None), workers.logs()
    after = await turns_of(pg_store, run_id)
    assert after[: len(before)] == before
    keys = [key for _, key, _ in after]
    assert len(keys) == len(set(keys)) == 8  # every sample once
    await executor.close()


async def test_postgres_restarting_mid_run_delays_the_run_but_loses_nothing(
    postgres_url: str, pg_store: Store, tmp_path: Path
) -> None:
    reference = await expected_keys(tmp_path)
    settings = Settings(
        database_url=postgres_url,
        models=ModelMap(default=ScriptedModelConfig(replies=TWO_ROUNDS, latency_s=0.2)),
        run_lease_s=1.5,
        reap_interval_s=0.3,
    )
    with LiveServer(settings) as api, httpx.Client(base_url=api.url, timeout=30) as client:
        run_id = client.post(
            "/v1/runs", json={"pattern": "discussion", "problem": "What is 2+3?"}
        ).json()["id"]

        async def mid_discussion() -> bool:
            return len(await turns_of(pg_store, run_id)) >= 4

        await wait_until(mid_discussion, what="4 turns before the restart")
        await asyncio.to_thread(restart_postgres)
        run = await asyncio.to_thread(wait_for_run, client, run_id, 90)
    assert (run["status"], run["answer"], run["error"]) == ("succeeded", "5", None)
    keys = [key for _, key, _ in await turns_of(pg_store, run_id)]
    assert sorted(keys) == sorted(reference)


async def test_runs_queued_when_redis_restarts_are_enqueued_again_from_the_store(
    pg_store: Store, workers: Workers, broker: str
) -> None:
    executor = CeleryExecutor(broker)
    run_ids = [await submit_run(pg_store, "single", f"What is 2+{i}?", {}) for i in range(3)]
    for run_id in run_ids:
        await executor.enqueue(run_id)
    assert redis.Redis.from_url(broker).llen("runs") == 3
    await asyncio.to_thread(restart_redis)
    assert redis.Redis.from_url(broker).llen("runs") == 0  # the queue is gone

    workers.start(latency_s=0.0)  # requeues runs left queued for over 2 s

    async def all_finished() -> bool:
        runs = [await pg_store.get_run(run_id) for run_id in run_ids]
        return all(r.status == "succeeded" for r in runs)

    await wait_until(all_finished, timeout_s=90, what="the queued runs to finish")
    await executor.close()


def test_an_event_stream_survives_a_redis_restart(
    postgres_url: str, workers: Workers, broker: str
) -> None:
    """The stream carries on from the store while Redis is away and ends normally."""
    workers.start(latency_s=0.3)
    settings = Settings(
        database_url=postgres_url,
        broker_url=broker,
        models=ModelMap(default=ScriptedModelConfig(replies={})),  # the API never calls it
    )
    with LiveServer(settings) as api, httpx.Client(base_url=api.url, timeout=120) as client:
        run_id = client.post(
            "/v1/runs", json={"pattern": "discussion", "problem": "What is 2+3?"}
        ).json()["id"]
        seen: list[str] = []
        restarted = threading.Event()

        def restart_when_streaming() -> None:
            while seen.count("turn_finished") < 3:
                time.sleep(0.05)
            restart_redis()
            restarted.set()

        restarter = threading.Thread(target=restart_when_streaming, daemon=True)
        restarter.start()
        with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
            for line in response.iter_lines():
                if line.startswith("event:"):
                    seen.append(line.split(":", 1)[1].strip())
        restarter.join(timeout=60)
        assert restarted.is_set()
        assert seen[-1] == "run_finished"
        assert seen.count("turn_finished") == TWO_ROUNDS_TURNS
        assert wait_for_run(client, run_id, timeout_s=60)["status"] == "succeeded"
