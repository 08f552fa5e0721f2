"""API keys as clients and operators meet them: keys made and revoked with the real CLI, a
real server with keys on, and request rates counted in the real Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn

from services.api.auth import keys_required
from services.ratelimit import REDIS_PREFIX
from store import api_keys
from store.db import create_engine, migrate
from store.runs import Store
from tests.api.conftest import LiveServer, scripted_settings, wait_for_run
from tests.conftest import run_cli

REDIS_URL = os.environ.get("THINKTANK_TEST_REDIS", "redis://127.0.0.1:6379/0")
SINGLE = {"pattern": "single", "problem": "What is 2+3?"}


def database_url(tmp_path: Path) -> str:
    return scripted_settings(tmp_path).database_url


def thinktank(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, on the same SQLite file the server uses."""
    env = {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path),
        "THINKTANK_DATABASE_URL": database_url(tmp_path),
        "COLUMNS": "200",
    }
    return run_cli(env, *args)


def cli_key(tmp_path: Path, name: str, *options: str) -> str:
    result = thinktank(tmp_path, "keys", "create", name, *options)
    assert result.returncode == 0, result.stderr
    assert "cannot be shown again" in result.stdout
    (key,) = [line.strip() for line in result.stdout.splitlines() if line.startswith("tt_")]
    return key


def direct_key(tmp_path: Path, name: str, **limits: int) -> str:
    """A key made in-process: for tests about what keys do, not how they are made (the CLI
    takes seconds to start)."""

    async def create() -> str:
        engine = create_engine(database_url(tmp_path))
        try:
            await migrate(engine)
            _, key = await api_keys.create_key(Store(engine), name, **limits)
        finally:
            await engine.dispose()
        return key

    return asyncio.run(create())


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    yield client
    client.close()


@pytest.fixture
def keyed_api(tmp_path: Path, redis_client: redis.Redis) -> Iterator[LiveServer]:
    """Keys on, request rates in Redis. Key ids are fresh uuids, so each test's counts are
    its own; they are deleted afterwards."""
    settings = scripted_settings(tmp_path, auth="on", redis_url=REDIS_URL)
    with LiveServer(settings) as server:
        yield server
    with sqlite3.connect(tmp_path / "api.db") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM api_keys")]
    if ids:
        redis_client.delete(*(REDIS_PREFIX + key_id for key_id in ids))


def test_v1_without_a_valid_key_is_401_with_the_reason(keyed_api: LiveServer) -> None:
    with httpx.Client(base_url=keyed_api.url) as client:
        cases = [
            ({}, "an API key is required"),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, "must be 'Bearer <API key>'"),
            (bearer("tt_" + "x" * 43), "unknown API key"),
            ({"X-API-Key": "not-a-key"}, "unknown API key"),
        ]
        for headers, reason in cases:
            for path in ("/v1/runs", "/v1/patterns", "/v1/runs/anything/turns"):
                response = client.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert reason in response.json()["detail"]
                assert response.headers["www-authenticate"].startswith("Bearer")
                # OpenAI's shape too, for OpenAI clients of /v1/chat/completions
                assert response.json()["error"]["code"] == "invalid_api_key"
        # a bad key is refused before its (large) body is read or anything is stored
        refused = client.post("/v1/runs", json={**SINGLE, "problem": "x" * 50_000})
        assert refused.status_code == 401
        # the docs stay open, so a client can learn how to authenticate
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200


def test_a_cli_key_works_until_the_cli_revokes_it(tmp_path: Path, keyed_api: LiveServer) -> None:
    key = cli_key(tmp_path, "ci bot")
    with httpx.Client(base_url=keyed_api.url) as client:
        assert client.get("/v1/runs", headers=bearer(key)).status_code == 200
        assert client.get("/v1/runs", headers={"X-API-Key": key}).status_code == 200

        prefix = api_keys.display_prefix(key)
        revoked = thinktank(tmp_path, "keys", "revoke", prefix)
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked API key" in revoked.stdout

        # no cache stands between the revocation and the very next request
        response = client.get("/v1/runs", headers=bearer(key))
        assert response.status_code == 401
        assert response.json()["detail"] == "this API key was revoked"
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    listed = thinktank(tmp_path, "keys", "list")
    assert prefix in listed.stdout and "ci bot" in listed.stdout


def test_the_fourth_request_in_a_minute_gets_429_with_retry_after(
    tmp_path: Path, keyed_api: LiveServer, redis_client: redis.Redis
) -> None:
    key = cli_key(tmp_path, "slow client", "--rate-limit", "3")
    other = direct_key(tmp_path, "another client")
    with httpx.Client(base_url=keyed_api.url, headers=bearer(key)) as client:
        for _ in range(3):
            assert client.get("/v1/runs").status_code == 200
        limited = client.get("/v1/runs")
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "3 requests per minute" in limited.json()["detail"]
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        # the limit is the key's own: another key is not slowed down by it
        assert client.get("/v1/runs", headers=bearer(other)).status_code == 200

    # the count is in Redis (shared by every API process), and it expires with the window
    with sqlite3.connect(tmp_path / "api.db") as db:
        (key_id,) = db.execute(
            "SELECT id FROM api_keys WHERE prefix = ?", (api_keys.display_prefix(key),)
        ).fetchone()
    assert int(redis_client.get(REDIS_PREFIX + key_id)) == 4
    assert 0 < redis_client.pttl(REDIS_PREFIX + key_id) <= 60_000


def test_a_spent_token_quota_refuses_the_next_submission(
    tmp_path: Path, keyed_api: LiveServer
) -> None:
    key = direct_key(tmp_path, "tiny budget", token_quota=10, rate_limit_per_minute=10_000)
    with httpx.Client(base_url=keyed_api.url, headers=bearer(key)) as client:
        first = client.post("/v1/runs", json=SINGLE)
        assert first.status_code == 202
        run = wait_for_run(client, first.json()["id"])
        assert run["usage"]["total_tokens"] > 10

        refused = client.post("/v1/runs", json=SINGLE)
        assert refused.status_code == 429
        assert "token quota exhausted" in refused.json()["detail"]
        # waiting does not refill a quota, so no Retry-After promises that it will
        assert "retry-after" not in refused.headers
        # the OpenAI face starts runs too, and OpenAI clients are told not to retry
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "thinktank/single", "messages": [{"role": "user", "content": "2+3?"}]},
        )
        assert chat.status_code == 429 and chat.headers["x-should-retry"] == "false"
        assert chat.json()["error"]["code"] == "insufficient_quota"
        # reading what the key already paid for still works
        assert client.get(f"/v1/runs/{run['id']}").status_code == 200
        assert len(client.get("/v1/runs").json()["items"]) == 1


def test_each_key_sees_only_its_own_runs(tmp_path: Path, keyed_api: LiveServer) -> None:
    alice = direct_key(tmp_path, "alice", rate_limit_per_minute=10_000)
    bob = direct_key(tmp_path, "bob", rate_limit_per_minute=10_000)
    with (
        httpx.Client(base_url=keyed_api.url, headers=bearer(alice)) as as_alice,
        httpx.Client(base_url=keyed_api.url, headers=bearer(bob)) as as_bob,
    ):
        same_idempotency_key = {"Idempotency-Key": "order-42"}
        alices = as_alice.post("/v1/runs", json=SINGLE, headers=same_idempotency_key)
        bobs = as_bob.post("/v1/runs", json=SINGLE, headers=same_idempotency_key)
        # each key has its own idempotency keys: bob's request made bob a run of his own
        assert alices.status_code == bobs.status_code == 202
        alices_id, bobs_id = alices.json()["id"], bobs.json()["id"]
        assert alices_id != bobs_id
        again = as_alice.post("/v1/runs", json=SINGLE, headers=same_idempotency_key)
        assert again.status_code == 200 and again.json()["id"] == alices_id

        assert [r["id"] for r in as_alice.get("/v1/runs").json()["items"]] == [alices_id]
        assert [r["id"] for r in as_bob.get("/v1/runs").json()["items"]] == [bobs_id]

        # to bob, alice's run does not exist, by any route
        for method, path in [
            ("GET", f"/v1/runs/{alices_id}"),
            ("GET", f"/v1/runs/{alices_id}/turns"),
            ("GET", f"/v1/runs/{alices_id}/events"),
            ("POST", f"/v1/runs/{alices_id}/cancel"),
        ]:
            response = as_bob.request(method, path)
            assert response.status_code == 404, (method, path)
            assert response.json()["detail"] == f"no run with id {alices_id!r}"
        assert wait_for_run(as_alice, alices_id)["status"] == "succeeded"
        assert not as_alice.get(f"/v1/runs/{alices_id}").json()["cancel_requested"]


@pytest.mark.parametrize(
    ("auth", "bind_host", "required"),
    [
        ("auto", "127.0.0.1", False),
        ("auto", "127.8.9.10", False),
        ("auto", "::1", False),
        ("auto", "[::1]", False),
        ("auto", "localhost", False),
        ("auto", "0.0.0.0", True),
        ("auto", "::", True),
        ("auto", "192.168.1.20", True),
        ("auto", "api.example.com", True),  # a name could resolve anywhere
        ("on", "127.0.0.1", True),
        ("off", "0.0.0.0", False),
    ],
)
def test_when_keys_are_required(auth: str, bind_host: str, required: bool) -> None:
    assert keys_required(auth, bind_host) is required  # type: ignore[arg-type]


def test_auto_auth_trusts_loopback_only(tmp_path: Path) -> None:
    settings = scripted_settings(tmp_path, auth="auto")
    with LiveServer(settings, bind_host="127.0.0.1") as local:
        assert httpx.get(f"{local.url}/v1/runs").status_code == 200
    with LiveServer(settings, bind_host="0.0.0.0") as public:
        assert httpx.get(f"{public.url}/v1/runs").status_code == 401


class CapturedLogs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=1)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def chatty_api(tmp_path: Path) -> Iterator[tuple[LiveServer, CapturedLogs]]:
    """Keys on, and uvicorn logging everything it can: access log and the ASGI trace."""
    server = LiveServer(scripted_settings(tmp_path, auth="on"))
    config = uvicorn.Config(server.app, host="127.0.0.1", port=server.port, log_level="trace")
    server.server = uvicorn.Server(config)
    server.thread = threading.Thread(target=server.server.run, daemon=True)
    logs = CapturedLogs()
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.access")]
    for logger in loggers:
        logger.addHandler(logs)
    try:
        with server:
            yield server, logs
    finally:
        for logger in loggers:
            logger.removeHandler(logs)


def test_the_secret_is_stored_nowhere_and_never_logged_or_listed(
    tmp_path: Path, chatty_api: tuple[LiveServer, CapturedLogs]
) -> None:
    api, logs = chatty_api
    key = cli_key(tmp_path, "auditor", "--rate-limit", "10000")
    with httpx.Client(base_url=api.url, headers=bearer(key)) as client:
        run_id = client.post("/v1/runs", json=SINGLE).json()["id"]
        wait_for_run(client, run_id)
        client.get(f"/v1/runs/{run_id}/turns", headers={"X-API-Key": key})

    secret = key.removeprefix(api_keys.display_prefix(key))
    # every byte the store wrote: the database and its write-ahead log (recent writes live
    # there until a checkpoint)
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("api.db*"))
    assert api_keys.hash_key(key).encode() in stored  # we are reading the right files
    assert secret.encode() not in stored

    assert any('"POST /v1/runs' in line for line in logs.lines)  # the access log was on
    assert not [line for line in logs.lines if secret in line]

    listed = thinktank(tmp_path, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert api_keys.display_prefix(key) in listed.stdout and secret not in listed.stdout
