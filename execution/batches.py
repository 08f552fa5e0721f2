"""Many runs at once, at most ``concurrency`` executing: the one way a batch is played.

Self-play games (``thinktank game``, a campaign's round) and evaluations all execute a list
of stored runs side by side on one set of models, so their calls share the local engine's
decoding steps; this bounds how many run at once and hands each outcome on as it ends.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from agents.model_map import ModelRouter
from execution.runner import RunOutcome, execute_run
from store.runs import Store

T = TypeVar("T")
R = TypeVar("R")


async def bounded(
    items: Sequence[T], work: Callable[[T], Awaitable[R]], *, concurrency: int
) -> list[R]:
    """``work(item)`` for every item, at most ``concurrency`` at once; results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> R:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def execute_runs(
    run_ids: Sequence[str],
    *,
    store: Store,
    models: ModelRouter,
    database_url: str,
    concurrency: int,
    on_end: Callable[[str, RunOutcome], Awaitable[None] | None] | None = None,
) -> list[RunOutcome]:
    """Execute (or resume) the stored runs, at most ``concurrency`` at once; their outcomes in
    the order of ``run_ids``. ``on_end`` (a function or a coroutine function) hears of each
    run as it ends."""

    async def play(run_id: str) -> RunOutcome:
        outcome = await execute_run(
            run_id, store=store, models=models, database_url=database_url, stream_tokens=False
        )
        if on_end is not None:
            heard = on_end(run_id, outcome)
            if inspect.isawaitable(heard):
                await heard
        return outcome

    return await bounded(run_ids, play, concurrency=concurrency)
