"""Group commit: the writes that arrive while one transaction commits share the next one.

A fan-in of 16 critics wrote its 16 turns in 16 transactions: 16 commits, and on PostgreSQL 16
pooled connections at once, so past the pool's size new ones were opened (15 ms each). Through
one writer the turns that finish together go in one transaction on one connection, and a lone
write costs what it cost before. Each caller still returns only once its write is committed,
so a turn is on disk before the step that made it is checkpointed.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from store.db import is_transient

Work = Callable[[Connection], Any]
Transaction = Callable[[list[Work]], Awaitable[list[Any]]]


@dataclass
class _Queue:
    """One event loop's waiting writes and its writer task: futures belong to their loop."""

    writes: list[tuple[Work, asyncio.Future[Any]]] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None


class GroupCommit:
    """Queues writes and runs them, in arrival order, batched into transactions.

    ``transaction(works)`` runs the works in one committed transaction and returns their
    results. A batch that fails is run again one write per transaction, so a write's own
    error (an idempotency key taken, say) reaches only its caller and the others commit. An
    outage that outlasted ``transaction``'s own retries fails the whole batch at once: run one
    by one, each write would wait the retries out again.
    """

    def __init__(self, transaction: Transaction, *, max_batch: int = 64) -> None:
        self._transaction = transaction
        self._max_batch = max_batch
        # A store outlives an event loop in the CLI and in tests, and a worker's loop thread
        # shares it with the loop that made it: each loop batches its own writes.
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = (
            weakref.WeakKeyDictionary()
        )

    async def write(self, work: Work) -> Any:
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())
        future: asyncio.Future[Any] = loop.create_future()
        queue.writes.append((work, future))
        if queue.flusher is None or queue.flusher.done():
            # it starts on the loop's next turn, so the writes of tasks that finish together
            # (a fan-in's branches) are all queued by then and share its first transaction
            queue.flusher = loop.create_task(self._flush(queue))
        # A caller cancelled while it waits leaves its write to be committed all the same: a
        # turn whose model call was paid for is worth keeping, and a resumed run replays it.
        return await future

    async def _flush(self, queue: _Queue) -> None:
        try:
            while queue.writes:
                batch = queue.writes[: self._max_batch]
                del queue.writes[: self._max_batch]
                await self._commit(batch)
        except BaseException as exc:
            # the loop is shutting down under us: nobody may wait forever on a write
            for _, future in queue.writes:
                _settle(future, error=exc)
            queue.writes.clear()
            raise

    async def _commit(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> None:
        try:
            results = await self._transaction([work for work, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or is_transient(exc):
                for _, future in batch:
                    _settle(future, error=exc)
                return
            for work, future in batch:
                try:
                    (result,) = await self._transaction([work])
                except Exception as alone:
                    _settle(future, error=alone)
                else:
                    _settle(future, result=result)
            return
        except BaseException as exc:
            for _, future in batch:
                _settle(future, error=exc)
            raise
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
