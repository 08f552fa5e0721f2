"""Transcripts keep the tokens a model generated and their log-probabilities, so training sees
exactly what was sampled instead of re-tokenizing the text.

The local backend's tests use the real SmolLM2 model (the session's shared ``smollm2``) with a
few tokens per call; the others script a backend that reports tokens.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from agents.backends.local.hf_backend import TransformersBackend
from agents.backends.scripted import ScriptedBackend
from agents.calls import Agent, RunContext, TokenBudget, TurnRecord, ask
from agents.model import ChatMessage, ModelBackend, ModelRequest, ModelResponse, SamplingParams
from agents.model_map import ModelRouter
from tests.agents.test_token_streaming import Recorder
from tests.conftest import RunHarness
from training.datasets import RLExample
from training.rl import completion_logprobs, encode_rl

PROMPT = [ChatMessage(role="user", content="Name three colours.")]


def request(**params: Any) -> ModelRequest:
    return ModelRequest(messages=PROMPT, params=SamplingParams(**params))


def trainer_logprobs(backend: TransformersBackend, ids: list[int]) -> torch.Tensor:
    """What ``training/rl.py`` computes for these completion tokens with the same weights: a
    fresh forward pass over prompt + completion, no cache, no sampling settings."""
    loaded = backend._load_sync()  # the loader training itself uses (training.loop.load_base)
    example = RLExample(
        prompt=PROMPT, completion="", reward=0.0, group_id="g", completion_token_ids=ids
    )
    item = encode_rl(loaded.tokenizer, example, max_length=2048)
    [values] = completion_logprobs(loaded.model, [item], loaded.pad_id, torch.device("cpu"), 1)
    return values


@pytest.mark.local_model
async def test_local_samples_carry_their_tokens_and_the_models_own_logprobs(
    smollm2: ModelBackend,
) -> None:
    assert isinstance(smollm2, TransformersBackend)
    # Hot and nucleus-cut sampling next to greedy: the stored log-probs must still be the
    # model's (temperature 1, no top_p), which is what the trainer computes.
    sampled, greedy = await asyncio.gather(
        smollm2.generate(request(n=2, temperature=1.5, top_p=0.5, max_tokens=6, seed=11)),
        smollm2.generate(request(temperature=0.0, max_tokens=6)),
    )
    tokenizer = smollm2._load_sync().tokenizer
    for completion in [*sampled.completions, *greedy.completions]:
        ids, logprobs = completion.token_ids, completion.token_logprobs
        assert ids is not None and logprobs is not None
        assert len(ids) == len(logprobs) == completion.completion_tokens > 0
        assert tokenizer.decode(ids, skip_special_tokens=True) == completion.text
        expected = trainer_logprobs(smollm2, ids)
        assert torch.allclose(torch.tensor(logprobs), expected, atol=2e-3), (logprobs, expected)


@pytest.mark.local_model
async def test_a_text_cut_at_a_stop_string_keeps_every_token_generated(
    smollm2: ModelBackend,
) -> None:
    assert isinstance(smollm2, TransformersBackend)
    response = await smollm2.generate(request(temperature=0.0, max_tokens=12, stop=["e"]))
    [completion] = response.completions
    tokenizer = smollm2._load_sync().tokenizer
    assert completion.finish_reason == "stop" and "e" not in completion.text
    ids = completion.token_ids or []
    assert len(ids) == len(completion.token_logprobs or []) == completion.completion_tokens
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded.startswith(completion.text) and "e" in decoded[len(completion.text) :]


@pytest.mark.local_model
async def test_a_halted_call_keeps_exactly_the_tokens_it_generated(smollm2: ModelBackend) -> None:
    assert isinstance(smollm2, TransformersBackend)
    halt = asyncio.Event()
    response = await smollm2.generate(
        request(temperature=0.0, max_tokens=32), on_text=lambda piece: halt.set(), halt=halt
    )
    [completion] = response.completions
    assert completion.finish_reason == "cancelled" and completion.completion_tokens < 32
    ids = completion.token_ids or []
    assert len(ids) == len(completion.token_logprobs or []) == completion.completion_tokens
    tokenizer = smollm2._load_sync().tokenizer
    assert tokenizer.decode(ids, skip_special_tokens=True) == completion.text


@pytest.mark.local_model
async def test_a_run_on_the_local_model_stores_its_turns_tokens(
    smollm2: ModelBackend, harness: RunHarness
) -> None:
    run_id, outcome = await harness.run(
        smollm2, "single", "What is 2 + 3?", max_tokens=8, temperature=0.0
    )
    assert outcome["status"] == "succeeded"
    [turn] = await harness.store.turns(run_id)
    ids, logprobs = turn.completion_token_ids, turn.completion_logprobs
    assert ids and logprobs and len(ids) == len(logprobs) == turn.completion_tokens
    assert all(isinstance(value, float) and value <= 0 for value in logprobs)
    stored = await harness.store.find_turn(run_id, turn.key)
    assert stored is not None and stored.completion_token_ids == ids
    # the live event shows the turn, not its token arrays
    [finished] = [p for event, p in harness.events if event == "turn_finished"]
    assert finished["completion"] == turn.completion
    assert "completion_token_ids" not in finished and "completion_logprobs" not in finished


# --------------------------------------------------------------------------- ask() keeps them


class TokenReporting(ScriptedBackend):
    """A scripted model that reports one token id and log-prob per word (or, given
    ``miscount``, one token too few: a backend whose ids do not add up)."""

    def __init__(self, reply: str, miscount: bool = False) -> None:
        super().__init__(default_reply=reply)
        self.miscount = miscount

    async def generate(self, request: ModelRequest, **kwargs: Any) -> ModelResponse:
        response = await super().generate(request, **kwargs)
        for completion in response.completions:
            count = completion.completion_tokens - self.miscount
            completion.token_ids = list(range(100, 100 + count))
            completion.token_logprobs = [-0.5] * count
        return response


async def ask_once(backend: ModelBackend) -> TurnRecord:
    ctx = RunContext("r", ModelRouter.single(backend), Recorder(), TokenBudget(None))
    turn = await ask(ctx, Agent("Solver", "solver", "policy"), PROMPT, key="k", node="n")
    return turn.record


async def test_a_turn_keeps_the_ids_and_logprobs_of_the_tokens_it_counted() -> None:
    record = await ask_once(TokenReporting("red green blue"))
    assert record.completion_tokens == 3
    assert record.completion_token_ids == [100, 101, 102]
    assert record.completion_logprobs == [-0.5, -0.5, -0.5]


async def test_ids_that_do_not_match_the_counted_tokens_are_not_kept() -> None:
    record = await ask_once(TokenReporting("red green blue", miscount=True))
    assert record.completion == "red green blue" and record.completion_tokens == 3
    assert record.completion_token_ids is None and record.completion_logprobs is None


async def test_a_backend_that_reports_no_tokens_stores_none() -> None:
    record = await ask_once(ScriptedBackend(default_reply="red green blue"))
    assert record.completion_token_ids is None and record.completion_logprobs is None


def test_a_vllm_reply_keeps_each_samples_token_ids_and_their_logprobs() -> None:
    from agents.backends.vllm import response_from_completion

    def logprobs(*values: float) -> dict[str, Any]:
        items = [{"token": "t", "logprob": v, "bytes": None, "top_logprobs": []} for v in values]
        return {"content": items}

    choice = {"message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}
    reply = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "qwen-7b",
        "choices": [
            {**choice, "index": 0, "token_ids": [19, 17], "logprobs": logprobs(-0.1, -0.2)},
            {**choice, "index": 1, "token_ids": [19, 17, 2], "logprobs": logprobs(-0.3)},
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
    }
    response = response_from_completion(reply, adapter=None, asked_logprobs=True)
    first, second = response.completions
    assert (first.token_ids, first.token_logprobs) == ([19, 17], [-0.1, -0.2])
    # log-probs that do not line up with the ids are not paired with them
    assert (second.token_ids, second.token_logprobs) == ([19, 17, 2], None)
