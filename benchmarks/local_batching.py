"""How much batching buys the local backend: 8 requests served one at a time vs concurrently.

Both runs use the same greedy requests (64 tokens each), so they generate the same amount of
text; concurrently issued requests are merged into one ``model.generate`` call by the backend.
Run from the repository root::

    python benchmarks/local_batching.py [--requests 8] [--max-tokens 64] [--threads N]

The model is loaded (and warmed up) before timing; the first run ever also builds the
dequantized-model cache, which takes ~30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.backends.local.config import LocalModelConfig
from agents.backends.local.hf_backend import TransformersBackend as LocalBackend
from agents.backends.local.hf_weights import default_threads
from agents.model import ChatMessage, ModelRequest, ModelResponse, SamplingParams

TOPICS = [
    "the history of the printing press",
    "how volcanoes form",
    "why the sky is blue",
    "the rules of chess",
    "how bees make honey",
    "the water cycle",
    "how a bicycle stays upright",
    "the life of a star",
    "how bread rises",
    "the invention of the telephone",
    "how tides work",
    "the structure of a cell",
]


def make_requests(count: int, max_tokens: int) -> list[ModelRequest]:
    """Distinct long-answer prompts, greedy, so every request runs close to max_tokens."""
    return [
        ModelRequest(
            messages=[
                ChatMessage(
                    role="user",
                    content=f"Write a detailed essay about {TOPICS[i % len(TOPICS)]}.",
                )
            ],
            params=SamplingParams(max_tokens=max_tokens, temperature=0.0),
        )
        for i in range(count)
    ]


def tokens_of(responses: list[ModelResponse]) -> int:
    return sum(response.completion_tokens for response in responses)


async def one_at_a_time(backend: LocalBackend, requests: list[ModelRequest]) -> tuple[int, float]:
    started = time.perf_counter()
    responses = [await backend.generate(request) for request in requests]
    return tokens_of(responses), time.perf_counter() - started


async def concurrently(backend: LocalBackend, requests: list[ModelRequest]) -> tuple[int, float]:
    started = time.perf_counter()
    responses = await asyncio.gather(*(backend.generate(request) for request in requests))
    return tokens_of(list(responses)), time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    config = LocalModelConfig(
        model="smollm2-135m",
        engine="transformers",
        max_batch_size=args.requests,
        threads=args.threads,
    )
    backend = LocalBackend(config, on_progress=lambda message: print(f"  [{message}]"))
    requests = make_requests(args.requests, args.max_tokens)
    try:
        started = time.perf_counter()
        await backend.generate(make_requests(1, 4)[0])  # load + warm up
        print(
            f"load + warm-up: {time.perf_counter() - started:.1f} s "
            f"(torch threads: {config.threads or default_threads()})"
        )

        calls_before = backend.stats.generate_calls
        seq_tokens, seq_s = await one_at_a_time(backend, requests)
        seq_calls = backend.stats.generate_calls - calls_before

        calls_before = backend.stats.generate_calls
        bat_tokens, bat_s = await concurrently(backend, requests)
        bat_calls = backend.stats.generate_calls - calls_before
    finally:
        await backend.close()

    seq_rate, bat_rate = seq_tokens / seq_s, bat_tokens / bat_s
    print(f"{args.requests} requests x {args.max_tokens} tokens, greedy")
    print(
        f"one at a time: {seq_tokens:4d} tokens in {seq_s:6.2f} s = {seq_rate:6.1f} tokens/s "
        f"({seq_calls} generate calls)"
    )
    print(
        f"concurrently:  {bat_tokens:4d} tokens in {bat_s:6.2f} s = {bat_rate:6.1f} tokens/s "
        f"({bat_calls} generate calls)"
    )
    print(f"speed-up from batching: {bat_rate / seq_rate:.2f}x")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
