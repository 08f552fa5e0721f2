"""The API fuzzed from its own OpenAPI document by schemathesis' command line, as an outside
client would run it: ``st run --checks all`` with a fixed seed and a few examples per
operation, through every phase (examples, coverage, fuzzing, stateful). It passes only when
every response has a documented status, content type, headers and body, every request the
document calls valid is taken and every invalid one refused, a key is needed where the
document says so, and every path's ``Allow`` lists its methods.

The server requires API keys, so that the document declares where a key is needed and
``ignored_auth`` can check that those routes refuse a request without one. The fuzzing key
has no campaign permission: a campaign trains models, and a fuzzed one would train for
minutes (campaigns are checked as far as their 403)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from store import api_keys
from store.db import create_engine, migrate
from store.runs import Store
from tests.api.conftest import LiveServer, scripted_settings

SEED = 20
EXAMPLES = 5
# the live event stream stays open until its run ends: not a request/response operation
STREAM = "/v1/runs/{run_id}/events"


def fuzzing_key(database_url: str) -> str:
    async def create() -> str:
        engine = create_engine(database_url)
        try:
            await migrate(engine)
            _, key = await api_keys.create_key(
                Store(engine), "fuzz", rate_limit_per_minute=1_000_000
            )
        finally:
            await engine.dispose()
        return key

    return asyncio.run(create())


@pytest.fixture(scope="module")
def keyed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    settings = scripted_settings(tmp_path_factory.mktemp("fuzz"), auth="on")
    key = fuzzing_key(settings.database_url)
    with LiveServer(settings) as server:
        yield server, key


def test_schemathesis_finds_nothing_with_every_check(
    keyed_api: tuple[LiveServer, str], tmp_path: Path
) -> None:
    server, key = keyed_api
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--exclude-path",
        STREAM,
        "--header",
        f"Authorization: Bearer {key}",
        # a path parameter's negative values are hard to draw (a path is text whatever it holds):
        # a limit of the generator, not something the server does
        "--suppress-health-check",
        "filter_too_much",
        "--no-color",
    ]
    # its reports and hypothesis' example database go to the test's own folder
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20_000:]
    tested = re.search(r"Tested:\s+(\d+)", output)
    assert tested and int(tested.group(1)) >= 15, output[-5_000:]  # every route but the stream
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅\s+{phase}", output), output[-5_000:]
    assert httpx.get(f"{server.url}/healthz").status_code == 200
