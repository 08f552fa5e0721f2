"""What Ray Serve costs: concurrent discussions on the local model called in-process versus the
same model behind a Ray Serve deployment (through a DeploymentHandle).

For 1, 4 and 16 concurrent discussions, each mode reports aggregate generated tokens per
second and p50/p99 turn latency (a turn's model call as the run recorded it: queueing,
batching and, for Serve, the handle round trip), and the script prints Serve/in-process
ratios. Runs go through the real store (a scratch SQLite file) as any run does. The two modes
never run at once, so they do not share the CPUs.

    python benchmarks/serving.py [--concurrency 1 4 16] [--threads 1] [--engine local|scripted]
    python benchmarks/serving.py --vllm-model /path/to/weights   # on a GPU machine with vLLM

``--engine scripted`` (fixed latency, no model) isolates the plumbing's own cost. With
``--vllm-model`` the same discussions also run on vLLM through Ray Serve LLM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.backends.local.config import LocalModelConfig
from agents.backends.scripted import ScriptedModelConfig
from agents.backends.serving_config import DeploymentSpec, RayModelConfig, VLLMModelConfig
from agents.model import ChatMessage, ModelBackend, ModelRequest, SamplingParams
from agents.model_map import ModelRouter
from execution.runner import execute_run, submit_run
from store.db import create_engine, migrate
from store.runs import Store

PROBLEMS = [f"What is {a} times {b}?" for a, b in [(6, 7), (12, 13), (9, 8), (15, 4)]] + [
    f"A shop sells {n} apples a day. How many in {d} days?" for n, d in [(30, 7), (12, 5)]
]
# Small budgets: 16 discussions on a 135M model on two cores must finish in minutes.
DISCUSSION = {
    "agents": 2,
    "max_rounds": 1,
    "token_menu": [48],
    "ceo_max_tokens": 32,
    "recruiter_max_tokens": 32,
    "evaluator_max_tokens": 32,
    "token_budget": 2000,
}
SCRIPT = {
    "ceo": [
        "### Decision: <Stop>\n### Recruit Number: 2\n### Direction: check\n### Maximum Tokens: 48"
    ],
    "recruiter": ["1. A mathematician.\n2. A teacher."],
    "solver": [" ".join(["step"] * 40) + " \\boxed{42}"],
    "critic": [" ".join(["fine"] * 40) + " [Agree]"],
    "evaluator": ["### Correctness: 1\n### Advice: none\n### Recruiting Suggestion: none"],
}


@dataclass
class Result:
    mode: str
    concurrency: int
    wall_s: float
    tokens: int
    latencies: list[float]
    failed: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_discussions(backend: ModelBackend, concurrency: int, mode: str) -> Result:
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{Path(scratch) / 'bench.db'}"
        engine = create_engine(url)
        await migrate(engine)
        store = Store(engine)
        models = ModelRouter.single(backend)
        run_ids = [
            await submit_run(store, "discussion", PROBLEMS[i % len(PROBLEMS)], DISCUSSION)
            for i in range(concurrency)
        ]
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(
                execute_run(run_id, store=store, models=models, database_url=url)
                for run_id in run_ids
            )
        )
        wall = time.perf_counter() - started
        turns = [turn for run_id in run_ids for turn in await store.turns(run_id)]
        await store.close()
        await engine.dispose()
    failed = sum(outcome["status"] != "succeeded" for outcome in outcomes)
    return Result(
        mode,
        concurrency,
        wall,
        sum(turn.completion_tokens for turn in turns),
        [turn.latency_ms / 1000 for turn in turns],
        failed,
    )


def engine_spec(args: argparse.Namespace) -> LocalModelConfig | ScriptedModelConfig:
    if args.engine == "scripted":
        return ScriptedModelConfig(replies=SCRIPT, latency_s=args.scripted_latency)
    return LocalModelConfig(threads=args.threads, max_batch_size=args.batch)


def direct_backend(spec: LocalModelConfig | ScriptedModelConfig) -> ModelBackend:
    from services.serving.deployments import build_engine

    return build_engine(RayModelConfig(served_name="local", engine=spec))


async def warm(backend: ModelBackend) -> None:
    """Load the model (and, through Serve, start the replica) before timing."""
    request = ModelRequest(
        messages=[ChatMessage(role="user", content="Hi")], params=SamplingParams(max_tokens=4)
    )
    await backend.generate(request)


async def measure(backend: ModelBackend, mode: str, levels: list[int]) -> list[Result]:
    await warm(backend)
    results = []
    for concurrency in levels:
        result = await run_discussions(backend, concurrency, mode)
        print_result(result)
        results.append(result)
    return results


def print_result(r: Result) -> None:
    print(
        f"{r.mode:<10} {r.concurrency:>3} discussions  {r.tokens:>6} tokens in {r.wall_s:7.1f} s"
        f"  {r.tokens_per_s:7.1f} tok/s  turn p50 {r.pct(0.5) * 1000:7.0f} ms"
        f"  p99 {r.pct(0.99) * 1000:7.0f} ms  ({len(r.latencies)} turns, {r.failed} failed)",
        flush=True,
    )


def start_serve() -> None:
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 0})


def deploy(app: Any, name: str) -> None:
    from ray import serve

    serve.run(app, name=name, route_prefix=None)


async def main(args: argparse.Namespace) -> None:
    spec = engine_spec(args)
    levels = args.concurrency
    print(f"engine: {args.engine}; discussions: {DISCUSSION}")

    direct = direct_backend(spec)
    try:
        in_process = await measure(direct, "in-process", levels)
    finally:
        await direct.close()

    start_serve()
    from agents.backends.ray_handle import RayHandleBackend
    from services.serving.deployments import ModelIngress, ModelServer

    served = RayModelConfig(served_name="local", engine=spec, deployment=DeploymentSpec(num_cpus=1))
    server = ModelServer.options(name=served.deployment_name(), **served.deployment.serve_options())
    deploy(ModelIngress.bind({"local": server.bind(served)}), served.app_name)
    on_serve = await measure(RayHandleBackend(served), "ray-serve", levels)

    print("\nRay Serve / in-process")
    for a, b in zip(on_serve, in_process, strict=True):
        print(
            f"  {a.concurrency:>3} discussions: tokens/s x{a.tokens_per_s / b.tokens_per_s:.2f}"
            f"  p50 x{a.pct(0.5) / b.pct(0.5):.2f}  p99 x{a.pct(0.99) / b.pct(0.99):.2f}"
        )
    if args.vllm_model:
        from agents.backends.vllm import VLLMBackend
        from services.serving.llm import build_llm_app

        llm = VLLMModelConfig(model_id="policy", model_source=args.vllm_model)
        deploy(build_llm_app([llm]), llm.app_name)
        await measure(VLLMBackend(llm), "vllm", levels)
    overhead = statistics.mean(r.pct(0.5) for r in on_serve) - statistics.mean(
        r.pct(0.5) for r in in_process
    )
    print(f"\nmean p50 difference (serve - in-process): {overhead * 1000:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--engine", choices=["local", "scripted"], default="local")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the model")
    parser.add_argument("--batch", type=int, default=16, help="local backend max_batch_size")
    parser.add_argument("--scripted-latency", type=float, default=0.1)
    parser.add_argument("--vllm-model", help="weights folder: also run on vLLM (GPU)")
    asyncio.run(main(parser.parse_args()))
