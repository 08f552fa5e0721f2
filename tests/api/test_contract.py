"""The API as its OpenAPI document describes it, tried with plain HTTP and the official
``openai`` client: every time carries a zone on both databases, every refusal has the body
its status is documented with (OpenAI's shape on the OpenAI face), and what the document says
about methods, keys and run bodies is what the server does."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import openai
import pytest

from store import api_keys
from store.db import create_engine, migrate
from store.runs import Store
from tests.api.conftest import LiveServer, scripted_settings, wait_for_run

SINGLE = {"pattern": "single", "problem": "What is 2+3?"}
QUESTION = [{"role": "user", "content": "What is 2+3?"}]
TOKYO = timezone(timedelta(hours=9))


@pytest.fixture
def any_api(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    settings = scripted_settings(tmp_path).model_copy(update={"database_url": database_url})
    with LiveServer(settings) as server:
        yield server


def documented(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    """A validator of the body the document gives for this operation and status."""
    content = document["paths"][path][method]["responses"][str(status)]["content"]
    schema = content["application/json"]["schema"]
    return jsonschema_rs.validator_for({**schema, "components": document["components"]})


def request_body(document: dict[str, Any]) -> Any:
    """A validator of ``POST /v1/runs``'s body as the document describes it."""
    schema = document["paths"]["/v1/runs"]["post"]["requestBody"]["content"]
    body = schema["application/json"]["schema"]
    return jsonschema_rs.validator_for({**body, "components": document["components"]})


def in_utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text!r} has no time zone"
    return moment.astimezone(UTC)


def test_every_time_the_api_sends_carries_a_zone(any_api: LiveServer) -> None:
    with httpx.Client(base_url=any_api.url, timeout=30) as client:
        submitted = datetime.now(UTC)
        run = wait_for_run(client, client.post("/v1/runs", json=SINGLE).json()["id"])
        listed = client.get("/v1/runs", params={"limit": 1}).json()["items"][0]
        turns = client.get(f"/v1/runs/{run['id']}/turns").json()
    times = [run[k] for k in ("created_at", "started_at", "finished_at")]
    times += [listed["created_at"], turns[0]["created_at"]]
    for moment in map(in_utc, times):
        # the right instant, not local wall time labelled UTC
        assert abs(moment - submitted) < timedelta(minutes=1)


def test_time_filters_read_the_zone_and_take_only_dates(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        run = wait_for_run(client, client.post("/v1/runs", json=SINGLE).json()["id"])
        # a minute before the run, written as Tokyo's wall clock
        before_it = (in_utc(run["created_at"]) - timedelta(minutes=1)).astimezone(TOKYO)

        def found(**params: str) -> list[str]:
            response = client.get("/v1/runs", params=params)
            assert response.status_code == 200, response.text
            return [r["id"] for r in response.json()["items"]]

        assert found(created_after=before_it.isoformat()) == [run["id"]]
        assert found(created_before=before_it.isoformat()) == []
        for number in ("0.5", "1700000000"):
            refused = client.get("/v1/runs", params={"created_before": number})
            assert refused.status_code == 422
            assert refused.json()["errors"][0]["loc"] == ["query", "created_before"]
            assert "ISO 8601" in refused.text


def test_refusals_have_the_body_their_status_is_documented_with(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        document = client.get("/openapi.json").json()
        json = {"content-type": "application/json"}
        cases = [
            ("/v1/runs", "post", client.post("/v1/runs", content=b"{oops", headers=json), 422),
            ("/v1/runs", "post", client.post("/v1/runs", json={**SINGLE, "pattern": "x"}), 422),
            ("/v1/runs", "get", client.get("/v1/runs", params={"cursor": "nope"}), 422),
            ("/v1/runs/{run_id}", "get", client.get("/v1/runs/nope"), 404),
            ("/v1/runs", "get", client.get("/v1/runs", params={"q": "a\x00"}), 400),
            (
                "/v1/runs",
                "post",
                client.post("/v1/runs", json={**SINGLE, "problem": "x" * 2_000_000}),
                413,
            ),
        ]
        for path, method, response, status in cases:
            assert response.status_code == status, (path, response.text)
            assert documented(document, path, method, status).is_valid(response.json()), (
                path,
                response.text,
            )
        repeat = client.post("/v1/runs", json=SINGLE, headers={"Idempotency-Key": "k1"})
        again = client.post("/v1/runs", json=SINGLE, headers={"Idempotency-Key": "k1"})
        assert (repeat.status_code, again.status_code) == (202, 200)
        assert documented(document, "/v1/runs", "post", 200).is_valid(again.json())


def test_every_error_of_the_openai_face_is_openais(api: LiveServer) -> None:
    face = openai.OpenAI(base_url=f"{api.url}/v1", api_key="unused", max_retries=0)
    with face, pytest.raises(openai.APIStatusError) as caught:
        face.chat.completions.create(
            model="thinktank/single", messages=[{"role": "user", "content": "x" * 2_000_000}]
        )
    assert caught.value.status_code == 413
    assert caught.value.type == "invalid_request_error"
    assert caught.value.code == "request_too_large"
    assert "request body larger than" in caught.value.message

    with httpx.Client(base_url=api.url, timeout=30) as client:
        unreadable = client.post(
            "/v1/chat/completions",
            content=b'{"model": "single", "messages": [{"role": "user", "content": "\xc3"}]}',
            headers={"content-type": "application/json"},
        )
        wrong_method = client.get("/v1/chat/completions")
        nul = client.get("/v1/models/single%00")
        unroutable = client.get("/v1/models/a%0Ab")  # no route's pattern matches a newline
    for response, status in ((unreadable, 400), (wrong_method, 405), (nul, 400), (unroutable, 404)):
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error", response.text
    assert wrong_method.headers["allow"] == "POST"


def test_a_path_s_methods_are_all_in_its_allow_header(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for path, methods in [
            ("/v1/runs", {"GET", "POST"}),
            ("/v1/campaigns", {"GET", "POST"}),
            ("/v1/runs/abc/cancel", {"POST"}),
        ]:
            response = client.options(path)
            assert response.status_code == 405
            allowed = {m.strip() for m in response.headers["allow"].split(",")} - {"HEAD"}
            assert allowed == methods, (path, response.headers["allow"])


def test_a_chunked_body_over_the_limit_is_413(api: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield b'{"pattern": "single", "problem": "'
        for _ in range(40):
            yield b"x" * 100_000
        yield b'"}'

    with httpx.Client(base_url=api.url, timeout=30) as client:
        response = client.post(
            "/v1/runs", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert "request body larger than" in response.json()["detail"]
        assert client.get("/v1/runs").json()["items"] == []


def test_the_document_says_which_run_bodies_are_valid(api: LiveServer) -> None:
    """process_judge needs its steps; the document says so, and the server agrees."""
    with httpx.Client(base_url=api.url, timeout=30) as client:
        valid = request_body(client.get("/openapi.json").json())
        judge = {"pattern": "process_judge", "problem": "What is 3 * 4?", "config": {}}
        assert not valid.is_valid(judge)
        refused = client.post("/v1/runs", json=judge)
        assert refused.status_code == 422 and "steps" in refused.text

        judged = {**judge, "config": {"steps": ["3 * 4 = 12."]}}
        assert valid.is_valid(judged) and valid.is_valid(SINGLE)
        assert client.post("/v1/runs", json=judged).status_code == 202
        # a number in a string is no number, in the document or the server
        quoted = {**SINGLE, "config": {"temperature": "0.5"}}
        assert not valid.is_valid(quoted)
        assert client.post("/v1/runs", json=quoted).status_code == 422


def test_the_document_names_the_key_schemes_and_where_a_key_is_needed(tmp_path: Path) -> None:
    keyless = tmp_path / "keyless"
    keyless.mkdir()
    with LiveServer(scripted_settings(keyless)) as server:
        open_doc = httpx.get(f"{server.url}/openapi.json").json()
        docs_page = httpx.get(f"{server.url}/docs")
    assert open_doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": open_doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert "security" not in open_doc["paths"]["/v1/runs"]["post"]  # loopback: no key needed
    assert docs_page.status_code == 200 and "/openapi.json" in docs_page.text

    with LiveServer(scripted_settings(tmp_path, auth="on")) as server:
        keyed_doc = httpx.get(f"{server.url}/openapi.json").json()
    security = keyed_doc["paths"]["/v1/runs"]["post"]["security"]
    assert {"bearer": []} in security and {"apiKeyHeader": []} in security
    assert "security" not in keyed_doc["paths"]["/healthz"]["get"]
    assert "401" in keyed_doc["paths"]["/v1/runs"]["post"]["responses"]


def test_a_cancelled_run_s_error_says_so_once(tmp_path: Path) -> None:
    with LiveServer(scripted_settings(tmp_path, latency_s=0.5)) as server:
        outcome: dict[str, Any] = {}

        def ask() -> None:
            with openai.OpenAI(base_url=f"{server.url}/v1", api_key="-", max_retries=0) as c:
                try:
                    c.chat.completions.create(model="thinktank/discussion", messages=QUESTION)
                except openai.APIStatusError as exc:
                    outcome["error"] = exc

        asker = threading.Thread(target=ask)
        asker.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            deadline = time.monotonic() + 30
            while not (runs := client.get("/v1/runs").json()["items"]):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            run_id = runs[0]["id"]
            assert client.post(f"/v1/runs/{run_id}/cancel").status_code == 202
            asker.join(timeout=60)
            stored = wait_for_run(client, run_id)
    error = outcome["error"]
    assert error.status_code == 502 and error.code == "run_cancelled"
    assert error.message.count("cancelled") == 1 and error.message.count(run_id) == 1
    assert f"run {run_id} was cancelled before turn " in error.message
    assert stored["status"] == "cancelled" and run_id not in stored["error"]


def test_the_store_hands_back_times_in_utc_on_sqlite(sqlite_url: str) -> None:
    """SQLite keeps a time as text without its zone; what the store reads back has UTC's."""

    async def read_back() -> datetime:
        engine = create_engine(sqlite_url)
        await migrate(engine)
        store = Store(engine)
        try:
            _, key = await api_keys.create_key(store, "k")
            row = await api_keys.find_key(store, key)
            assert row is not None
            return row.created_at
        finally:
            await engine.dispose()

    created = asyncio.run(read_back())
    assert created.tzinfo is not None and created.utcoffset() == timedelta(0)
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("pattern", "config", "reference"),
    [
        ("single", {}, "5"),
        ("self_consistency", {"samples": 2}, "7"),
        ("spc_search", {"trajectories": 1, "max_steps": 2}, "5"),
        # the scripted verifier's reply flags paragraph 0; the label says -1 (all correct)
        ("process_judge", {"steps": ["2 + 3 = 5."]}, "-1"),
    ],
)
def test_every_solving_pattern_takes_a_reference_answer_and_is_judged_against_it(
    api: LiveServer, pattern: str, config: dict[str, Any], reference: str
) -> None:
    body = {**SINGLE, "pattern": pattern, "config": {**config, "reference_answer": reference}}
    with httpx.Client(base_url=api.url, timeout=30) as client:
        submitted = client.post("/v1/runs", json=body)
        assert submitted.status_code == 202, submitted.text
        run = wait_for_run(client, submitted.json()["id"])
    assert run["status"] == "succeeded", run
    check = run["answer_check"]
    assert check is not None and check["reference"] == reference
    assert check["correct"] is (run["answer"] == reference), (run["answer"], check)


def test_the_face_reads_every_message_alike_and_takes_the_last_one_with_text(
    api: LiveServer,
) -> None:
    """What the document says of messages holds for every one of them, wherever it is."""
    with openai.OpenAI(base_url=f"{api.url}/v1", api_key="-", max_retries=0) as client:
        answered = client.chat.completions.create(
            model="thinktank/single", messages=[*QUESTION, {"role": "user", "content": "  "}]
        )
        assert answered.model_extra["thinktank"]["answer"] == "5"
        image = {"type": "image_url", "image_url": {"url": "data:,"}}
        for late in (
            {"role": "assistant", "content": "a\x00b"},
            {"role": "tool", "content": [image]},
        ):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model="thinktank/single", messages=[*QUESTION, late])
            assert caught.value.param == "messages[1].content"
    stored = httpx.get(f"{api.url}/v1/runs").json()["items"]
    assert [run["problem"] for run in stored] == ["What is 2+3?"]
