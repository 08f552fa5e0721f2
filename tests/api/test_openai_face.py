"""The OpenAI-compatible face as OpenAI's own Python client sees it, against a live server.

Every test talks through ``openai.OpenAI`` / ``openai.AsyncOpenAI`` (or LangChain's
``ChatOpenAI``, built on it) rather than raw HTTP: the point of the face is that existing OpenAI
client code works unchanged, so the official client parsing our responses (and raising its own
exception types) is the contract under test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from agents.backends.openai_compat import OpenAIModelConfig
from agents.model_map import ModelMap
from graphs.patterns import PATTERNS
from services.api.openai_face import CONTEXT_HEADER, PROBLEM_HEADER, RETRY_COUNT_HEADER
from services.settings import Settings
from tests.api.conftest import LiveServer, free_port, scripted_settings, wait_for_run

QUESTION = [{"role": "user", "content": "What is 2+3?"}]
DISCUSSION_ROLES = ["ceo", "recruiter", "solver", "critic", "critic", "evaluator"]


def client_for(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=60)


@pytest.fixture
def client(api: LiveServer) -> Iterator[openai.OpenAI]:
    with client_for(api) as client:
        yield client


def extension(obj: Any) -> dict[str, Any]:
    """The ``thinktank`` object the official client keeps as an extra attribute."""
    return obj.model_extra["thinktank"]


def stored_runs(server: LiveServer) -> list[dict[str, Any]]:
    return httpx.get(f"{server.url}/v1/runs").json()["items"]


def test_models_are_the_patterns(client: openai.OpenAI) -> None:
    """A client discovers what it can ask for the way it would on OpenAI: GET /v1/models."""
    models = list(client.models.list())
    ids = {m.id for m in models}
    assert {"thinktank/discussion", "thinktank/single", "thinktank/self_consistency"} <= ids
    assert ids == {f"thinktank/{name}" for name in PATTERNS}
    assert {m.owned_by for m in models} == {"thinktank"}
    assert {m.object for m in models} == {"model"}
    # the spelling with a hyphen names the same pattern
    assert client.models.retrieve("thinktank/self-consistency").id == "thinktank/self_consistency"


def test_chat_completion_answers_and_the_run_is_stored(
    api: LiveServer, client: openai.OpenAI
) -> None:
    """A plain completion carries the run's answer and usage, and points at its transcript."""
    completion = client.chat.completions.create(model="thinktank/discussion", messages=QUESTION)

    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    # the final solution as the solver wrote it, then the answer on a line of its own
    assert choice.message.content == "2 + 3 = 5 so \\boxed{5}\n\n**Answer:** 5"
    assert completion.model == "thinktank/discussion"
    ext = extension(completion)
    run_id = ext["run_id"]
    assert completion.id == f"chatcmpl-{run_id}"
    assert ext["answer"] == "5" and ext["stop_reason"] == "evaluator_correct"

    with httpx.Client(base_url=api.url) as http:
        run = http.get(f"/v1/runs/{run_id}").json()
        assert run["status"] == "succeeded" and run["answer"] == "5"
        assert run["problem"] == "What is 2+3?"
        # usage is the whole run's: every agent's tokens, not only the final solver's
        assert completion.usage is not None
        assert completion.usage.model_dump(include={"prompt_tokens", "completion_tokens"}) == {
            "prompt_tokens": run["usage"]["prompt_tokens"],
            "completion_tokens": run["usage"]["completion_tokens"],
        }
        assert completion.usage.total_tokens == run["usage"]["total_tokens"] > 0
        turns = http.get(f"/v1/runs/{run_id}/turns").json()
        assert [t["role"] for t in turns] == DISCUSSION_ROLES


def test_earlier_messages_become_context_of_the_last_user_message(
    api: LiveServer, client: openai.OpenAI
) -> None:
    """The agents solve one problem, so the conversation so far is handed to them as context."""
    completion = client.chat.completions.create(
        model="thinktank/single",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 1+1?"},
            {"role": "assistant", "content": "2"},
            {"role": "user", "content": [{"type": "text", "text": "What is 2+3?"}]},
        ],
    )
    run = httpx.get(f"{api.url}/v1/runs/{extension(completion)['run_id']}").json()
    assert run["problem"] == (
        f"{CONTEXT_HEADER}\n\n[system] Be brief.\n\n[user] What is 1+1?\n\n[assistant] 2\n\n"
        f"{PROBLEM_HEADER}\n\nWhat is 2+3?"
    )


def test_streaming_shows_the_agents_talking_then_the_answer(slow_api: LiveServer) -> None:
    """A streaming client watches each agent's turn arrive while the run is still going."""
    with client_for(slow_api) as client, httpx.Client(base_url=slow_api.url) as http:
        stream = client.chat.completions.create(
            model="thinktank/discussion",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = []
        status_at_first_turn = None
        for chunk in stream:
            chunks.append(chunk)
            text = chunk.choices[0].delta.content if chunk.choices else None
            if status_at_first_turn is None and text:
                run_id = extension(chunks[0])["run_id"]
                status_at_first_turn = http.get(f"/v1/runs/{run_id}").json()["status"]
        assert status_at_first_turn == "running"  # live, not replayed after the fact

        run_id = extension(chunks[0])["run_id"]
        assert {c.id for c in chunks} == {f"chatcmpl-{run_id}"}
        assert chunks[0].choices[0].delta.role == "assistant"
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        speakers = ["**CEO**", "**Recruiter**", "**Solver**", "**Critic 1**", "**Evaluator**"]
        positions = [content.index(f"{name} (round 0): ") for name in speakers]
        assert positions == sorted(positions)
        assert "**Solver** (round 0): 2 + 3 = 5 so \\boxed{5}\n\n" in content
        assert "Same. [Agree]" in content
        assert content.endswith("**Answer:** 5")

        *_, final, usage_chunk = chunks
        assert final.choices[0].finish_reason == "stop"
        assert extension(final)["answer"] == "5"
        assert [c.choices[0].finish_reason for c in chunks[:-2]] == [None] * (len(chunks) - 2)
        assert usage_chunk.choices == []
        run = http.get(f"/v1/runs/{run_id}").json()
        assert usage_chunk.usage is not None
        assert usage_chunk.usage.total_tokens == run["usage"]["total_tokens"] > 0


def test_the_stream_on_the_wire_is_openais(api: LiveServer) -> None:
    """Clients other than the official one parse the raw lines: data-only, [DONE] last."""
    body = {"model": "thinktank/single", "messages": QUESTION, "stream": True}
    response = httpx.post(f"{api.url}/v1/chat/completions", json=body, timeout=30)
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.splitlines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * len(chunks)
    # a delta carries only what it adds, and usage was not asked for
    assert chunks[1]["choices"][0]["delta"] == {
        "content": "**Solver**: 2 + 3 = 5 so \\boxed{5}\n\n"
    }
    assert all("usage" not in c for c in chunks)
    assert response.headers["x-thinktank-run-id"] == chunks[0]["thinktank"]["run_id"]


def test_a_client_leaving_a_stream_does_not_stop_the_run(slow_api: LiveServer) -> None:
    """Closing the stream ends the watching, not the work: the run finishes and is stored."""
    with client_for(slow_api) as client, httpx.Client(base_url=slow_api.url) as http:
        stream = client.chat.completions.create(
            model="thinktank/discussion", messages=QUESTION, stream=True
        )
        first = next(iter(stream))
        stream.close()
        run = wait_for_run(http, extension(first)["run_id"])
        assert run["status"] == "succeeded" and run["answer"] == "5"
        turns = http.get(f"/v1/runs/{run['id']}/turns").json()
        assert [t["role"] for t in turns] == DISCUSSION_ROLES


def test_self_consistency_with_the_hyphenated_name(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="thinktank/self-consistency",
        messages=QUESTION,
        max_tokens=64,
        extra_body={"thinktank": {"config": {"samples": 3}}},
    )
    assert completion.model == "thinktank/self_consistency"
    assert completion.choices[0].message.content.endswith("**Answer:** 5")
    assert extension(completion)["pattern"] == "self_consistency"


def test_request_fields_and_thinktank_config_reach_the_pattern_config(
    api: LiveServer, client: openai.OpenAI
) -> None:
    """OpenAI's knobs map onto the pattern's fields; ``thinktank.config`` passes the rest."""
    completion = client.chat.completions.create(
        model="thinktank/discussion",
        messages=QUESTION,
        temperature=0.2,
        top_p=0.5,
        max_tokens=4000,  # discussion has no per-call cap: it is the run's token budget
        extra_body={"thinktank": {"config": {"max_rounds": 1, "agents": 4}}},
    )
    run = httpx.get(f"{api.url}/v1/runs/{extension(completion)['run_id']}").json()
    assert run["config"]["max_rounds"] == 1
    assert run["config"]["agents"] == 4
    assert run["config"]["temperature"] == 0.2
    assert run["config"]["top_p"] == 0.5
    assert run["config"]["token_budget"] == 4000

    single = client.chat.completions.create(
        model="thinktank/single", messages=QUESTION, max_completion_tokens=77
    )
    run = httpx.get(f"{api.url}/v1/runs/{extension(single)['run_id']}").json()
    assert run["config"]["max_tokens"] == 77  # single's own per-call cap
    assert run["config"]["token_budget"] == 8000


def test_idempotency_key_returns_the_same_run(api: LiveServer, client: openai.OpenAI) -> None:
    """A retried request with the same key must not pay for a second run."""
    headers = {"Idempotency-Key": "chat-42"}
    first = client.chat.completions.create(
        model="thinktank/single", messages=QUESTION, extra_headers=headers
    )
    again = client.chat.completions.create(
        model="thinktank/single", messages=QUESTION, extra_headers=headers
    )
    assert first.id == again.id
    assert again.choices[0].message.content == first.choices[0].message.content
    assert len(stored_runs(api)) == 1


def test_unknown_model_is_not_found(api: LiveServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="thinktank/nope", messages=QUESTION)
    assert caught.value.code == "model_not_found"
    assert "thinktank/discussion" in caught.value.message  # names what does exist
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    assert stored_runs(api) == []


def test_requests_the_face_cannot_serve_are_bad_requests(
    api: LiveServer, client: openai.OpenAI
) -> None:
    """Each refusal names the parameter at fault, in OpenAI's error shape, and stores nothing."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"n": 2}, "n"),
        ({"max_tokens": 5}, "max_tokens"),  # under discussion's smallest token_budget
        ({"temperature": 3.5}, "temperature"),
        ({"extra_body": {"thinktank": {"config": {"colour": "red"}}}}, "thinktank.config.colour"),
        ({"messages": [{"role": "system", "content": "Be brief."}]}, "messages"),
        ({"messages": []}, "messages"),
    ]
    for options, param in cases:
        request: dict[str, Any] = {"model": "thinktank/discussion", "messages": QUESTION}
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(**{**request, **options})
        assert caught.value.param == param, options
        assert caught.value.type == "invalid_request_error"
        assert caught.value.body["message"]  # type: ignore[index]
    assert stored_runs(api) == []


@pytest.fixture
def broken_api(tmp_path: Path) -> Iterator[LiveServer]:
    """Every model call goes to a port nobody listens on, so every run fails."""
    dead = OpenAIModelConfig(
        base_url=f"http://127.0.0.1:{free_port()}/v1", model="none", max_retries=0, timeout_s=5
    )
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}", models=ModelMap(default=dead)
    )
    with LiveServer(settings) as server:
        yield server


def test_a_failed_run_is_a_502_naming_the_reason_and_is_not_retried(
    broken_api: LiveServer,
) -> None:
    with client_for(broken_api) as client:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="thinktank/single", messages=QUESTION)
        assert time.monotonic() - started < 30
    error = caught.value
    assert error.status_code == 502
    assert error.code == "run_failed"
    assert "model call failed" in error.message
    runs = stored_runs(broken_api)
    # the client's automatic retry would start a second failing run; x-should-retry stops it
    assert len(runs) == 1 and runs[0]["status"] == "failed"
    assert error.response.headers["x-thinktank-run-id"] == runs[0]["id"]


def test_a_run_failing_mid_stream_raises_in_the_client(broken_api: LiveServer) -> None:
    """Once a stream has begun the status is 200, so the failure travels as an error line."""
    with client_for(broken_api) as client:
        stream = client.chat.completions.create(
            model="thinktank/single", messages=QUESTION, stream=True
        )
        with pytest.raises(openai.APIError, match="model call failed"):
            list(stream)


async def test_the_async_client_works_too(api: LiveServer) -> None:
    async with openai.AsyncOpenAI(base_url=f"{api.url}/v1", api_key="unused") as client:
        completion = await client.chat.completions.create(
            model="thinktank/discussion", messages=QUESTION
        )
        assert "**Answer:** 5" in (completion.choices[0].message.content or "")

        stream = await client.chat.completions.create(
            model="thinktank/discussion",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "**Solver** (round 0): 2 + 3 = 5 so \\boxed{5}" in content
        assert content.endswith("**Answer:** 5")
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="thinktank/nope", messages=QUESTION)


# --- a client's automatic retries ----------------------------------------------------------


@pytest.fixture
def sluggish_api(tmp_path: Path) -> Iterator[LiveServer]:
    """Each model call takes 4 s: a run outlasts a client's 2.5 s timeout."""
    with LiveServer(scripted_settings(tmp_path, latency_s=4.0)) as server:
        yield server


def test_a_client_retrying_after_its_timeout_gets_the_run_it_started(
    sluggish_api: LiveServer,
) -> None:
    """The official client's defaults retry a timed-out request twice; one create() is still
    one run, and the retry that outlives it answers with that run's result."""
    attempts: list[str | None] = []
    http_client = openai.DefaultHttpxClient(
        event_hooks={"request": [lambda r: attempts.append(r.headers.get(RETRY_COUNT_HEADER))]}
    )
    with openai.OpenAI(
        base_url=f"{sluggish_api.url}/v1", api_key="unused", timeout=2.5, http_client=http_client
    ) as client:
        completion = client.chat.completions.create(model="thinktank/single", messages=QUESTION)

    assert attempts[:2] == ["0", "1"]  # the first attempt timed out and was retried
    runs = stored_runs(sluggish_api)
    assert len(runs) == 1
    assert extension(completion)["run_id"] == runs[0]["id"]
    assert completion.choices[0].message.content.endswith("**Answer:** 5")
    turns = httpx.get(f"{sluggish_api.url}/v1/runs/{runs[0]['id']}/turns").json()
    assert [t["role"] for t in turns] == ["solver"]  # executed once


def test_the_same_question_asked_twice_is_two_runs(api: LiveServer, client: openai.OpenAI) -> None:
    """Only a retry joins an earlier run: a client asking again (say, for another sample)
    gets a run of its own."""
    first = client.chat.completions.create(model="thinktank/single", messages=QUESTION)
    second = client.chat.completions.create(model="thinktank/single", messages=QUESTION)
    assert first.id != second.id
    assert len(stored_runs(api)) == 2


def test_a_retry_does_not_join_another_question_or_config(
    api: LiveServer, client: openai.OpenAI
) -> None:
    """What a retry joins is the same request's run: a different problem or setting is not it."""
    client.chat.completions.create(model="thinktank/single", messages=QUESTION)
    retry = {RETRY_COUNT_HEADER: "1"}
    other_problem = client.chat.completions.create(
        model="thinktank/single",
        messages=[{"role": "user", "content": "What is 2+3? Show your steps."}],
        extra_headers=retry,
    )
    other_config = client.chat.completions.create(
        model="thinktank/single", messages=QUESTION, temperature=0.1, extra_headers=retry
    )
    same = client.chat.completions.create(
        model="thinktank/single", messages=QUESTION, temperature=0.1, extra_headers=retry
    )
    runs = stored_runs(api)
    assert len(runs) == 3
    assert other_problem.id != other_config.id
    assert same.id == other_config.id


# --- tools and structured output -----------------------------------------------------------

ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
ANSWER_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"value": {"type": "integer"}}},
    },
}


def test_tools_and_structured_output_are_refused_naming_the_parameter(
    api: LiveServer, client: openai.OpenAI
) -> None:
    """A client that wants a tool call or JSON gets a 400 saying which parameter, never prose
    in their place; nothing is run."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [ADD_TOOL]}, "tools"),
        ({"tools": [ADD_TOOL], "tool_choice": "required"}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "add"}}}, "tool_choice"),
        ({"functions": [ADD_TOOL["function"]]}, "functions"),
        ({"function_call": {"name": "add"}}, "function_call"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": ANSWER_SCHEMA}, "response_format"),
    ]
    for options, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="thinktank/single", messages=QUESTION, **options)
        error = caught.value
        assert (error.param, error.type) == (param, "invalid_request_error"), options
        assert error.code in ("unsupported_parameter", "unsupported_value")
        assert param in error.message and "thinktank.answer" in error.message
    assert stored_runs(api) == []


def test_text_format_and_tools_that_cannot_be_called_are_served(
    api: LiveServer, client: openai.OpenAI
) -> None:
    for options in (
        {"response_format": {"type": "text"}},
        {"tools": []},
        {"tools": [ADD_TOOL], "tool_choice": "none"},
        {"tool_choice": "auto"},
    ):
        completion = client.chat.completions.create(
            model="thinktank/single", messages=QUESTION, **options
        )
        assert extension(completion)["answer"] == "5", options


class Answer(BaseModel):
    value: int


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_langchain_structured_output_and_tools_fail_clearly(api: LiveServer) -> None:
    """LangChain's ChatOpenAI works as a chat model, and what the face cannot do raises an
    error naming the parameter: never a silent None (function_calling), a pydantic error on
    prose (json_schema) or prose where a tool call was asked for (bind_tools)."""
    llm = ChatOpenAI(
        model="thinktank/single", base_url=f"{api.url}/v1", api_key="unused", timeout=60
    )
    reply = llm.invoke("What is 2+3?")
    assert isinstance(reply, AIMessage)
    assert isinstance(reply.content, str) and reply.content.endswith("**Answer:** 5")

    structured: list[tuple[Any, str]] = [
        (llm.with_structured_output(Answer, method="json_schema"), "response_format"),
        (llm.with_structured_output(Answer, method="json_mode"), "response_format"),
        (llm.with_structured_output(Answer, method="function_calling"), "tools"),
        (llm.with_structured_output(Answer, method="function_calling", include_raw=True), "tools"),
        (llm.bind_tools([add]), "tools"),
    ]
    for runnable, param in structured:
        with pytest.raises(openai.BadRequestError) as caught:
            runnable.invoke("What is 2+3? Answer in JSON.")
        assert caught.value.param == param
        assert "not supported" in caught.value.message
    assert len(stored_runs(api)) == 1  # only the plain question ran
