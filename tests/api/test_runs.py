"""The runs API as a client sees it, on the embedded defaults (SQLite, in-process executor)."""

from __future__ import annotations

import json

import httpx

from graphs.patterns import PATTERNS
from tests.api.conftest import LiveServer, wait_for_run

DISCUSSION = {"pattern": "discussion", "problem": "What is 2+3?", "config": {"max_rounds": 2}}


def test_submit_then_read_the_answer_usage_and_transcript(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url) as client:
        created = client.post("/v1/runs", json=DISCUSSION)
        assert created.status_code == 202
        run_id = created.json()["id"]
        assert created.headers["location"] == f"/v1/runs/{run_id}"

        run = wait_for_run(client, run_id)
        assert run["status"] == "succeeded"
        assert run["answer"] == "5"
        assert run["stop_reason"] == "evaluator_correct"
        assert run["usage"]["completion_tokens"] > 0
        assert run["usage"]["total_tokens"] == (
            run["usage"]["prompt_tokens"] + run["usage"]["completion_tokens"]
        )
        assert run["cost_usd"] == 0.0

        turns = client.get(f"/v1/runs/{run_id}/turns").json()
        assert [t["role"] for t in turns] == [
            "ceo",
            "recruiter",
            "solver",
            "critic",
            "critic",
            "evaluator",
        ]
        assert turns[2]["completion"] == "2 + 3 = 5 so \\boxed{5}"
        assert turns[2]["messages"][0]["role"] == "system"


def test_patterns_list_their_config_schema(api: LiveServer) -> None:
    patterns = httpx.get(f"{api.url}/v1/patterns").json()
    by_name = {p["name"]: p for p in patterns}
    assert set(by_name) == set(PATTERNS)
    assert {"discussion", "single", "self_consistency"} <= set(by_name)
    schema = by_name["discussion"]["config_schema"]
    assert schema["properties"]["agents"]["maximum"] == 16
    assert schema["additionalProperties"] is False


def test_idempotency_key_returns_the_same_run(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url) as client:
        headers = {"Idempotency-Key": "order-42"}
        first = client.post("/v1/runs", json=DISCUSSION, headers=headers)
        again = client.post("/v1/runs", json=DISCUSSION, headers=headers)
        assert first.status_code == 202 and again.status_code == 200
        assert first.json()["id"] == again.json()["id"]
        assert len(client.get("/v1/runs").json()["items"]) == 1


def test_bad_input_is_a_4xx_with_a_reason_and_stores_nothing(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url) as client:
        cases = [
            (
                client.post("/v1/runs", json={**DISCUSSION, "config": {"colour": "red"}}),
                422,
                "colour",
            ),
            (
                client.post("/v1/runs", json={**DISCUSSION, "config": {"token_budget": -5}}),
                422,
                "token_budget",
            ),
            (
                client.post("/v1/runs", json={**DISCUSSION, "pattern": "nope"}),
                422,
                "unknown pattern 'nope'",
            ),
            (
                client.post(
                    "/v1/runs", content=b"{not json", headers={"content-type": "application/json"}
                ),
                422,
                "invalid request",
            ),
            (client.post("/v1/runs", json={**DISCUSSION, "problem": 12}), 422, "problem"),
            (
                client.post("/v1/runs", json={**DISCUSSION, "problem": "x" * 10_000_000}),
                413,
                "request body larger than",
            ),
            (client.get("/v1/runs/nope"), 404, "no run with id 'nope'"),
            (client.get("/v1/runs", params={"cursor": "garbage"}), 422, "cursor"),
        ]
        for response, status, reason in cases:
            assert response.status_code == status, response.text
            assert reason in response.text
        assert client.get("/v1/runs").json()["items"] == []


def test_list_filters_and_cursor_pagination(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url) as client:
        ids = []
        for pattern in ("single", "single", "single", "discussion"):
            body = {"pattern": pattern, "problem": "What is 2+3?"}
            ids.append(client.post("/v1/runs", json=body).json()["id"])
        for run_id in ids:
            wait_for_run(client, run_id)

        seen, cursor = [], None
        for _ in range(10):
            params = {"limit": 2, "pattern": "single"}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/runs", params=params).json()
            seen += [r["id"] for r in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids[:3]))
        done = client.get("/v1/runs", params={"status": "succeeded"}).json()["items"]
        assert len(done) == 4


def test_cancel_stops_a_run_between_turns(slow_api: LiveServer) -> None:
    with httpx.Client(base_url=slow_api.url) as client:
        run_id = client.post("/v1/runs", json=DISCUSSION).json()["id"]
        while not client.get(f"/v1/runs/{run_id}/turns").json():
            pass
        cancelled = client.post(f"/v1/runs/{run_id}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"]
        run = wait_for_run(client, run_id)
        assert run["status"] == "cancelled"
        assert len(client.get(f"/v1/runs/{run_id}/turns").json()) < 6


def read_events(response: httpx.Response, stop_after: int | None = None) -> list[dict]:
    events, current = [], {}
    for line in response.iter_lines():
        if not line:
            if current.get("event"):
                events.append(current)
                if stop_after and len(events) >= stop_after:
                    break
            current = {}
            continue
        field, _, value = line.partition(":")
        current[field] = value.strip()
    return events


def test_events_stream_live_and_resume_with_last_event_id(slow_api: LiveServer) -> None:
    with httpx.Client(base_url=slow_api.url, timeout=30) as client:
        run_id = client.post("/v1/runs", json=DISCUSSION).json()["id"]
        with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            first = read_events(response, stop_after=4)
        stored = [e for e in first if e.get("id")]
        last_id = stored[-1]["id"]

        with client.stream(
            "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": last_id}
        ) as response:
            rest = read_events(response)

        assert rest[-1]["event"] == "run_finished"
        assert json.loads(rest[-1]["data"])["status"] == "succeeded"
        ids = [int(e["id"]) for e in stored + rest if e.get("id")]
        assert ids == sorted(set(ids))  # nothing twice, nothing out of order
        finished = [json.loads(e["data"]) for e in first + rest if e["event"] == "turn_finished"]
        assert [t["role"] for t in finished] == [
            "ceo",
            "recruiter",
            "solver",
            "critic",
            "critic",
            "evaluator",
        ]

        replay = client.get(f"/v1/runs/{run_id}/events")  # a finished run replays whole
        kinds = [
            line.split(":", 1)[1].strip()
            for line in replay.text.splitlines()
            if line.startswith("event:")
        ]
        assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
        assert "turn_started" not in kinds  # live-only events are not replayed
