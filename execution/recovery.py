"""Runs that nobody is executing any more are enqueued again.

A worker that dies stops renewing its runs' leases; a broker that restarts without
persistence forgets the runs waiting in it. Both leave runs unfinished in the store, which
is the source of truth: every worker (and the embedded API process) looks for them every
``reap_interval_s`` and enqueues them again. They resume from their checkpoints; a run
enqueued twice is executed once, because executing takes its lease first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from execution.executor import Executor
from store.runs import Store

log = logging.getLogger(__name__)


async def requeue_stale_runs(store: Store, executor: Executor, *, requeue_after_s: float) -> int:
    """One pass: enqueue every run that is due again; returns how many."""
    run_ids = await store.requeue_due(requeue_after_s)
    for run_id in run_ids:
        log.warning("run %s was left unfinished; enqueuing it again", run_id)
        await executor.enqueue(run_id)
    return len(run_ids)


async def repeat_forever(
    one_pass: Callable[[], Awaitable[object]], *, interval_s: float, what: str
) -> None:
    """``one_pass()`` every ``interval_s`` until cancelled. A pass that fails (the database
    or the broker is away) is logged and tried again next time."""
    while True:
        try:
            await one_pass()
        except Exception as exc:
            log.warning("could not look for %s: %s", what, exc)
        await asyncio.sleep(interval_s)


async def requeue_forever(
    store: Store, executor: Executor, *, interval_s: float, requeue_after_s: float
) -> None:
    """Passes of :func:`requeue_stale_runs` until cancelled."""
    await repeat_forever(
        lambda: requeue_stale_runs(store, executor, requeue_after_s=requeue_after_s),
        interval_s=interval_s,
        what="unfinished runs",
    )
