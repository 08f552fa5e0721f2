"""The embedded model's speed: one stream, and four agents at once, on the local engine.

Targets (2 cores): one stream of the default model at least 12 tokens/s, and 4 concurrent
agents at least 2.5x the tokens/s of one. Each figure is the min and median of ``--runs``
runs through the backend (chat template, tokenizing, sampling, streaming, per-token
log-probs: all of it), printed beside the floor measured in the same process: llama.cpp's
own decoding loop on the same context settings with nothing of ours around it.

Run: python benchmarks/local_engine.py [--model qwen2.5-coder-0.5b] [--tokens 128] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import llama_cpp as lc
import numpy as np

from agents.backends.local.config import LocalModelConfig
from agents.backends.local.llama_backend import LlamaCppBackend
from agents.model import ChatMessage, ModelRequest, SamplingParams

PROMPTS = [
    "Tell me a long story about a lighthouse keeper.",
    "Explain, step by step and at length, how to bake bread.",
    "Write a long letter to a friend about a journey by train.",
    "Describe in detail the life cycle of a star.",
]


def request(prompt: str, tokens: int) -> ModelRequest:
    return ModelRequest(
        messages=[ChatMessage(role="user", content=prompt)],
        params=SamplingParams(max_tokens=tokens, temperature=0.0),
    )


async def through_backend(backend: LlamaCppBackend, streams: int, tokens: int) -> float:
    """Generated tokens per second of ``streams`` concurrent calls through the backend."""
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(backend.generate(request(PROMPTS[i % 4], tokens)) for i in range(streams))
    )
    elapsed = time.perf_counter() - started
    return sum(r.completion_tokens for r in responses) / elapsed


def floor(backend: LlamaCppBackend, streams: int, tokens: int) -> float:
    """llama.cpp alone, on a context of its own with the engine's settings over the same
    loaded model: prompts read, then greedy decoding of ``streams`` sequences in one batch
    per step (tokens/s of the decoding steps)."""
    engine, model = backend._engine, backend._model
    assert engine is not None and model is not None
    params = lc.llama_context_default_params()
    params.n_ctx, params.n_seq_max = engine.context_tokens, engine.max_sequences
    params.n_batch = params.n_ubatch = engine.batch_tokens
    params.n_threads = params.n_threads_batch = model.threads
    params.kv_unified = True
    ctx = lc.llama_init_from_model(model.model, params)
    batch = lc.llama_batch_init(engine.batch_tokens, 0, 1)
    try:
        prompts = [backend.prompt_ids(request(PROMPTS[i % 4], tokens)) for i in range(streams)]
        last, pos = [], []
        for seq, prompt in enumerate(prompts):
            batch.n_tokens = len(prompt)
            for i, token in enumerate(prompt):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
                batch.seq_id[i][0], batch.logits[i] = seq, i == len(prompt) - 1
            assert lc.llama_decode(ctx, batch) == 0
            logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(model.n_vocab,))
            last.append(int(np.argmax(logits)))
            pos.append(len(prompt))
        started = time.perf_counter()
        for _ in range(tokens):
            batch.n_tokens = streams
            for seq in range(streams):
                batch.token[seq], batch.pos[seq], batch.n_seq_id[seq] = last[seq], pos[seq], 1
                batch.seq_id[seq][0], batch.logits[seq] = seq, True
            assert lc.llama_decode(ctx, batch) == 0
            for seq in range(streams):
                row = lc.llama_get_logits_ith(ctx, seq)
                logits = np.ctypeslib.as_array(row, shape=(model.n_vocab,))
                last[seq], pos[seq] = int(np.argmax(logits)), pos[seq] + 1
        return streams * tokens / (time.perf_counter() - started)
    finally:
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)


def spread(values: list[float]) -> str:
    return f"min {min(values):6.1f}  median {statistics.median(values):6.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=LocalModelConfig().model)
    parser.add_argument("--tokens", type=int, default=128, help="generated per stream")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    backend = LlamaCppBackend(LocalModelConfig(model=args.model), on_progress=print)
    await through_backend(backend, 1, 8)  # load and warm up
    results: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for streams in (1, 4):
            results.setdefault(f"backend {streams}", []).append(
                await through_backend(backend, streams, args.tokens)
            )
            results.setdefault(f"floor {streams}", []).append(floor(backend, streams, args.tokens))
    await backend.close()
    print(f"{args.model}, {args.tokens} tokens per stream, {args.runs} runs, "
          f"load average {os.getloadavg()[0]:.2f}; tokens/s:")  # fmt: skip
    for streams in (1, 4):
        print(f"  {streams} stream(s): backend {spread(results[f'backend {streams}'])}   "
              f"llama.cpp floor {spread(results[f'floor {streams}'])}")  # fmt: skip
    one = statistics.median(results["backend 1"])
    four = statistics.median(results["backend 4"])
    print(f"  4 concurrent / 1: {four / one:.2f}x (median over median; target >= 2.5x)")
    print(f"  one stream: {one:.1f} tokens/s (target >= 12)")


if __name__ == "__main__":
    asyncio.run(main())
