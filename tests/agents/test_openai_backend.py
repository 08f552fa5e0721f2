"""The ``openai`` backend against two real HTTP servers on loopback, no client mocks.

- llama.cpp's OpenAI-compatible server (llama-cpp-python) serving SmolLM2-135M on the CPU: what a
  real endpoint returns (text, usage, finish reasons, stop strings, streaming, logprobs, and its
  habit of ignoring ``n``).
- A fault-injecting OpenAI-shaped server defined here (FastAPI under uvicorn in a thread): each
  test scripts its replies (errors, hangs, empty choices, dropped connections) and reads back
  what arrived (attempts, bodies, client ports, requests in flight at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from agents.backends.openai_compat import OpenAIBackend, OpenAIModelConfig
from agents.model import ChatMessage, ModelError, ModelRequest, SamplingParams
from tests.agents.conftest import free_socket

# -- the fault-injecting server --------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """How the fault server answers one request."""

    kind: Literal["ok", "status", "empty", "close", "break_stream"] = "ok"
    status: int = 200
    message: str = ""
    delay_s: float = 0.0
    choices: int | None = None  # choices to return; None: as many as the request's n
    headers: dict[str, str] = field(default_factory=dict)
    finish: str = "stop"  # a stream's finish reason
    stream_usage: bool = True  # send a usage chunk when the request's stream_options ask


@dataclass
class Hit:
    """One request as the fault server saw it."""

    body: dict[str, Any]
    client_port: int
    authorization: str | None


@dataclass
class Scenario:
    """One test's script and record. Requests still running from an earlier test (a hang the
    client gave up on) keep counting against their own scenario, not the current one."""

    replies: list[Reply]
    hits: list[Hit] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self, hit: Hit) -> Reply:
        with self.lock:
            self.hits.append(hit)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.replies.pop(0) if self.replies else Reply()

    def done(self) -> None:
        with self.lock:
            self.in_flight -= 1

    @property
    def attempts(self) -> int:
        return len(self.hits)


def _completion(body: dict[str, Any], choices: int) -> dict[str, Any]:
    texts = [f"reply {i} " + "word " * i for i in range(choices)]
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fault"),
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text.strip()},
                "finish_reason": "stop",
            }
            for i, text in enumerate(texts)
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 12, "total_tokens": 19},
    }


STREAM_USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def _chunk(content: str | None, finish: str | None = None, *, role: str | None = None) -> str:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    if role is not None:
        delta["role"] = role
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return _event({"choices": [choice]})


def _event(fields: dict[str, Any]) -> str:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fault"}
    return f"data: {json.dumps({**chunk, **fields})}\n\n"


async def _stream_events(reply: Reply, usage: bool) -> AsyncIterator[str]:
    yield _chunk("", role="assistant")  # a first chunk with the role and no text, as OpenAI's
    for word in ("streamed ", "from ", "fault"):
        yield _chunk(word)
        if reply.kind == "break_stream":
            raise RuntimeError("fault server drops the connection mid-stream")
    yield _chunk(None, reply.finish)
    if usage:  # OpenAI's usage chunk: no choices
        yield _event({"choices": [], "usage": STREAM_USAGE})
    yield "data: [DONE]\n\n"


async def _dropped_connection() -> AsyncIterator[bytes]:
    # Headers go out, then the body dies: the client sees the connection close under it.
    raise RuntimeError("fault server drops the connection")
    yield b""  # pragma: no cover - makes this an async generator


class FaultServer:
    def __init__(self) -> None:
        self.scenario = Scenario([])
        self.base_url = ""
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self._chat)

    def script(self, *replies: Reply) -> Scenario:
        self.scenario = Scenario(list(replies))
        return self.scenario

    async def _chat(self, request: Request) -> Response:
        scenario = self.scenario
        body = await request.json()
        port = request.client.port if request.client else 0
        reply = scenario.next_reply(Hit(body, port, request.headers.get("authorization")))
        try:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.kind == "status":
                error = {"error": {"message": reply.message, "type": "fault", "code": None}}
                return JSONResponse(error, status_code=reply.status, headers=reply.headers)
            if reply.kind == "close":
                return StreamingResponse(_dropped_connection())
            if reply.kind == "empty":
                return JSONResponse({**_completion(body, 0), "choices": []})
            if body.get("stream"):
                asked = (body.get("stream_options") or {}).get("include_usage", False)
                events = _stream_events(reply, usage=asked and reply.stream_usage)
                return StreamingResponse(events, media_type="text/event-stream")
            choices = reply.choices if reply.choices is not None else body.get("n", 1)
            return JSONResponse(_completion(body, choices))
        finally:
            scenario.done()


@pytest.fixture(scope="session")
def fault_server() -> Iterator[FaultServer]:
    fault = FaultServer()
    sock = free_socket()
    config = uvicorn.Config(
        fault.app, log_level="critical", lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the fault server did not start")
        time.sleep(0.01)
    fault.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    yield fault
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture
def fault(fault_server: FaultServer) -> FaultServer:
    fault_server.script()
    return fault_server


def fault_backend(fault: FaultServer, **overrides: Any) -> OpenAIBackend:
    options: dict[str, Any] = {
        "base_url": fault.base_url,
        "model": "fault-model",
        "timeout_s": 5.0,
        "max_retries": 2,
        "retry_backoff_s": 0.01,
    }
    return OpenAIBackend(OpenAIModelConfig(**{**options, **overrides}))


# -- the llama.cpp server --------------------------------------------------------------------


@pytest.fixture
async def llama(llama_server: str) -> AsyncIterator[OpenAIBackend]:
    backend = OpenAIBackend(
        OpenAIModelConfig(
            base_url=llama_server,
            model="smollm2",
            timeout_s=60,
            max_retries=1,
            stream_without_usage=True,
        )
    )
    yield backend
    await backend.close()


def ask(content: str, **params: Any) -> ModelRequest:
    return ModelRequest(
        messages=[ChatMessage(role="user", content=content)], params=SamplingParams(**params)
    )


STORY = "Write a long story about a dragon who learns to bake bread."
COUNT = "List the numbers from 1 to 10, separated by commas."

# -- against llama.cpp -----------------------------------------------------------------------


async def test_llama_chat_returns_text_usage_and_finish(llama: OpenAIBackend) -> None:
    response = await llama.generate(ask(COUNT, max_tokens=40, temperature=0))
    [completion] = response.completions
    assert "1, 2, 3" in completion.text
    assert completion.finish_reason == "stop"
    assert 0 < completion.completion_tokens <= 40
    assert response.prompt_tokens > 10
    assert response.model == "smollm2"
    assert response.latency_s > 0


async def test_llama_max_tokens_ends_with_length(llama: OpenAIBackend) -> None:
    response = await llama.generate(ask(STORY, max_tokens=5))
    [completion] = response.completions
    assert completion.finish_reason == "length"
    assert 0 < completion.completion_tokens <= 5
    assert completion.text


async def test_llama_ignores_n_so_the_backend_fans_out(llama: OpenAIBackend) -> None:
    assert llama.native_n is None
    response = await llama.generate(ask(STORY, n=3, max_tokens=8, temperature=1.0, seed=1))
    assert len(response.completions) == 3
    assert all(c.text and 0 < c.completion_tokens <= 8 for c in response.completions)
    assert response.completion_tokens == sum(c.completion_tokens for c in response.completions)
    # llama.cpp's server drops n (one choice back); the backend learned it for later calls.
    assert llama.native_n is False
    again = await llama.generate(ask(STORY, n=2, max_tokens=4))
    assert len(again.completions) == 2


async def test_llama_stop_strings(llama: OpenAIBackend) -> None:
    response = await llama.generate(ask(COUNT, max_tokens=40, temperature=0, stop=[", 4"]))
    [completion] = response.completions
    assert completion.text.startswith("1, 2, 3")
    assert ", 4" not in completion.text
    assert completion.finish_reason == "stop"


async def test_llama_streams_deltas(llama: OpenAIBackend) -> None:
    pieces = [p async for p in llama.stream(ask(COUNT, max_tokens=12, temperature=0))]
    assert len(pieces) > 1
    assert "".join(pieces).startswith("1, 2")


async def test_llama_generate_with_on_text_streams_the_same_reply(llama: OpenAIBackend) -> None:
    request = ask(COUNT, max_tokens=24, temperature=0)
    whole = (await llama.generate(request)).completions[0]
    pieces: list[str] = []
    response = await llama.generate(request, on_text=pieces.append)

    [completion] = response.completions
    assert len(pieces) > 1
    assert "".join(pieces) == completion.text == whole.text  # greedy: the same reply
    assert completion.finish_reason == whole.finish_reason
    # llama-cpp-python's server sends no usage in a stream: tokens are counted as chunks
    assert 0 < completion.completion_tokens <= 24
    assert response.model == "smollm2"
    assert response.latency_s > 0


async def test_an_endpoint_without_stream_usage_is_no_longer_streamed(llama_server: str) -> None:
    backend = OpenAIBackend(OpenAIModelConfig(base_url=llama_server, model="smollm2"))
    try:
        first: list[str] = []
        streamed = await backend.generate(ask(COUNT, max_tokens=6), on_text=first.append)
        assert first and streamed.prompt_tokens == 0  # llama.cpp sent no usage in the stream
        assert backend.streams_usage is False

        second: list[str] = []
        whole = await backend.generate(ask(COUNT, max_tokens=6), on_text=second.append)
        assert second == [] and whole.prompt_tokens > 0  # counted, at the cost of live text
    finally:
        await backend.close()


async def test_llama_on_text_holds_back_stop_strings_and_ends_on_length(
    llama: OpenAIBackend,
) -> None:
    pieces: list[str] = []
    stopped = await llama.generate(
        ask(COUNT, max_tokens=40, temperature=0, stop=[", 4"]), on_text=pieces.append
    )
    [completion] = stopped.completions
    assert "".join(pieces) == completion.text
    assert completion.text.startswith("1, 2, 3") and ", 4" not in completion.text
    assert completion.finish_reason == "stop"

    pieces = []
    cut = await llama.generate(ask(STORY, max_tokens=5), on_text=pieces.append)
    assert "".join(pieces) == cut.completions[0].text
    assert cut.completions[0].finish_reason == "length"
    assert 0 < cut.completions[0].completion_tokens <= 5


async def test_llama_streamed_top_logprobs(llama: OpenAIBackend) -> None:
    pieces: list[str] = []
    response = await llama.generate(
        ask(COUNT, max_tokens=6, temperature=0, top_logprobs=2), on_text=pieces.append
    )
    [completion] = response.completions
    assert "".join(pieces) == completion.text
    assert completion.logprobs and len(completion.logprobs) == completion.completion_tokens
    assert "".join(t.token for t in completion.logprobs) == completion.text


async def test_llama_top_logprobs(llama: OpenAIBackend) -> None:
    response = await llama.generate(ask(COUNT, max_tokens=6, temperature=0, top_logprobs=3))
    [completion] = response.completions
    assert completion.logprobs, "llama.cpp's server returns chat logprobs"
    assert len(completion.logprobs) == completion.completion_tokens
    assert "".join(t.token for t in completion.logprobs) == completion.text
    for token in completion.logprobs:
        assert token.logprob <= 0
        # Greedy decoding picks the most likely token; the server lists the top 3 (and adds the
        # sampled token when it falls outside them, so up to 4 entries).
        assert 3 <= len(token.top) <= 4
        assert token.logprob == pytest.approx(max(token.top.values()), abs=1e-4)


async def test_llama_concurrent_requests_share_two_slots(llama_server: str) -> None:
    backend = OpenAIBackend(
        OpenAIModelConfig(base_url=llama_server, model="smollm2", max_concurrency=2)
    )
    try:
        responses = await asyncio.gather(
            *(backend.generate(ask(STORY, max_tokens=8, seed=i)) for i in range(4))
        )
    finally:
        await backend.close()
    assert [len(r.completions) for r in responses] == [1, 1, 1, 1]
    assert all(r.completions[0].text for r in responses)


# -- against the fault server: retries -------------------------------------------------------


async def test_5xx_is_retried_until_success(fault: FaultServer) -> None:
    scenario = fault.script(Reply("status", 500, "boom"), Reply("status", 503, "busy"), Reply())
    backend = fault_backend(fault)
    try:
        response = await backend.generate(ask("hi"))
    finally:
        await backend.close()
    assert response.completions[0].text == "reply 0"
    assert scenario.attempts == 3


async def test_5xx_exhausting_retries_is_retryable(fault: FaultServer) -> None:
    scenario = fault.script(*[Reply("status", 502, "bad gateway")] * 5)
    backend = fault_backend(fault, max_retries=2)
    try:
        with pytest.raises(ModelError) as caught:
            await backend.generate(ask("hi"))
    finally:
        await backend.close()
    assert caught.value.retryable is True
    message = str(caught.value)
    assert fault.base_url in message and "502" in message and "3 attempt" in message
    assert scenario.attempts == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_other_4xx_fail_at_once_with_the_server_message(
    fault: FaultServer, status: int
) -> None:
    scenario = fault.script(Reply("status", status, f"nope {status}: max_tokens too large"))
    backend = fault_backend(fault)
    try:
        with pytest.raises(ModelError) as caught:
            await backend.generate(ask("hi"))
    finally:
        await backend.close()
    assert caught.value.retryable is False
    assert f"nope {status}: max_tokens too large" in str(caught.value)
    assert scenario.attempts == 1


async def test_429_is_retried(fault: FaultServer) -> None:
    scenario = fault.script(
        Reply("status", 429, "slow down", headers={"retry-after": "0.05"}), Reply()
    )
    backend = fault_backend(fault)
    started = time.perf_counter()
    try:
        response = await backend.generate(ask("hi"))
    finally:
        await backend.close()
    assert response.completions[0].text == "reply 0"
    assert scenario.attempts == 2
    assert time.perf_counter() - started >= 0.05  # Retry-After is a floor on the backoff
    assert response.latency_s >= 0.05  # latency counts the retries


async def test_timeouts_retry_then_fail_retryable(fault: FaultServer) -> None:
    scenario = fault.script(*[Reply(delay_s=1.0)] * 3)
    backend = fault_backend(fault, timeout_s=0.2, max_retries=2)
    started = time.perf_counter()
    try:
        with pytest.raises(ModelError) as caught:
            await backend.generate(ask("hi"))
    finally:
        await backend.close()
    elapsed = time.perf_counter() - started
    assert caught.value.retryable is True
    assert "timed out" in str(caught.value) and "3 attempt" in str(caught.value)
    assert scenario.attempts == 3
    assert 0.6 <= elapsed < 1.5


async def test_dropped_connection_is_retried(fault: FaultServer) -> None:
    scenario = fault.script(Reply("close"), Reply())
    backend = fault_backend(fault)
    try:
        response = await backend.generate(ask("hi"))
    finally:
        await backend.close()
    assert response.completions[0].text == "reply 0"
    assert scenario.attempts == 2


async def test_dropped_connections_exhaust_retries(fault: FaultServer) -> None:
    fault.script(*[Reply("close")] * 3)
    backend = fault_backend(fault, max_retries=2)
    try:
        with pytest.raises(ModelError) as caught:
            await backend.generate(ask("hi"))
    finally:
        await backend.close()
    assert caught.value.retryable is True
    assert "connection error" in str(caught.value)


async def test_empty_choices_is_a_retryable_error(fault: FaultServer) -> None:
    scenario = fault.script(Reply("empty"))
    backend = fault_backend(fault)
    try:
        with pytest.raises(ModelError) as caught:
            await backend.generate(ask("hi"))
    finally:
        await backend.close()
    assert caught.value.retryable is True
    assert "no choices" in str(caught.value)
    assert scenario.attempts == 1


# -- against the fault server: the server's word on retrying ---------------------------------


async def test_x_should_retry_false_stops_the_retry_of_a_5xx(fault: FaultServer) -> None:
    """Another thinktank's face says this of a failed run: a retry would only start another."""
    scenario = fault.script(
        *[Reply("status", 502, "run r1 failed: no answer", headers={"x-should-retry": "false"})] * 3
    )
    backend = fault_backend(fault)
    try:
        with pytest.raises(ModelError) as caught:
            await backend.generate(ask("hi"))
    finally:
        await backend.close()
    assert scenario.attempts == 1
    assert caught.value.retryable is False
    assert "said not to retry" in str(caught.value) and "run r1 failed" in str(caught.value)


async def test_x_should_retry_false_stops_the_retry_of_a_stream(fault: FaultServer) -> None:
    scenario = fault.script(
        *[Reply("status", 503, "draining", headers={"x-should-retry": "false"})] * 3
    )
    backend = fault_backend(fault)
    try:
        with pytest.raises(ModelError) as caught:
            await backend.generate(ask("hi"), on_text=lambda piece: None)
    finally:
        await backend.close()
    assert scenario.attempts == 1
    assert caught.value.retryable is False and "draining" in str(caught.value)


async def test_x_should_retry_true_retries_a_4xx(fault: FaultServer) -> None:
    scenario = fault.script(
        Reply("status", 409, "locked, try again", headers={"x-should-retry": "true"}), Reply()
    )
    backend = fault_backend(fault)
    try:
        response = await backend.generate(ask("hi"))
    finally:
        await backend.close()
    assert response.completions[0].text == "reply 0"
    assert scenario.attempts == 2


IN_TWO_SECONDS = "an HTTP date two seconds after the request"  # made when the test runs


@pytest.mark.parametrize(
    ("headers", "least_s", "most_s"),
    [
        # milliseconds win over seconds, as OpenAI's client reads them
        ({"retry-after-ms": "300", "retry-after": "20"}, 0.3, 2.0),
        ({"retry-after": "1"}, 1.0, 2.5),
        ({"retry-after": IN_TWO_SECONDS}, 0.5, 3.0),
    ],
    ids=["retry-after-ms", "retry-after-seconds", "retry-after-date"],
)
async def test_the_wait_a_server_asks_for_replaces_the_backoff(
    fault: FaultServer, headers: dict[str, str], least_s: float, most_s: float
) -> None:
    if headers.get("retry-after") == IN_TWO_SECONDS:
        when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        headers = {"retry-after": email.utils.format_datetime(when, usegmt=True)}
    scenario = fault.script(Reply("status", 503, "busy", headers=headers), Reply())
    # our own backoff would be 5 to 10 s: the measured wait can only be the server's
    backend = fault_backend(fault, retry_backoff_s=10.0)
    started = time.perf_counter()
    try:
        response = await backend.generate(ask("hi"))
    finally:
        await backend.close()
    elapsed = time.perf_counter() - started
    assert response.completions[0].text == "reply 0"
    assert scenario.attempts == 2
    assert least_s <= elapsed < most_s


async def test_a_wait_over_two_minutes_fails_at_once(fault: FaultServer) -> None:
    scenario = fault.script(*[Reply("status", 429, "quota", headers={"retry-after": "600"})] * 3)
    backend = fault_backend(fault)
    started = time.perf_counter()
    try:
        with pytest.raises(ModelError) as caught:
            await backend.generate(ask("hi"))
    finally:
        await backend.close()
    assert scenario.attempts == 1
    assert time.perf_counter() - started < 2
    # not now, but a later call may succeed
    assert caught.value.retryable is True
    assert "wait 600s" in str(caught.value) and "quota" in str(caught.value)


# -- against the fault server: client, concurrency, mapping ----------------------------------


async def test_one_client_and_connection_serve_every_call(fault: FaultServer) -> None:
    scenario = fault.script()
    backend = fault_backend(fault)
    client = backend._client
    try:
        for _ in range(5):
            await backend.generate(ask("hi"))
    finally:
        await backend.close()
    assert backend._client is client
    assert scenario.attempts == 5
    # Every request came over the same kept-alive connection (same client port).
    assert len({hit.client_port for hit in scenario.hits}) == 1


async def test_a_backend_per_call_opens_a_connection_per_call(fault: FaultServer) -> None:
    # The contrast that makes the test above meaningful: ports do tell connections apart.
    scenario = fault.script()
    for _ in range(3):
        backend = fault_backend(fault)
        await backend.generate(ask("hi"))
        await backend.close()
    assert len({hit.client_port for hit in scenario.hits}) == 3


async def test_max_concurrency_bounds_requests_in_flight(fault: FaultServer) -> None:
    scenario = fault.script(*[Reply(delay_s=0.1)] * 6)
    backend = fault_backend(fault, max_concurrency=2)
    try:
        responses = await asyncio.gather(*(backend.generate(ask("hi")) for _ in range(6)))
    finally:
        await backend.close()
    assert len(responses) == 6
    assert scenario.attempts == 6
    assert scenario.max_in_flight == 2


async def test_sampling_params_are_mapped(fault: FaultServer) -> None:
    scenario = fault.script()
    backend = fault_backend(fault)
    try:
        await backend.generate(ask("hi"))
        await backend.generate(
            ask("hi", max_tokens=9, temperature=0.3, top_p=0.5, stop=["\n\n"], seed=42)
        )
    finally:
        await backend.close()
    plain, full = (hit.body for hit in scenario.hits)
    assert plain["model"] == "fault-model"
    assert plain["messages"] == [{"role": "user", "content": "hi"}]
    assert {"n", "stop", "seed", "logprobs", "top_logprobs"}.isdisjoint(plain)
    assert (full["max_tokens"], full["temperature"], full["top_p"]) == (9, 0.3, 0.5)
    assert (full["stop"], full["seed"]) == (["\n\n"], 42)


async def test_adapter_is_sent_as_the_model_name(fault: FaultServer) -> None:
    scenario = fault.script()
    backend = fault_backend(fault)
    request = ask("hi").model_copy(update={"adapter": "math-lora"})
    try:
        response = await backend.generate(request)
    finally:
        await backend.close()
    assert scenario.hits[0].body["model"] == "math-lora"
    assert response.adapter == "math-lora"


async def test_native_n_and_token_split(fault: FaultServer) -> None:
    scenario = fault.script()
    backend = fault_backend(fault)
    try:
        response = await backend.generate(ask("hi", n=3))
    finally:
        await backend.close()
    assert scenario.attempts == 1 and scenario.hits[0].body["n"] == 3
    assert backend.native_n is True
    # usage gives 12 tokens for all three; shared by text length, summing to the total.
    counts = [c.completion_tokens for c in response.completions]
    assert sum(counts) == 12 and counts == sorted(counts) and counts[0] < counts[2]


async def test_dropped_n_is_fanned_out_with_distinct_seeds(fault: FaultServer) -> None:
    scenario = fault.script(*[Reply(choices=1)] * 10)
    backend = fault_backend(fault)
    try:
        first = await backend.generate(ask("hi", n=3, seed=7))
        assert len(first.completions) == 3
        assert [hit.body.get("n") for hit in scenario.hits] == [3, None, None]
        assert sorted(hit.body["seed"] for hit in scenario.hits) == [7, 8, 9]
        assert backend.native_n is False
        # Once learned, n>1 goes out as single-sample requests straight away.
        second = await backend.generate(ask("hi", n=2))
    finally:
        await backend.close()
    assert len(second.completions) == 2
    assert [hit.body.get("n") for hit in scenario.hits[3:]] == [None, None]
    assert first.completion_tokens == 3 * 12  # each single-sample reply's usage is exact


async def test_api_key_is_sent_only_when_configured(fault: FaultServer) -> None:
    scenario = fault.script()
    anonymous = fault_backend(fault)
    keyed = fault_backend(fault, api_key="sk-test")
    try:
        await anonymous.generate(ask("hi"))
        await keyed.generate(ask("hi"))
    finally:
        await anonymous.close()
        await keyed.close()
    assert [hit.authorization for hit in scenario.hits] == [None, "Bearer sk-test"]


async def test_closed_backend_refuses_calls(fault: FaultServer) -> None:
    backend = fault_backend(fault)
    await backend.close()
    await backend.close()  # closing twice is harmless
    with pytest.raises(ModelError):
        await backend.generate(ask("hi"))


# -- against the fault server: streaming -----------------------------------------------------


async def test_stream_retries_failures_before_the_first_token(fault: FaultServer) -> None:
    scenario = fault.script(Reply("status", 500, "warming up"), Reply("close"), Reply())
    backend = fault_backend(fault)
    try:
        pieces = [p async for p in backend.stream(ask("hi"))]
    finally:
        await backend.close()
    assert pieces == ["streamed ", "from ", "fault"]
    assert scenario.attempts == 3
    assert scenario.hits[-1].body["stream"] is True


async def test_stream_breaking_mid_way_raises(fault: FaultServer) -> None:
    scenario = fault.script(Reply("break_stream"), Reply())
    backend = fault_backend(fault)
    pieces: list[str] = []
    try:
        with pytest.raises(ModelError) as caught:
            async for piece in backend.stream(ask("hi")):
                pieces.append(piece)
    finally:
        await backend.close()
    assert pieces == ["streamed "]
    assert "after the first token" in str(caught.value)
    assert scenario.attempts == 1  # text already reached the caller: not retried


async def test_stream_400_fails_at_once(fault: FaultServer) -> None:
    scenario = fault.script(Reply("status", 400, "bad stream request"))
    backend = fault_backend(fault)
    try:
        with pytest.raises(ModelError) as caught:
            _ = [p async for p in backend.stream(ask("hi"))]
    finally:
        await backend.close()
    assert caught.value.retryable is False and "bad stream request" in str(caught.value)
    assert scenario.attempts == 1


async def test_stream_releases_its_slot(fault: FaultServer) -> None:
    fault.script()
    backend = fault_backend(fault, max_concurrency=1)
    try:
        async with contextlib.aclosing(backend.stream(ask("hi"))) as stream:
            async for _ in stream:
                break  # stop early: closing the generator gives the slot back
        # With one slot, this would wait forever if the stream had kept it.
        response = await asyncio.wait_for(backend.generate(ask("hi")), timeout=2)
    finally:
        await backend.close()
    assert response.completions


# -- against the fault server: generate with on_text -----------------------------------------


async def test_on_text_streams_and_assembles_the_reply(fault: FaultServer) -> None:
    scenario = fault.script(Reply(finish="length"))
    backend = fault_backend(fault)
    pieces: list[str] = []
    try:
        response = await backend.generate(ask("hi", max_tokens=3), on_text=pieces.append)
    finally:
        await backend.close()
    [completion] = response.completions
    assert pieces == ["streamed ", "from ", "fault"]
    assert completion.text == "streamed from fault"
    assert completion.finish_reason == "length"
    assert completion.logprobs is None
    # from the usage chunk that stream_options asked for
    assert completion.completion_tokens == STREAM_USAGE["completion_tokens"]
    assert response.prompt_tokens == STREAM_USAGE["prompt_tokens"]
    assert response.model == "fault"
    body = scenario.hits[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_on_text_without_usage_counts_the_chunks(fault: FaultServer) -> None:
    fault.script(Reply(stream_usage=False))
    backend = fault_backend(fault)
    try:
        response = await backend.generate(ask("hi"), on_text=lambda _piece: None)
    finally:
        await backend.close()
    [completion] = response.completions
    assert completion.text == "streamed from fault"
    assert completion.completion_tokens == 3  # three content chunks; the role chunk is none
    assert response.prompt_tokens == 0  # unknown without usage, as for a reply without it


async def test_on_text_retries_failures_before_the_first_piece(fault: FaultServer) -> None:
    scenario = fault.script(Reply("status", 500, "warming up"), Reply("close"), Reply())
    backend = fault_backend(fault)
    pieces: list[str] = []
    try:
        response = await backend.generate(ask("hi"), on_text=pieces.append)
    finally:
        await backend.close()
    assert pieces == ["streamed ", "from ", "fault"]  # failed attempts delivered nothing
    assert response.completions[0].text == "".join(pieces)
    assert scenario.attempts == 3


async def test_on_text_stream_breaking_mid_way_fails_without_retry(fault: FaultServer) -> None:
    scenario = fault.script(Reply("break_stream"), Reply())
    backend = fault_backend(fault, max_concurrency=1)
    pieces: list[str] = []
    try:
        with pytest.raises(ModelError) as caught:
            await backend.generate(ask("hi"), on_text=pieces.append)
        # the broken stream gave its slot back: with one slot, this would wait forever
        after = await asyncio.wait_for(backend.generate(ask("hi")), timeout=2)
    finally:
        await backend.close()
    assert pieces == ["streamed "]
    assert caught.value.retryable is True and "after the first token" in str(caught.value)
    assert scenario.attempts == 2  # the broken call once, then the call after it
    assert after.completions[0].text == "reply 0"


async def test_on_text_4xx_fails_at_once(fault: FaultServer) -> None:
    scenario = fault.script(Reply("status", 400, "bad stream request"))
    backend = fault_backend(fault)
    pieces: list[str] = []
    try:
        with pytest.raises(ModelError) as caught:
            await backend.generate(ask("hi"), on_text=pieces.append)
    finally:
        await backend.close()
    assert caught.value.retryable is False and "bad stream request" in str(caught.value)
    assert pieces == [] and scenario.attempts == 1


async def test_on_text_is_ignored_for_n_samples(fault: FaultServer) -> None:
    scenario = fault.script()
    backend = fault_backend(fault)
    pieces: list[str] = []
    try:
        response = await backend.generate(ask("hi", n=2), on_text=pieces.append)
    finally:
        await backend.close()
    assert len(response.completions) == 2
    assert pieces == []
    assert "stream" not in scenario.hits[0].body
