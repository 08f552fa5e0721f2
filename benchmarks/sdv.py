"""Solve-Detect-Verify against self-consistency at the same accuracy, in a scripted world.

Every answer is known. The scripted solver gets each problem right with probability
``--p-solve`` (seeded by problem and sample, so sdv's first solution is self-consistency's
first sample) and writes like a long-CoT model: a short solution that boxes its answer, then a
long re-check that opens with a hesitation cue ("Wait, let me double-check...") and boxes the
same answer again. The detector says Yes once the text so far boxes an answer; a fast check
names the first wrong paragraph with probability ``--p-fast`` (another index otherwise), a
slow check always; a refinement candidate is right with probability ``--p-refine``.

Every call takes a fixed ``--call-latency`` plus a fixed ``--token-latency`` per word it
writes (words spread over that time, as a decoder streams), so a one-token probe is cheap and
a long re-check is not; a stopped call ends at once.

sdv runs with its defaults, and again without detection (the same draws) to measure what
stopping early saved; self-consistency (every sample counted: no early stop) with
n = 1, 2, 4, ... samples until its accuracy reaches sdv's. Prints accuracy, generated tokens
and wall time per problem for each, and the ratios at the same accuracy. Problems run one at
a time by default: sdv makes several times more (small) calls than self-consistency, so on a
busy machine concurrent runs measure the store's contention more than the pattern.

Run: python benchmarks/sdv.py [--problems 30] [--token-latency 0.005] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.backends.scripted import ScriptedBackend, Slow
from agents.model import ModelRequest, ModelResponse, TextCallback
from agents.model_map import ModelRouter
from execution.runner import execute_run, submit_run
from roles import sdv as sdv_roles
from roles.checking import answers_match
from store.db import create_engine, migrate
from store.runs import Store

RECHECK_WORDS = 200


@dataclass
class World:
    """The scripted models' behaviour; ``samples`` numbers each problem's draws."""

    seed: int
    p_solve: float
    p_fast: float
    p_refine: float

    def __post_init__(self) -> None:
        self.samples: dict[tuple[int, int, str], int] = defaultdict(int)
        self.verifier_rng = random.Random(f"{self.seed}/verifier")

    def reset(self) -> None:
        self.samples.clear()
        self.verifier_rng = random.Random(f"{self.seed}/verifier")

    def draw(self, a: int, b: int, kind: str) -> random.Random:
        index = self.samples[(a, b, kind)]
        self.samples[(a, b, kind)] += 1
        return random.Random(f"{self.seed}/{a}+{b}/{kind}/{index}")

    def reply(self, request: ModelRequest) -> str:
        role = request.tags.get("role")
        messages = request.messages
        if role == "detector":
            return "Yes" if "\\boxed{" in messages[1].content else "No"
        if role == "verifier":
            return self.verify(messages[0].content)
        last = messages[-1].content
        a, b = operands(messages[1].content)
        if last == sdv_roles.CONCLUDE_INSTRUCTION:
            boxed = re.findall(r"\\boxed\{(-?\d+)\}", messages[-2].content)
            return f"The final answer is \\boxed{{{boxed[-1] if boxed else a + b}}}."
        refining = last.startswith("Your solution has an error")
        rng = self.draw(a, b, "refine" if refining else "solve")
        right = rng.random() < (self.p_refine if refining else self.p_solve)
        answer = a + b if right else a + b + rng.choice([-3, -2, -1, 1, 2, 3])
        return solution(a, b, answer)

    def verify(self, prompt: str) -> str:
        a, b = operands(prompt)
        paragraphs = re.findall(r"<paragraph_\d+>\n(.*?)\n</paragraph_\d+>", prompt, re.S)
        wrong = next(
            (
                index
                for index, text in enumerate(paragraphs)
                if any(int(n) != a + b for n in re.findall(r"= (-?\d+)", text))
            ),
            -1,
        )
        if "Answer at once" in prompt and self.verifier_rng.random() >= self.p_fast:
            others = [i for i in range(-1, len(paragraphs)) if i != wrong]
            wrong = self.verifier_rng.choice(others) if others else wrong
        return f"\\boxed{{{wrong}}}"


def operands(text: str) -> tuple[int, int]:
    match = re.search(r"What is (\d+) \+ (\d+)\?", text)
    assert match, text[:200]
    return int(match.group(1)), int(match.group(2))


def solution(a: int, b: int, answer: int) -> str:
    recheck = " ".join(["carefully"] * RECHECK_WORDS)
    return (
        f"We add {a} and {b}.\n\n{a} + {b} = {answer}, so the answer is \\boxed{{{answer}}}.\n\n"
        f"Wait, let me double-check {recheck}. Indeed {a} + {b} = {answer}. \\boxed{{{answer}}}"
    )


class PacedBackend:
    """The world's replies, each call taking ``call_s`` plus ``token_s`` per word written."""

    name = "paced-scripted"

    def __init__(self, world: World, call_s: float, token_s: float) -> None:
        self.world, self.call_s, self.token_s = world, call_s, token_s

    async def generate(
        self,
        request: ModelRequest,
        *,
        on_text: TextCallback | None = None,
        halt: asyncio.Event | None = None,
    ) -> ModelResponse:
        assert request.params.n == 1, "every call of both patterns is a single sample"
        text = self.world.reply(request)
        words = min(len(text.split()), request.params.max_tokens)
        typist = ScriptedBackend(
            {request.tags.get("role", ""): [Slow(text, self.token_s * words)]},
            latency_s=self.call_s,
        )
        return await typist.generate(request, on_text=on_text, halt=halt)

    async def close(self) -> None:
        return None


@dataclass
class Result:
    label: str
    accuracy: float
    tokens: float  # generated, per problem
    wall_s: float  # per problem
    extra: str = ""


async def run_pattern(
    store: Store,
    database_url: str,
    backend: PacedBackend,
    problems: list[tuple[int, int]],
    pattern: str,
    config: dict[str, Any],
    concurrency: int,
) -> tuple[list[bool], list[int], list[float], list[dict[str, Any]]]:
    gate = asyncio.Semaphore(concurrency)
    models = ModelRouter.single(backend)

    async def one(a: int, b: int) -> tuple[bool, int, float, dict[str, Any]]:
        async with gate:
            run_id = await submit_run(store, pattern, f"What is {a} + {b}?", config)
            started = time.perf_counter()
            outcome = await execute_run(
                run_id,
                store=store,
                models=models,
                database_url=database_url,
                stream_tokens=False,
            )
            wall = time.perf_counter() - started
        assert outcome["status"] == "succeeded", outcome["error"]
        run = await store.get_run(run_id)
        right = answers_match(outcome["answer"], str(a + b)).correct
        return right, run.completion_tokens, wall, outcome["state"].get("accounting", {})

    done = await asyncio.gather(*(one(a, b) for a, b in problems))
    rights, tokens, walls, accounts = (list(column) for column in zip(*done, strict=True))
    return rights, tokens, walls, accounts


async def main(arguments: argparse.Namespace) -> None:
    rng = random.Random(arguments.seed)
    problems = [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(arguments.problems)]
    world = World(arguments.seed, arguments.p_solve, arguments.p_fast, arguments.p_refine)
    backend = PacedBackend(world, arguments.call_latency, arguments.token_latency)
    tmp = Path(tempfile.mkdtemp(prefix="thinktank-bench-sdv-"))
    database_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    engine = create_engine(database_url)
    await migrate(engine)
    store = Store(engine)
    try:
        world.reset()
        rights, tokens, walls, accounts = await run_pattern(
            store, database_url, backend, problems, "sdv", {}, arguments.concurrency
        )
        phases: dict[str, float] = defaultdict(float)
        for account in accounts:
            for phase, count in account["tokens"].items():
                phases[phase] += count / len(accounts)
        escalated = sum(
            v["mode"] == "slow" for account in accounts for v in account["verifications"]
        )
        sdv = Result(
            "sdv",
            statistics.mean(rights),
            statistics.mean(tokens),
            statistics.mean(walls),
            f"early stops {sum(a['early_stops'] for a in accounts)}, "
            f"refinements {sum(a['refinements'] for a in accounts)}, slow escalations "
            f"{escalated}; tokens per problem by phase: "
            + ", ".join(f"{phase} {count:.1f}" for phase, count in phases.items()),
        )
        world.reset()
        rights, tokens, walls, _ = await run_pattern(
            store, database_url, backend, problems, "sdv", {"detect": False}, arguments.concurrency
        )
        undetected = Result(
            "sdv without detection",
            statistics.mean(rights),
            statistics.mean(tokens),
            statistics.mean(walls),
        )
        results = [sdv, undetected]
        matched: Result | None = None
        n = 1
        while n <= arguments.max_samples:
            world.reset()
            rights, tokens, walls, _ = await run_pattern(
                store,
                database_url,
                backend,
                problems,
                "self_consistency",
                {"samples": n, "early_stop": False},
                arguments.concurrency,
            )
            result = Result(
                f"self-consistency n={n}",
                statistics.mean(rights),
                statistics.mean(tokens),
                statistics.mean(walls),
            )
            results.append(result)
            if result.accuracy >= sdv.accuracy:
                matched = result
                break
            n *= 2
        saved = undetected.tokens - sdv.tokens
    finally:
        await store.close()
        await engine.dispose()

    print(
        f"{arguments.problems} problems; solver right with p={arguments.p_solve}, fast check "
        f"p={arguments.p_fast}, refinement p={arguments.p_refine}; each call "
        f"{arguments.call_latency * 1000:.0f} ms + {arguments.token_latency * 1000:.1f} ms/token"
    )
    print(f"{'pattern':<24} {'accuracy':>8} {'tokens/problem':>15} {'wall s/problem':>15}")
    for result in results:
        print(
            f"{result.label:<24} {result.accuracy:>8.2f} {result.tokens:>15.1f} "
            f"{result.wall_s:>15.3f}"
        )
    print(sdv.extra)
    print(
        f"detection saved {saved:.1f} tokens/problem measured against sdv without it (the "
        f"accounting's saved_by_early_stop is an upper bound: up to each stream's max_tokens)"
    )
    if matched is None:
        best = max(results[2:], key=lambda r: r.accuracy)
        print(
            f"self-consistency did not reach sdv's accuracy {sdv.accuracy:.2f} with up to "
            f"{arguments.max_samples} samples (best {best.accuracy:.2f}: {best.label})"
        )
        return
    print(
        f"at accuracy >= {sdv.accuracy:.2f} ({matched.label}): self-consistency / sdv = "
        f"{matched.tokens / sdv.tokens:.2f}x tokens, {matched.wall_s / sdv.wall_s:.2f}x wall time"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--p-solve", type=float, default=0.6)
    parser.add_argument("--p-fast", type=float, default=0.85)
    parser.add_argument("--p-refine", type=float, default=0.7)
    parser.add_argument("--call-latency", type=float, default=0.02, help="seconds per call")
    parser.add_argument("--token-latency", type=float, default=0.005, help="seconds per token")
    parser.add_argument("--max-samples", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=1, help="problems run at once")
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(main(parser.parse_args()))
