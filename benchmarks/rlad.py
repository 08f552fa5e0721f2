"""Wall time of an RLAD run with K=4 abstractions x M=4 solutions against a fixed latency.

The 4 abstraction samples run at once, then the 16 solution calls at once, so a whole run is
two dependent model calls deep (the abstractions, then the solutions); the target is a run
within 1.15x (SQLite) or 1.25x (PostgreSQL) of two calls' latency at 50 ms, with every turn,
event and record stored as it happens. Against a scripted backend with a fixed latency per
call, prints for each database and latency: min and median of wall / (2 x latency), and the
same with a reference answer (the baseline's 4 extra solutions in the same fan-out, and
rewards scored and stored); beside it, how many calls overlapped (16, or 20 with the
baseline, when the fan-out is fully parallel), and the floor: a bare LangGraph graph of the
same shape, without and with the checkpointer (``floor.py``). One store serves every run,
as one worker process keeps one.

Run: python benchmarks/rlad.py [--postgres postgresql+psycopg://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from floor import floor, floor_line
from scratch_db import close_stores, create_scratch_database, drop_scratch_database, store_for

from agents.backends.scripted import ScriptedBackend
from agents.model_map import ModelRouter
from execution.runner import execute_run, submit_run

K, M = 4, 4
ABSTRACTION = "<abstraction>Hint: split the product into easier products.</abstraction>"


def scripted(latency_s: float) -> ScriptedBackend:
    return ScriptedBackend(
        {
            "abstraction_player": [ABSTRACTION],
            "solution_player": ["6 times 7 is 42, so \\boxed{42}"],
        },
        latency_s=latency_s,
    )


async def one_run(database_url: str, latency_s: float, config: dict[str, Any]) -> tuple[float, int]:
    """Wall seconds of one run, from execute to finish (the submit is the client's time), and
    the most model calls that were in flight at once."""
    store = await store_for(database_url)
    run_id = await submit_run(
        store,
        "rlad",
        "What is 6 times 7?",
        {"abstractions": K, "solutions_per_abstraction": M, "token_budget": None, **config},
    )
    backend = scripted(latency_s)
    started = time.perf_counter()
    outcome = await execute_run(
        run_id,
        store=store,
        models=ModelRouter.single(backend),
        database_url=database_url,
        stream_tokens=False,
    )
    wall = time.perf_counter() - started
    assert outcome["status"] == "succeeded" and outcome["answer"] == "42", outcome
    return wall, backend.max_in_flight


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="thinktank-bench-"))
    databases = {"sqlite": f"sqlite+aiosqlite:///{tmp / 'bench.db'}"}
    pg_name = None
    if args.postgres:
        databases["postgresql"], pg_name = create_scratch_database(args.postgres, "thinktank_bench")
    variants = {
        f"K={K} M={M}": {},
        f"K={K} M={M} + baseline, rewards": {"reference_answer": "42"},
    }
    try:
        print(
            "RLAD run wall time / two dependent calls (targets <= 1.15 on SQLite, <= 1.25 on"
            f" PostgreSQL at 50 ms), min / median of {args.repeats}; load average"
            f" {os.getloadavg()[0]:.2f}"
        )
        for label, url in databases.items():
            await one_run(url, 0.0, {})  # warm up imports, schema and connection pools
            for latency in args.latencies:
                for name, config in variants.items():
                    runs = [await one_run(url, latency, config) for _ in range(args.repeats)]
                    walls = [w for w, _ in runs]
                    wall = statistics.median(walls)
                    print(
                        f"   {label:<10} {latency * 1000:>4.0f} ms/call  {name:<28} "
                        f"{min(walls) / (2 * latency):.3f} / {wall / (2 * latency):.3f}  "
                        f"({wall * 1000:.0f} ms; overhead {(wall - 2 * latency) * 1000:.0f} ms;"
                        f" at most {min(f for _, f in runs)} calls in flight)"
                    )
                figures = await floor([K, K * M], latency, url, args.repeats)
                print(f"   {label:<10} {latency * 1000:>4.0f} ms/call  {floor_line(figures)}")
    finally:
        await close_stores()
        if pg_name:
            drop_scratch_database(args.postgres, pg_name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="admin URL of a PostgreSQL server to measure on ('' to skip)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement")
    parser.add_argument(
        "--latencies",
        type=float,
        nargs="+",
        default=[0.05, 0.2],
        help="seconds every model call takes",
    )
    asyncio.run(main(parser.parse_args()))
