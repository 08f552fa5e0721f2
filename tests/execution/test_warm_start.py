"""What a process keeps between runs (checkpointer connections, the store's pool, model
clients) survives the database closing those connections: the next run opens new ones."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import psycopg
import pytest
from sqlalchemy import text

from agents.backends.openai_compat import OpenAIBackend, OpenAIModelConfig
from agents.backends.scripted import ScriptedBackend
from agents.model_map import ModelMap, ModelRouter
from execution.runner import execute_run, submit_run
from store.db import create_engine, migrate
from store.runs import Store

pytestmark = pytest.mark.postgres

REPLIES = {"solver": ["The answer is \\boxed{4}."]}


def terminate_other_backends(database_url: str) -> int:
    """Close every server connection to the test's database, as a restart does: the
    server is back only once they have all gone."""
    libpq = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with psycopg.connect(libpq, autocommit=True) as admin:
        terminated = len(admin.execute(f"SELECT pg_terminate_backend(pid) {others}").fetchall())
        deadline = time.monotonic() + 10
        while admin.execute(f"SELECT count(*) {others}").fetchone() != (0,):
            assert time.monotonic() < deadline, "the terminated connections did not go"
            time.sleep(0.02)
    return terminated


async def backend_pids(database_url: str) -> set[int]:
    libpq = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    async with await psycopg.AsyncConnection.connect(libpq, autocommit=True) as conn:
        rows = await conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {row[0] for row in await rows.fetchall()}


@pytest.fixture
async def pg_store(own_postgres_url: str) -> AsyncIterator[Store]:
    engine = create_engine(own_postgres_url)
    await migrate(engine)
    yield Store(engine)
    await engine.dispose()


async def solve(store: Store, database_url: str) -> dict[str, object]:
    run_id = await submit_run(store, "single", "What is 2+2?", {})
    return await execute_run(
        run_id,
        store=store,
        models=ModelRouter.single(ScriptedBackend(REPLIES)),
        database_url=database_url,
    )


async def test_runs_of_one_process_reuse_their_database_connections(
    pg_store: Store, own_postgres_url: str
) -> None:
    during: list[set[int]] = []

    async def connections_at_start(_run: str, event: str, _payload: object) -> None:
        if event == "run_started":  # the run's checkpointer is open by then
            during.append(await backend_pids(own_postgres_url))

    pg_store.listeners.append(connections_at_start)
    for _ in range(4):
        assert (await solve(pg_store, own_postgres_url))["status"] == "succeeded"
    # no server connection opened for a later run, for its checkpointer or the store
    assert all(pids <= during[0] for pids in during[1:]), during


async def test_a_run_after_the_server_closed_every_pooled_connection_succeeds(
    pg_store: Store, own_postgres_url: str
) -> None:
    assert (await solve(pg_store, own_postgres_url))["status"] == "succeeded"
    assert terminate_other_backends(own_postgres_url) > 0
    outcome = await solve(pg_store, own_postgres_url)
    assert outcome["status"] == "succeeded" and outcome["answer"] == "4"
    # reads too: no stale connection reaches a statement
    assert terminate_other_backends(own_postgres_url) > 0
    async with pg_store.engine.connect() as connection:
        assert (await connection.execute(text("SELECT 1"))).scalar() == 1


def test_warming_builds_the_openai_client_before_the_first_call() -> None:
    spec = OpenAIModelConfig(base_url="http://127.0.0.1:9/v1", model="m")
    router = ModelRouter(ModelMap(default=spec, models={"critic": spec}))
    router.warm()
    built = list(router._built.values())
    assert len(built) == 1 and isinstance(built[0], OpenAIBackend)
    assert router.get("policy") is built[0] and router.get("critic") is built[0]
