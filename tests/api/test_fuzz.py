"""The API fuzzed from its own OpenAPI schema (schemathesis): whatever the generated request,
the server answers without a 5xx and its response matches the documented schema."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.api.conftest import LiveServer, scripted_settings


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One scripted server for the whole fuzz run; runs the fuzzer starts are real, and fine."""
    with LiveServer(scripted_settings(tmp_path_factory.mktemp("fuzz"))) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(live_api: LiveServer) -> OpenApiSchema:
    schema = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")
    # the live event stream stays open until its run ends: not a request/response operation
    return schema.exclude(path="/v1/runs/{run_id}/events")


def fuzz(operation: APIOperation, base_url: str) -> None:
    # schemathesis' pytest plugin does not run under this pytest; plain hypothesis over each
    # operation's strategy does the same work, seeded so CI sees the same requests every time
    @given(case=operation.as_strategy())
    @settings(
        max_examples=20,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def no_server_error(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=base_url, timeout=30, checks=[schemathesis.checks.not_a_server_error]
        )

    no_server_error()


def test_no_generated_request_makes_the_server_fail(
    api_schema: OpenApiSchema, live_api: LiveServer
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10  # every documented route is fuzzed
    for operation in operations:
        fuzz(operation, live_api.url)
    with httpx.Client(base_url=live_api.url) as client:
        assert client.get("/healthz").status_code == 200
