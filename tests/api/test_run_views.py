"""What the runs resource tells a dashboard beyond status and answer: whether the answer was
right, where the run's trace is, search over runs, and the dashboard's own files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from services.settings import Settings
from store.db import create_engine, migrate
from store.runs import Store
from tests.api.conftest import LiveServer, scripted_settings


def store_runs(settings: Settings, runs: list[dict[str, Any]]) -> list[str]:
    """Finished runs written straight into the store the server will read."""

    async def write() -> list[str]:
        engine = create_engine(settings.database_url)
        try:
            await migrate(engine)
            store = Store(engine)
            ids = []
            for run in runs:
                row, _ = await store.create_run(
                    run.get("pattern", "single"), run["problem"], run.get("config", {})
                )
                if "trace_id" in run:
                    await store.set_trace_id(row.id, run["trace_id"])
                await store.finish_run(
                    row.id, status=run.get("status", "succeeded"), answer=run.get("answer")
                )
                ids.append(row.id)
            return ids
        finally:
            await engine.dispose()

    return asyncio.run(write())


def test_a_run_with_a_reference_answer_says_whether_its_answer_was_right(tmp_path: Path) -> None:
    settings = scripted_settings(tmp_path)
    right, wrong, unanswered, unchecked = store_runs(
        settings,
        [
            {"problem": "half of 3", "config": {"reference_answer": "3/2"}, "answer": "1.5"},
            {"problem": "2+3", "config": {"reference_answer": "5"}, "answer": "6"},
            {"problem": "2+2", "config": {"reference_answer": "4"}, "status": "failed"},
            {"problem": "2+1", "answer": "3"},
        ],
    )
    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as client:
        checks = {r["id"]: r["answer_check"] for r in client.get("/v1/runs").json()["items"]}
        assert checks[right] == {
            "correct": True,
            "reason": "equal numbers (3/2)",
            "reference": "3/2",
        }
        assert checks[wrong]["correct"] is False
        assert checks[wrong]["reason"] == "different numbers (6 != 5)"
        assert checks[unanswered] == {
            "correct": False,
            "reason": "no answer given",
            "reference": "4",
        }
        assert checks[unchecked] is None
        assert client.get(f"/v1/runs/{right}").json()["answer_check"]["correct"] is True


def test_the_trace_link_follows_the_configured_template(tmp_path: Path) -> None:
    template = "http://jaeger.internal:16686/trace/{trace_id}?uiFind=run"
    settings = scripted_settings(tmp_path, trace_url_template=template)
    traced, untraced = store_runs(
        settings,
        [{"problem": "2+3", "answer": "5", "trace_id": "ab" * 16}, {"problem": "2+2"}],
    )
    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as client:
        assert client.get(f"/v1/runs/{traced}").json()["trace_url"] == (
            f"http://jaeger.internal:16686/trace/{'ab' * 16}?uiFind=run"
        )
        assert client.get(f"/v1/runs/{untraced}").json()["trace_url"] is None

    with LiveServer(scripted_settings(tmp_path)) as server:
        run = httpx.get(f"{server.url}/v1/runs/{traced}").json()
        assert run["trace_id"] == "ab" * 16 and run["trace_url"] is None


def test_a_trace_template_without_a_place_for_the_id_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"must contain \{trace_id\}"):
        Settings(trace_url_template="http://localhost:16686/trace/")


def test_search_matches_problem_text_in_any_case_or_the_start_of_a_run_id(
    tmp_path: Path,
) -> None:
    settings = scripted_settings(tmp_path)
    percent, underscore, lookalike, other = store_runs(
        settings,
        [
            {"problem": "Find 50% of 10"},
            {"problem": "What is a_b when a=1?"},
            {"problem": "What is axb when a=1?"},
            {"problem": "Something else entirely"},
        ],
    )
    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as client:

        def found(**query: Any) -> set[str]:
            response = client.get("/v1/runs", params=query)
            assert response.status_code == 200, response.text
            return {r["id"] for r in response.json()["items"]}

        assert found(q="FIND") == {percent}
        assert found(q="50%") == {percent}  # % and _ are plain characters, not wildcards
        assert found(q="a_b") == {underscore}
        assert found(q="what is") == {underscore, lookalike}
        assert found(q=other[:7]) == {other}
        assert found(q="nowhere to be found") == set()
        assert found(q="what is", pattern="discussion") == set()
        assert client.get("/v1/runs", params={"q": "x" * 201}).status_code == 422


def test_the_dashboard_loads_without_a_key_and_its_data_needs_one(tmp_path: Path) -> None:
    with (
        LiveServer(scripted_settings(tmp_path, auth="on")) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        redirect = client.get("/ui")
        assert redirect.status_code in (301, 307) and redirect.headers["location"].endswith("/ui/")
        page = client.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        module = client.get("/ui/js/main.js")
        assert module.status_code == 200
        assert "javascript" in module.headers["content-type"]
        assert client.get("/ui/js/nothing.js").status_code == 404
        assert client.get("/v1/runs").status_code == 401
