"""SPC self-play games against a scripted backend with a fixed latency per call.

Every game is stored as in production (turns, events, the game record, durable checkpoints).
Prints, for each latency:
  1. model calls per game and its dependent calls (solution attempts, the sneaky rewrite, the
     validity roll-outs as one step, the paired critic calls as one step);
  2. a game's wall time / its critical path (dependent calls x latency)  (target <= 1.5);
  3. games per minute, one game at a time and with --concurrency games at once.
Live token events are off, as in overhead.py.

Run: python benchmarks/spc.py [--games 8] [--rollouts 8] [--concurrency 4] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from scratch_db import create_scratch_database, drop_scratch_database

from agents.backends.scripted import ScriptedBackend
from agents.model import ModelRequest
from agents.model_map import ModelRouter
from execution.runner import execute_run, submit_run
from roles.spc import SpcGame
from store.db import create_engine, migrate
from store.runs import Store

PROBLEM = "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many apples are left?"
SOLUTION = "3 * 4 = 12 apples.\n\n12 - 2 = 10 apples are left.\n\nThe answer is \\boxed{10}."
SNEAKY = "### Error Type: 2. Calculation error\n### Plan: 14\n### Incorrect Step: 3 * 4 = 14."


def solver(request: ModelRequest) -> str:
    text = request.messages[-1].content
    if "Beginning of the solution" not in text:
        return SOLUTION  # a solution to play on
    return "14 - 2 = 12. \\boxed{12}" if "= 14" in text else "12 - 2 = 10. \\boxed{10}"


def critic(request: ModelRequest) -> str:
    last_step = request.messages[1].content.split("# Last Step", 1)[1]
    verdict = "Incorrect" if "= 14" in last_step else "Correct"
    return f"The product is checked. <Answer>{verdict}</Answer>"


def scripted(latency_s: float) -> ScriptedBackend:
    return ScriptedBackend(
        {"solver": [solver], "sneaky_generator": [SNEAKY], "critic": [critic]},
        latency_s=latency_s,
    )


def dependent_calls(keys: list[str]) -> int:
    """Solution attempts one after another, then one step each for the rewrite, the parallel
    roll-outs and the parallel critic calls (two when a verdict had to be asked again)."""
    stages = sum(k.startswith("solution/") for k in keys) + ("sneaky" in keys)
    stages += any(k.startswith("rollout/") for k in keys)
    stages += any(k.startswith("critic/") for k in keys)
    stages += any(k.endswith("/reask") for k in keys)
    return stages


async def play(
    store: Store, database_url: str, models: ModelRouter, config: dict
) -> tuple[float, list[str]]:
    run_id = await submit_run(store, "spc_game", PROBLEM, config)
    started = time.perf_counter()
    outcome = await execute_run(
        run_id, store=store, models=models, database_url=database_url, stream_tokens=False
    )
    wall = time.perf_counter() - started
    assert outcome["status"] == "succeeded", outcome
    [game] = await store.outcomes(run_id, SpcGame)
    assert game.result == "critic_detected", game
    return wall, [t.key for t in await store.turns(run_id)]


async def at_once(
    games: int, concurrency: int, store: Store, database_url: str, models: ModelRouter, base: dict
) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await play(store, database_url, models, {**base, "solution": SOLUTION})

    await asyncio.gather(*(one() for _ in range(games)))


async def measure(database_url: str, args: argparse.Namespace) -> None:
    engine = create_engine(database_url)
    await migrate(engine)
    store = Store(engine)
    base = {"reference_answer": "10", "rollouts": args.rollouts, "token_budget": None}
    try:
        warm = ModelRouter.single(scripted(0.0))
        await play(store, database_url, warm, {**base, "solution": SOLUTION})
        for latency in args.latencies:
            models = ModelRouter.single(scripted(latency))
            for label, config in (
                ("given solution", {**base, "solution": SOLUTION}),
                ("generated solution", base),
            ):
                walls, ratios = [], []
                for _ in range(args.games):
                    wall, keys = await play(store, database_url, models, config)
                    walls.append(wall)
                    ratios.append(wall / (dependent_calls(keys) * latency))
                print(
                    f"   {latency * 1000:>4.0f} ms/call, {label:<18}: {len(keys)} calls, "
                    f"{dependent_calls(keys)} dependent; wall/critical path "
                    f"{statistics.median(ratios):.3f} (max {max(ratios):.3f}); "
                    f"{60 / statistics.median(walls):6.1f} games/min one at a time"
                )
            started = time.perf_counter()
            await at_once(args.games, args.concurrency, store, database_url, models, base)
            elapsed = time.perf_counter() - started
            print(
                f"   {latency * 1000:>4.0f} ms/call, {args.concurrency} games at once: "
                f"{args.games * 60 / elapsed:6.1f} games/min"
            )
    finally:
        await store.close()
        await engine.dispose()


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="thinktank-bench-"))
    databases = {"sqlite": f"sqlite+aiosqlite:///{tmp / 'bench.db'}"}
    pg_name = None
    if args.postgres:
        databases["postgresql"], pg_name = create_scratch_database(args.postgres, "thinktank_spc")
    print(
        f"SPC games, N = {args.rollouts} roll-outs per prefix, {args.games} games per figure "
        "(target: wall / critical path <= 1.5)"
    )
    try:
        for label, url in databases.items():
            print(f" {label}")
            await measure(url, args)
    finally:
        if pg_name:
            drop_scratch_database(args.postgres, pg_name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--games", type=int, default=8, help="games per measurement")
    parser.add_argument("--rollouts", type=int, default=8, help="N, completions per prefix")
    parser.add_argument("--concurrency", type=int, default=4, help="games at once")
    parser.add_argument(
        "--latencies",
        type=lambda s: [float(x) / 1000 for x in s.split(",")],
        default=[0.05, 0.2, 1.0],
        help="milliseconds per call, comma-separated",
    )
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="admin URL of a PostgreSQL server to measure on ('' to skip)",
    )
    asyncio.run(main(parser.parse_args()))
