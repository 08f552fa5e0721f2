"""Live ``token`` events on ``GET /v1/runs/{id}/events``: agents typing, as a dashboard sees
them, on the embedded defaults with the slow scripted model (it types word by word)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

from agents.calls import TurnRecord
from execution.runner import submit_run
from services.api.deps import Services
from services.api.runs import stream_events
from services.settings import Settings
from store.runs import Store
from tests.api.conftest import LiveServer, scripted_settings, wait_for_run

DISCUSSION = {"pattern": "discussion", "problem": "What is 2+3?", "config": {"max_rounds": 2}}
ROLES = ["ceo", "recruiter", "solver", "critic", "critic", "evaluator"]


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Each event as {"event", "data" (parsed), "id" (only when the event has one)}."""
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if current.get("event"):
                current["data"] = json.loads(current.get("data", "null"))
                yield current
            current = {}
            continue
        field, _, value = line.partition(":")
        if field in ("event", "data", "id"):
            current[field] = value.removeprefix(" ")


def check_tokens(events: list[dict[str, Any]], *, seen_finished: set[str]) -> dict[str, str]:
    """Token events are live-only, come before their turn's turn_finished and join to its
    completion; returns the typed text by turn key. ``seen_finished``: keys whose
    turn_finished came earlier (on a previous connection)."""
    typed: dict[str, str] = {}
    finished = set(seen_finished)
    for event in events:
        data = event["data"]
        if event["event"] == "token":
            assert "id" not in event, event  # live-only: no id to resume from
            assert set(data) == {"key", "agent", "text"} and data["text"]
            assert data["key"] not in finished, f"token after its turn finished: {event}"
            typed[data["key"]] = typed.get(data["key"], "") + data["text"]
        elif event["event"] == "turn_finished":
            assert event["id"]
            finished.add(data["key"])
    return typed


def test_tokens_stream_each_turn_before_it_finishes(slow_api: LiveServer) -> None:
    with httpx.Client(base_url=slow_api.url, timeout=30) as client:
        run_id = client.post("/v1/runs", json=DISCUSSION).json()["id"]
        with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
            events = list(sse_events(response))

    assert events[-1]["event"] == "run_finished"
    assert events[-1]["data"]["status"] == "succeeded"
    typed = check_tokens(events, seen_finished=set())
    turns = [e["data"] for e in events if e["event"] == "turn_finished"]
    assert [t["role"] for t in turns] == ROLES
    for turn in turns:
        # every turn typed, word by word, exactly what it then said
        assert typed[turn["key"]] == turn["completion"]
        tokens = [e for e in events if e["event"] == "token" and e["data"]["key"] == turn["key"]]
        assert len(tokens) == len(turn["completion"].split())
        assert {t["data"]["agent"] for t in tokens} == {turn["agent"]}
    # the dashboard sees who starts typing before the text arrives
    kinds = [e["event"] for e in events]
    assert kinds.index("turn_started") < kinds.index("token")


def test_tokens_are_not_replayed_on_reconnect(slow_api: LiveServer) -> None:
    with httpx.Client(base_url=slow_api.url, timeout=30) as client:
        run_id = client.post("/v1/runs", json=DISCUSSION).json()["id"]
        first: list[dict[str, Any]] = []
        with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
            for event in sse_events(response):
                first.append(event)
                if sum(e["event"] == "turn_finished" for e in first) == 2:
                    break  # the connection drops mid-run
        finished_first = {e["data"]["key"] for e in first if e["event"] == "turn_finished"}
        last_id = [e for e in first if "id" in e][-1]["id"]

        with client.stream(
            "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": last_id}
        ) as response:
            rest = list(sse_events(response))
        assert rest[-1]["event"] == "run_finished"
        # nothing of the turns already seen, and the rest still in order
        typed = check_tokens(rest, seen_finished=finished_first)
        later = [e["data"] for e in rest if e["event"] == "turn_finished"]
        assert len(later) == len(ROLES) - 2
        assert typed and set(typed) <= {t["key"] for t in later}

        assert wait_for_run(client, run_id)["status"] == "succeeded"
        replayed = client.get(f"/v1/runs/{run_id}/events")  # a finished run replays whole
        kinds = [
            line.split(":", 1)[1].strip()
            for line in replayed.text.splitlines()
            if line.startswith("event:")
        ]
        assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
        assert kinds.count("turn_finished") == len(ROLES)
        assert "token" not in kinds


def test_settings_can_turn_token_events_off(tmp_path: Path) -> None:
    settings = scripted_settings(tmp_path, latency_s=0.05, stream_tokens=False)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        run_id = client.post("/v1/runs", json=DISCUSSION).json()["id"]
        with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
            events = list(sse_events(response))
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "run_finished" and kinds.count("turn_finished") == len(ROLES)
    assert "token" not in kinds


class QueuedBus:
    """An in-process bus whose subscription already holds what was published while the
    stream replayed the store: the race a stream that connects mid-run can lose."""

    def __init__(self, backlog: list[dict[str, Any]]) -> None:
        self.backlog = backlog

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: str) -> AsyncIterator[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue()
        for event in self.backlog:
            queue.put_nowait(event)
        yield queue

    async def publish(self, run_id: str, event: dict[str, Any]) -> None:
        raise AssertionError("not used")

    async def close(self) -> None:
        return None


async def test_tokens_published_during_the_replay_are_not_sent_after_their_turn(
    store: Store,
) -> None:
    run_id = await submit_run(store, "single", "What is 2+3?", {})
    turn = TurnRecord(
        run_id=run_id,
        key="solve",
        node="solve",
        agent="Solver",
        role="solver",
        model="m",
        messages=[],
        completion="five",
    )
    await store.record_turn(turn)  # stored: the replay sends it
    (stored,) = await store.events_after(run_id)

    def live(kind: str, text: str, key: str, event_id: int | None = None) -> dict[str, Any]:
        data = {"key": key, "agent": "Solver", "text": text}
        return {"id": event_id, "run_id": run_id, "type": kind, "data": data}

    backlog = [
        live("token", "fi", "solve"),  # published before the stored turn: stale
        live("token", "ve", "solve"),
        {"id": stored.id, "run_id": run_id, "type": "turn_finished", "data": stored.payload},
        live("token", "Next", "vote"),  # after it: new
        {"id": stored.id + 1, "run_id": run_id, "type": "run_finished", "data": {}},
    ]
    services = Services(
        settings=Settings(),
        store=store,
        executor=None,
        bus=QueuedBus(backlog),  # type: ignore[arg-type]
        campaigns=None,  # type: ignore[arg-type]
    )
    sent = [event async for event in stream_events(services, run_id, 0)]

    assert [(e.event, e.id) for e in sent] == [
        ("turn_finished", str(stored.id)),
        ("token", None),
        ("run_finished", str(stored.id + 1)),
    ]
    assert json.loads(sent[1].data)["text"] == "Next"
