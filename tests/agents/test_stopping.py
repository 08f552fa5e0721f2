"""Stopping a model call mid-way: the backends' ``halt`` and :func:`ask`'s ``TextWatch``.

A stopped call must end soon, keep the text generated so far, say ``"cancelled"`` and count
every token it generated, so a run's token budget stays exact. The local backend is tested
with the real SmolLM2 model: a halted request leaves its batch at once, and a detector-sized
probe is answered between two decoding steps of a batch that is still generating.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agents.backends.openai_compat import OpenAIBackend, OpenAIModelConfig
from agents.backends.scripted import Logprobs, ScriptedBackend, Slow, word_pieces
from agents.calls import Agent, RunContext, TextWatch, TokenBudget, ask
from agents.model import ChatMessage, Completion, ModelBackend, ModelRequest, SamplingParams
from agents.model_map import ModelRouter
from execution.runner import submit_run
from store.runs import Store

LONG = " ".join(f"word{i}" for i in range(20))
SOLVER = Agent(name="Solver", role="solver", model="policy")


def request(content: str = "Solve it.", role: str = "solver", **params: Any) -> ModelRequest:
    return ModelRequest(
        messages=[ChatMessage(role="user", content=content)],
        params=SamplingParams(**params),
        tags={"role": role},
    )


def stop_after(pieces: list[str], count: int, halt: asyncio.Event):
    """An ``on_text`` that keeps the pieces and sets ``halt`` once ``count`` have come."""

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == count:
            halt.set()

    return on_text


# -- the scripted backend --------------------------------------------------------------------


async def test_scripted_halt_returns_the_words_typed_so_far_at_once() -> None:
    backend = ScriptedBackend({"solver": [LONG]}, latency_s=2.0)
    halt = asyncio.Event()
    pieces: list[str] = []
    started = time.perf_counter()

    response = await backend.generate(request(), on_text=stop_after(pieces, 5, halt), halt=halt)

    [completion] = response.completions
    assert time.perf_counter() - started < 1.0  # 5 of 20 pieces are due after 0.5 s
    assert completion.finish_reason == "cancelled"
    assert completion.text == "".join(pieces) == "".join(word_pieces(LONG)[:5])
    assert completion.completion_tokens == 5


async def test_scripted_halt_without_live_text_cuts_every_sample() -> None:
    backend = ScriptedBackend({"solver": [LONG, LONG + " more words here"]}, latency_s=1.0)
    halt = asyncio.Event()
    asyncio.get_running_loop().call_later(0.28, halt.set)

    response = await backend.generate(request(n=2), halt=halt)

    first, second = response.completions
    assert first.finish_reason == second.finish_reason == "cancelled"
    assert 4 <= first.completion_tokens <= 7  # about 0.28 of 20 words
    assert LONG.startswith(first.text) and (LONG + " more words here").startswith(second.text)
    assert first.completion_tokens == len(first.text.split())


async def test_scripted_halt_after_the_reply_changes_nothing() -> None:
    backend = ScriptedBackend({"solver": ["short reply"]}, latency_s=0.05)
    halt = asyncio.Event()
    response = await backend.generate(request(), halt=halt)
    halt.set()
    assert response.completions[0].finish_reason == "stop"
    assert response.completions[0].text == "short reply"


async def test_scripted_logprobs_come_only_when_asked_and_scripted() -> None:
    backend = ScriptedBackend(
        {"detector": [Logprobs("Yes", {"Yes": -0.2, "No": -1.8, "Maybe": -4.0})], "solver": ["x"]}
    )
    [asked] = (await backend.generate(request(role="detector", top_logprobs=2))).completions
    [unasked] = (await backend.generate(request(role="detector"))).completions
    [plain] = (await backend.generate(request(top_logprobs=2))).completions

    assert asked.text == "Yes" and asked.logprobs is not None
    assert asked.logprobs[0].logprob == -0.2
    assert asked.logprobs[0].top == {"Yes": -0.2, "No": -1.8}  # the best two
    assert unasked.logprobs is None and plain.logprobs is None


# -- ask() with a TextWatch -------------------------------------------------------------------


async def test_ask_records_a_stopped_turn_and_its_tokens(store: Store) -> None:
    run_id = await submit_run(store, "single", "count to twenty", {})
    backend = ScriptedBackend({"solver": [Slow(LONG, 2.0)]})
    budget = TokenBudget(limit=100)
    ctx = RunContext(
        run_id=run_id, models=ModelRouter.single(backend), recorder=store, budget=budget
    )
    seen: list[str] = []
    watch = TextWatch()

    def on_text(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 3:
            watch.stop()

    watch.on_text = on_text
    messages = [ChatMessage(role="user", content="count")]
    turn = await ask(
        ctx,
        SOLVER,
        messages,
        key="solve",
        node="solve",
        params=SamplingParams(max_tokens=64),
        watch=watch,
    )

    assert turn.text == "".join(seen) == "word0 word1 word2 "
    assert turn.record.finish_reason == "cancelled"
    assert turn.record.completion_tokens == 3
    assert (budget.spent, budget.reserved) == (3, 0)  # the 64 reserved were given back
    stored = await store.find_turn(run_id, "solve")
    assert stored is not None
    assert (stored.completion, stored.finish_reason, stored.completion_tokens) == (
        "word0 word1 word2 ",
        "cancelled",
        3,
    )

    # On resume the stored turn is replayed: a parser sees it as it was stopped.
    ctx.resuming = True
    seen_on_replay: list[Completion] = []
    replayed = await ask(
        ctx,
        SOLVER,
        messages,
        key="solve",
        node="solve",
        parse_completion=lambda c: seen_on_replay.append(c),
    )
    assert replayed.text == turn.text and len(backend.requests) == 1
    assert seen_on_replay[0].finish_reason == "cancelled"
    assert seen_on_replay[0].logprobs is None


async def test_ask_gives_parse_completion_the_logprobs(store: Store) -> None:
    run_id = await submit_run(store, "single", "is it done?", {})
    backend = ScriptedBackend({"detector": [Logprobs("No", {"Yes": -1.5, "No": -0.3})]})
    ctx = RunContext(
        run_id=run_id,
        models=ModelRouter.single(backend),
        recorder=store,
        budget=TokenBudget(limit=None),
    )
    detector = Agent("Detector", "detector", "policy")
    turn = await ask(
        ctx,
        detector,
        [ChatMessage(role="user", content="done?")],
        key="detect",
        node="detect",
        params=SamplingParams(max_tokens=1, top_logprobs=5),
        parse_completion=lambda c: c.logprobs[0].top if c.logprobs else None,
    )
    assert turn.parsed == {"Yes": -1.5, "No": -0.3}


# -- the local backend (real model) -----------------------------------------------------------

STORY = "Write a long story about a dragon who learns to bake bread."


@pytest.mark.local_model
async def test_local_halt_ends_the_rows_and_returns_before_the_batch(
    smollm2: ModelBackend,
) -> None:
    """Two long requests share a batch; halting one returns it at once with what it made,
    while its neighbour runs on to its own end unchanged."""
    greedy = {"max_tokens": 48, "temperature": 0.0}
    neighbour_alone = (await smollm2.generate(request(STORY, **greedy))).completions[0]
    assert neighbour_alone.completion_tokens == 48, "the story must outlast the halt"
    halt = asyncio.Event()
    pieces: list[str] = []
    finished_at: dict[str, float] = {}

    async def timed(name: str, call: Any) -> Any:
        response = await call
        finished_at[name] = time.perf_counter()
        return response

    halted, neighbour = await asyncio.gather(
        timed(
            "halted",
            smollm2.generate(
                request(STORY, **greedy), on_text=stop_after(pieces, 4, halt), halt=halt
            ),
        ),
        timed("neighbour", smollm2.generate(request(STORY, **greedy))),
    )

    [stopped] = halted.completions
    assert stopped.finish_reason == "cancelled"
    assert stopped.text == "".join(pieces)  # every piece delivered, nothing more
    # the tokens that made those pieces, plus the few made before the halt took effect
    assert len(pieces) <= stopped.completion_tokens < 24
    assert neighbour_alone.text.startswith(stopped.text)
    assert finished_at["halted"] < finished_at["neighbour"]
    assert neighbour.completions[0].text == neighbour_alone.text


@pytest.mark.local_model
async def test_a_probe_is_answered_between_steps_of_a_running_batch(
    smollm2: ModelBackend,
) -> None:
    """A one-token greedy request sent while a long generation streams is served mid-batch,
    and neither its answer nor the long generation's text changes."""
    long = request(STORY, max_tokens=48, temperature=0.0)
    probe = request("Is the sky blue? Answer Yes or No.", max_tokens=1, temperature=0.0)
    probe_alone = (await smollm2.generate(probe)).completions[0]
    long_alone = (await smollm2.generate(long)).completions[0]
    interjections = smollm2.stats.interjections  # type: ignore[attr-defined]
    streamed = asyncio.Event()
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 3:
            streamed.set()

    running = asyncio.create_task(smollm2.generate(long, on_text=on_text))
    await streamed.wait()
    answer = (await smollm2.generate(probe)).completions[0]
    pieces_when_answered = len(pieces)
    story = (await running).completions[0]

    assert smollm2.stats.interjections == interjections + 1  # type: ignore[attr-defined]
    assert pieces_when_answered < len(pieces)  # the story went on after the probe's answer
    assert answer.text == probe_alone.text and answer.completion_tokens == 1
    assert story.text == long_alone.text and story.completion_tokens == 48


# -- the OpenAI-compatible backend (llama.cpp's server) ----------------------------------------


async def test_openai_halt_closes_the_stream_and_counts_what_came(llama_server: str) -> None:
    """Halting ends the stream at the next chunk: the text so far, "cancelled", one token per
    chunk received; the connection slot is free for the next call."""
    backend = OpenAIBackend(
        OpenAIModelConfig(base_url=llama_server, model="smollm2", timeout_s=60, max_concurrency=1)
    )
    try:
        halt = asyncio.Event()
        pieces: list[str] = []
        response = await backend.generate(
            request(STORY, max_tokens=64, temperature=0.0),
            on_text=stop_after(pieces, 4, halt),
            halt=halt,
        )
        [stopped] = response.completions
        assert stopped.finish_reason == "cancelled"
        assert stopped.text == "".join(pieces) and len(pieces) == 4
        assert stopped.completion_tokens == 4
        assert backend.streams_usage is None  # a stopped stream says nothing about usage

        after = await backend.generate(request(STORY, max_tokens=8, temperature=0.0))
        assert after.completions[0].text.startswith(stopped.text)
    finally:
        await backend.close()
