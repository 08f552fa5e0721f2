"""Orchestration overhead of a discussion, with durable checkpoints and every turn stored.

Against a scripted backend with a fixed latency per call, prints:
  1. overhead per model call on the critical path (wall time minus the dependent calls'
     latency, divided by their number), on SQLite and on PostgreSQL (targets 2 and 3 ms); both
     as the plain average over a whole run (which carries the run's fixed start and finish
     work) and as the marginal cost of one more call (from runs of 1 and 3 rounds), with the
     fixed per-run cost beside it. Live token events are off here (--stream-tokens turns them
     on): the scripted backend types word by word with one timer per word, which would
     measure asyncio's timers rather than the orchestration;
  2. wall time of a whole discussion / its critical path at 50 ms and 200 ms per call, on
     each database (targets at 50 ms: 1.06 on SQLite, 1.10 on PostgreSQL);
  3. the critique step with k = 1, 2, 4, 8 critics at 50 ms / one call (targets 1.10 on
     SQLite, 1.15 on PostgreSQL).
Sections 2 and 3 print min and median of --repeats runs beside the floor measured in the same
run: a bare LangGraph graph of the same shape, without and with the saver (``floor.py``).
One store serves every run, as one worker process keeps one.

Run: python benchmarks/overhead.py [--postgres postgresql+psycopg://postgres@127.0.0.1/postgres]
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

CEO = (
    "### Decision: <Continue>\n### Recruit Number: {k}\n### Direction: go\n### Maximum Tokens: 128"
)


def scripted(latency_s: float, critics: int) -> ScriptedBackend:
    return ScriptedBackend(
        {
            "ceo": [CEO.format(k=critics + 1)],
            "recruiter": ["\n".join(f"{i}. Expert {i}." for i in range(1, critics + 2))],
            "solver": ["The answer is \\boxed{4}."],
            # disagree once so every round also has a revision: a longer critical path
            "critic": ["[Disagree]"] * critics + ["[Agree]"],
            "evaluator": ["### Correctness: 0\n### Advice: again"],
        },
        latency_s=latency_s,
    )


def critical_path_calls(turns: list[Any]) -> int:
    """Dependent calls: parallel critics of one (round, inner turn) count once."""
    seen: set[str] = set()
    for turn in turns:
        key = turn.key.rsplit("/", 1)[0] if turn.node == "critique" else turn.key
        seen.add(key)
    return len(seen)


class Timeline:
    """Wall-clock times of the events of one run, for the critique-step measurement."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, str, dict[str, Any]]] = []

    def __call__(self, _run: str, event: str, payload: dict[str, Any]) -> None:
        self.marks.append((time.perf_counter(), event, payload))

    def critique_step(self) -> float:
        solved = next(t for t, e, p in self.marks if e == "turn_finished" and p["node"] == "solve")
        decided = next(t for t, e, p in self.marks if e == "decision" and p.get("by") == "critics")
        return decided - solved


STREAM_TOKENS = False


async def one_run(
    database_url: str, latency_s: float, *, critics: int = 2, rounds: int = 2, inner: int = 1
) -> tuple[float, int, Timeline]:
    timeline = Timeline()
    store = await store_for(database_url)
    store.listeners = [timeline]
    config = {
        "agents": critics + 1,
        "max_rounds": rounds,
        "max_inner_turns": inner,
        "token_budget": None,
    }
    run_id = await submit_run(store, "discussion", "What is 2+2?", config)
    started = time.perf_counter()
    outcome = await execute_run(
        run_id,
        store=store,
        models=ModelRouter.single(scripted(latency_s, critics)),
        database_url=database_url,
        stream_tokens=STREAM_TOKENS,
    )
    wall = time.perf_counter() - started
    assert outcome["status"] == "succeeded", outcome
    calls = critical_path_calls(await store.turns(run_id))
    return wall, calls, timeline


async def overhead_ms(database_url: str, latency_s: float, repeats: int) -> tuple[float, int]:
    samples = []
    calls = 0
    for _ in range(repeats):
        wall, calls, _ = await one_run(database_url, latency_s)
        samples.append((wall - calls * latency_s) / calls * 1000)
    return statistics.median(samples), calls


async def marginal_ms(database_url: str, latency_s: float, repeats: int) -> tuple[float, float]:
    """(overhead of one more dependent call, fixed overhead of a run), both in ms."""
    extra: dict[int, list[float]] = {1: [], 3: []}
    calls: dict[int, int] = {}
    for _ in range(repeats):
        for rounds in (1, 3):
            wall, calls[rounds], _ = await one_run(database_url, latency_s, rounds=rounds)
            extra[rounds].append(wall - calls[rounds] * latency_s)
    short, long = statistics.median(extra[1]), statistics.median(extra[3])
    per_call = (long - short) / (calls[3] - calls[1])
    return per_call * 1000, (short - calls[1] * per_call) * 1000


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="thinktank-bench-"))
    sqlite_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    databases = {"sqlite": sqlite_url}
    pg_name = None
    if args.postgres:
        databases["postgresql"], pg_name = create_scratch_database(args.postgres, "thinktank_bench")

    try:
        print(
            "1. orchestration overhead per call on the critical path (targets: 2 ms on SQLite,"
            f" 3 ms on PostgreSQL); load average {os.getloadavg()[0]:.2f}"
        )
        for label, url in databases.items():
            await one_run(url, 0.0)  # warm up imports, schema and connection pools
            for latency in (0.0, 0.05):
                ms, calls = await overhead_ms(url, latency, args.repeats)
                per_call, fixed = await marginal_ms(url, latency, args.repeats)
                print(
                    f"   {label:<10} at {latency * 1000:>3.0f} ms/call: {ms:6.2f} ms per call over "
                    f"a run of {calls} dependent calls; one more call {per_call:5.2f} ms, "
                    f"fixed per run {fixed:5.1f} ms (medians of {args.repeats})"
                )

        print(
            "2. whole discussion / critical path (targets at 50 ms: 1.06 on SQLite, 1.10 on"
            f" PostgreSQL), min / median of {args.repeats}"
        )
        for label, url in databases.items():
            for latency in (0.05, 0.2):
                runs = [await one_run(url, latency) for _ in range(args.repeats)]
                calls = runs[0][1]
                ratios = sorted(wall / (calls * latency) for wall, _, _ in runs)
                figures = await floor([1] * calls, latency, url, args.repeats)
                print(
                    f"   {label:<10} {latency * 1000:>3.0f} ms/call: {ratios[0]:.3f} / "
                    f"{statistics.median(ratios):.3f} ({calls} dependent calls); "
                    f"{floor_line(figures)}"
                )

        print(
            "3. critique step with k critics at 50 ms / one call (targets 1.10 on SQLite, 1.15"
            f" on PostgreSQL), min / median of {args.repeats}"
        )
        latency = 0.05
        for label, url in databases.items():
            for k in (1, 2, 4, 8):
                steps = []
                for _ in range(args.repeats):
                    _, _, timeline = await one_run(url, latency, critics=k, rounds=1, inner=0)
                    steps.append(timeline.critique_step() / latency)
                steps.sort()
                figures = await floor([k], latency, url, args.repeats)
                print(
                    f"   {label:<10} k={k}: {steps[0]:.3f} / {statistics.median(steps):.3f}; "
                    f"{floor_line(figures)}"
                )
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
        "--stream-tokens", action="store_true", help="publish live token events as well"
    )
    arguments = parser.parse_args()
    STREAM_TOKENS = arguments.stream_tokens
    asyncio.run(main(arguments))
