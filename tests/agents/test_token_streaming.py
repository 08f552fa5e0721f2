"""Live text: the scripted backend's ``on_text``, and :func:`ask` publishing it as ``token``
events through the recorder, in order and before the turn's ``turn_finished``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from agents.backends.scripted import ScriptedBackend, Slow, word_pieces
from agents.calls import Agent, RunContext, TokenBudget, TurnRecord, ask
from agents.model import ChatMessage, ModelError, ModelRequest, ModelResponse, SamplingParams
from agents.model_map import ModelRouter

REPLY = "Six times seven is  forty-two.\n\\boxed{42} "
SOLVER = Agent(name="Solver", role="solver", model="policy")


def request(role: str = "solver", **params: Any) -> ModelRequest:
    return ModelRequest(
        messages=[ChatMessage(role="user", content="What is 6 times 7?")],
        params=SamplingParams(**params),
        tags={"role": role},
    )


class Timed:
    """An ``on_text`` that notes when each piece came."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.pieces: list[str] = []
        self.at: list[float] = []

    def __call__(self, piece: str) -> None:
        self.pieces.append(piece)
        self.at.append(time.perf_counter() - self.started)


# -- the scripted backend --------------------------------------------------------------------


def test_word_pieces_join_back_exactly() -> None:
    for text in [REPLY, "", "  leading", "one", "a\n\nb\tc  "]:
        assert "".join(word_pieces(text)) == text
    assert word_pieces(REPLY) == [
        "Six ",
        "times ",
        "seven ",
        "is  ",
        "forty-two.\n",
        "\\boxed{42} ",
    ]


async def test_scripted_types_word_by_word_over_its_latency() -> None:
    backend = ScriptedBackend({"solver": [REPLY]}, latency_s=0.3)
    typed = Timed()
    response = await backend.generate(request(), on_text=typed)

    assert "".join(typed.pieces) == response.completions[0].text == REPLY
    assert typed.pieces == word_pieces(REPLY)
    # spread over the latency, in order, the last piece due as the call ends
    assert typed.at == sorted(typed.at)
    assert 0.04 <= typed.at[0] < 0.15  # the first of six is due at 0.05 s
    assert 0.29 <= typed.at[-1] < 0.45
    assert 0.3 <= response.latency_s < 0.45  # streaming does not lengthen the call
    assert response.completions[0].completion_tokens == len(REPLY.split())


async def test_scripted_streams_sample_0_as_returned() -> None:
    long = " ".join(f"w{i}" for i in range(20))
    backend = ScriptedBackend({"solver": [long, "second sample"]})
    pieces: list[str] = []
    response = await backend.generate(request(n=2, max_tokens=5), on_text=pieces.append)

    assert [c.text for c in response.completions] == ["w0 w1 w2 w3 w4", "second sample"]
    assert "".join(pieces) == "w0 w1 w2 w3 w4"  # the text as cut to max_tokens
    assert response.completions[0].finish_reason == "length"


async def test_scripted_failure_types_nothing_and_still_waits() -> None:
    backend = ScriptedBackend({"solver": [Slow(ModelError("server down"), 0.1)]})
    pieces: list[str] = []
    started = time.perf_counter()
    with pytest.raises(ModelError, match="server down"):
        await backend.generate(request(), on_text=pieces.append)
    assert pieces == []
    assert time.perf_counter() - started >= 0.1


# -- ask() publishing token events -----------------------------------------------------------


class Recorder:
    """Every event in order, turns by key; token events may be slow or fail."""

    def __init__(self, *, token_delay_s: float = 0.0, fail_tokens: bool = False) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.turns: dict[str, TurnRecord] = {}
        self.token_delay_s = token_delay_s
        self.fail_tokens = fail_tokens

    async def record_turn(self, turn: TurnRecord) -> None:
        self.turns[turn.key] = turn
        self.events.append(("turn_finished", turn.model_dump()))

    async def find_turn(self, run_id: str, key: str) -> TurnRecord | None:
        return self.turns.get(key)

    async def emit(self, run_id: str, event: str, payload: dict[str, Any]) -> None:
        if event == "token":
            if self.fail_tokens:
                raise ConnectionError("event bus unreachable")
            await asyncio.sleep(self.token_delay_s)
        self.events.append((event, payload))

    def kinds(self) -> list[str]:
        return [event for event, _ in self.events]

    def tokens(self, key: str) -> list[dict[str, Any]]:
        return [p for e, p in self.events if e == "token" and p["key"] == key]


def context(
    backend: ScriptedBackend, recorder: Recorder, *, stream: bool = True, resuming: bool = False
) -> RunContext:
    return RunContext(
        run_id="run-1",
        models=ModelRouter.single(backend),
        recorder=recorder,
        budget=TokenBudget(limit=None),
        resuming=resuming,
        stream_tokens=stream,
    )


async def ask_solver(ctx: RunContext, key: str = "solve/0") -> Any:
    messages = [ChatMessage(role="user", content="What is 6 times 7?")]
    return await ask(ctx, SOLVER, messages, key=key, node="solve")


async def test_ask_publishes_tokens_before_the_turn_finishes() -> None:
    recorder = Recorder()
    backend = ScriptedBackend({"solver": [REPLY]}, latency_s=0.1)
    turn = await ask_solver(context(backend, recorder))

    tokens = recorder.tokens("solve/0")
    assert [t["text"] for t in tokens] == word_pieces(REPLY)
    assert all(t == {"key": "solve/0", "agent": "Solver", "text": t["text"]} for t in tokens)
    assert "".join(t["text"] for t in tokens) == turn.text == REPLY
    kinds = recorder.kinds()
    assert kinds[0] == "turn_started" and kinds[-1] == "turn_finished"
    assert set(kinds[1:-1]) == {"token"}


async def test_ask_publishes_no_tokens_unless_the_run_asks() -> None:
    recorder = Recorder()
    await ask_solver(context(ScriptedBackend({"solver": [REPLY]}), recorder, stream=False))
    assert recorder.kinds() == ["turn_started", "turn_finished"]


async def test_replayed_turns_publish_no_tokens() -> None:
    recorder = Recorder()
    backend = ScriptedBackend({"solver": [REPLY]})
    await ask_solver(context(backend, recorder))
    recorder.events.clear()

    replayed = await ask_solver(context(backend, recorder, resuming=True))
    assert replayed.text == REPLY
    assert len(backend.requests) == 1  # no model call the second time
    assert recorder.events == []


async def test_a_slow_event_path_merges_pieces_and_never_slows_generation() -> None:
    recorder = Recorder(token_delay_s=0.05)
    reply = " ".join(f"w{i}" for i in range(40))
    backend = ScriptedBackend({"solver": [reply]}, latency_s=0.2)
    turn = await ask_solver(context(backend, recorder))

    assert turn.record.latency_s < 1.0  # 40 pieces at 50 ms each would take 2 s
    tokens = recorder.tokens("solve/0")
    assert 1 < len(tokens) < 40  # pieces waiting for the publisher went out together
    assert "".join(t["text"] for t in tokens) == reply
    assert recorder.kinds()[-1] == "turn_finished"  # every token before it


class BreaksMidReply:
    """A backend whose stream breaks after two pieces, as a dropped connection would."""

    name = "breaks"

    async def generate(
        self, request: ModelRequest, *, on_text: Callable[[str], None] | None = None
    ) -> ModelResponse:
        for piece in ("Six ", "times "):
            if on_text is not None:
                on_text(piece)
            await asyncio.sleep(0.01)
        raise ModelError("stream broke after the first token", retryable=True)

    async def close(self) -> None:
        return None


async def test_tokens_of_a_failed_call_precede_its_failed_turn() -> None:
    recorder = Recorder(token_delay_s=0.02)
    ctx = context(ScriptedBackend(), recorder)
    ctx.models = ModelRouter.single(BreaksMidReply())
    with pytest.raises(ModelError):
        await ask_solver(ctx)
    assert recorder.kinds() == ["turn_started", "token", "token", "turn_finished"]
    assert [t["text"] for t in recorder.tokens("solve/0")] == ["Six ", "times "]
    assert "stream broke" in (recorder.turns["solve/0"].error or "")


async def test_failing_to_publish_tokens_does_not_fail_the_turn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder(fail_tokens=True)
    backend = ScriptedBackend({"solver": [REPLY]}, latency_s=0.05)
    with caplog.at_level(logging.WARNING, logger="agents.calls"):
        turn = await ask_solver(context(backend, recorder))
    assert turn.text == REPLY
    assert recorder.kinds() == ["turn_started", "turn_finished"]
    warnings = [r for r in caplog.records if "token events" in r.getMessage()]
    assert len(warnings) == 1  # logged once, the rest of the call's pieces dropped


async def test_a_cancelled_call_leaves_no_publisher_behind() -> None:
    recorder = Recorder(token_delay_s=0.05)
    backend = ScriptedBackend({"solver": [REPLY]}, latency_s=1.0)
    call = asyncio.create_task(ask_solver(context(backend, recorder)))
    await asyncio.sleep(0.4)  # a couple of pieces out
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.01)
    leftover = [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("tokens-")]
    assert all(t.done() for t in leftover)
    assert "turn_finished" not in recorder.kinds()
