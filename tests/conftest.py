"""Shared fixtures: a migrated store on SQLite or on this machine's real PostgreSQL, and a
helper that runs a pattern end to end against any backend."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.calls import TurnRecord
from agents.model import ChatMessage, ModelBackend
from agents.model_map import ModelRouter
from execution.runner import RunOutcome, execute_run, submit_run
from store.db import create_engine, migrate
from store.runs import Store

SMOLLM2 = {"model": "smollm2-135m", "engine": "transformers"}
"""A local model spec for tests of the transformers engine (the one training loads)."""

POSTGRES_ADMIN_URL = os.environ.get(
    "THINKTANK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session", autouse=True)
def shared_model_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Base models assembled from their packages once per session, not once per test's data
    directory (CLI and server processes inherit it through the environment)."""
    folder = tmp_path_factory.mktemp("gguf")
    previous = os.environ.get("THINKTANK_MODELS_DIR")
    os.environ["THINKTANK_MODELS_DIR"] = str(folder)
    yield
    if previous is None:
        os.environ.pop("THINKTANK_MODELS_DIR", None)
    else:
        os.environ["THINKTANK_MODELS_DIR"] = previous


def solver_turn(run_id: str, key: str, content: str = "2+2?", **fields: Any) -> TurnRecord:
    """A stored-turn record for store tests: a solver asked ``content``."""
    return TurnRecord(
        run_id=run_id,
        key=key,
        node="solve",
        agent="Solver",
        role="solver",
        model="m",
        messages=[ChatMessage(role="user", content=content)],
        **fields,
    )


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real ``thinktank`` command line, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new database on the real PostgreSQL server, dropped afterwards."""
    import psycopg

    name = f"thinktank_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server, shared by the session's tests."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def own_postgres_url() -> Iterator[str]:
    """A database of the test's own, for tests whose processes count every row in it."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'thinktank.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'thinktank.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    engine = create_engine(sqlite_url)
    await migrate(engine)
    yield Store(engine)
    await engine.dispose()


@pytest.fixture
async def any_store(database_url: str) -> AsyncIterator[Store]:
    """A migrated store on each database: SQLite, then the real PostgreSQL."""
    engine = create_engine(database_url)
    await migrate(engine)
    await migrate(engine)  # migrating twice is harmless: every start does it
    yield Store(engine)
    await engine.dispose()


class RunHarness:
    """Submits and executes runs on one store with one backend answering every model name."""

    def __init__(self, store: Store, database_url: str) -> None:
        self.store = store
        self.database_url = database_url
        self.events: list[tuple[str, dict[str, Any]]] = []
        store.listeners.append(lambda _run, event, payload: self.events.append((event, payload)))

    async def run(
        self, backend: ModelBackend, pattern: str, problem: str, **config: Any
    ) -> tuple[str, RunOutcome]:
        run_id = await submit_run(self.store, pattern, problem, config)
        outcome = await execute_run(
            run_id,
            store=self.store,
            models=ModelRouter.single(backend),
            database_url=self.database_url,
        )
        return run_id, outcome

    def decisions(self, by: str) -> list[dict[str, Any]]:
        return [p for e, p in self.events if e == "decision" and p.get("by") == by]


@pytest.fixture
def harness(store: Store, sqlite_url: str) -> RunHarness:
    return RunHarness(store, sqlite_url)


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelBackend]:
    """The real local backend on transformers (SmolLM2-135M on the CPU), shared by the tests of
    a session that need a real model and the engine training uses; its dequantized cache lives
    under pytest's temporary directory."""
    import asyncio

    # torch loads only for tests that use it
    from agents.backends.local.config import LocalModelConfig
    from agents.backends.local.hf_backend import TransformersBackend

    cache = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct"
    backend = TransformersBackend(
        LocalModelConfig(**SMOLLM2, cache_dir=cache, max_batch_size=8, batch_wait_ms=20)
    )
    yield backend
    asyncio.run(backend.close())
