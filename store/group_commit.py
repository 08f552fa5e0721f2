"""Group commit: the writes that arrive while one transaction commits share the next one.

A fan-in of 16 critics wrote its 16 turns in 16 transactions: 16 commits, and on PostgreSQL 16
pooled connections at once, so past the pool's size new ones were opened (15 ms each). Through
one writer the turns that finish together go in one transaction on one connection, and a lone
write costs what it cost before. Each caller still returns only once its write is committed,
so a turn is on disk before the step that made it is checkpointed.

A caller that need not wait (a run's recorder, see :mod:`store.run_recorder`) submits its
writes in a *chain*: a write of a chain commits only if every earlier write of the chain did,
so what is stored of a chain is always a prefix of it, however a batch fails.
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
class _Write:
    work: Work
    future: asyncio.Future[Any]
    chain: str | None


@dataclass
class _Queue:
    """One event loop's waiting writes and its writer task: futures belong to their loop."""

    writes: list[_Write] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None
    # chains whose write failed, and how: their later writes fail the same way
    broken: dict[str, BaseException] = field(default_factory=dict)


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
        # A caller cancelled while it waits leaves its write to be committed all the same: a
        # turn whose model call was paid for is worth keeping, and a resumed run replays it.
        return await self.submit(work)

    def submit(self, work: Work, *, chain: str | None = None) -> asyncio.Future[Any]:
        """Queue ``work`` now, behind every write queued before it; the future settles once
        it is committed (or has failed). After a write of ``chain`` fails, the chain's later
        writes fail with the same error, uncommitted, until :meth:`mend` is called."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())
        future: asyncio.Future[Any] = loop.create_future()
        queue.writes.append(_Write(work, future, chain))
        if queue.flusher is None or queue.flusher.done():
            # it starts on the loop's next turn, so the writes of tasks that finish together
            # (a fan-in's branches) are all queued by then and share its first transaction
            queue.flusher = loop.create_task(self._flush(queue))
        return future

    def mend(self, chain: str) -> None:
        """Let ``chain``'s writes commit again (its owner has seen the failure)."""
        queue = self._queues.get(asyncio.get_running_loop())
        if queue is not None:
            queue.broken.pop(chain, None)

    async def _flush(self, queue: _Queue) -> None:
        try:
            while queue.writes:
                batch = queue.writes[: self._max_batch]
                del queue.writes[: self._max_batch]
                await self._commit(queue, batch)
        except BaseException as exc:
            # the loop is shutting down under us: nobody may wait forever on a write
            for write in queue.writes:
                _settle(write.future, error=exc)
            queue.writes.clear()
            raise

    async def _commit(self, queue: _Queue, batch: list[_Write]) -> None:
        batch = [write for write in batch if not _failed_by_its_chain(queue, write)]
        if not batch:
            return
        try:
            results = await self._transaction([write.work for write in batch])
        except Exception as exc:
            if len(batch) == 1 or is_transient(exc):
                for write in batch:
                    _fail(queue, write, exc)
                return
            for write in batch:
                if _failed_by_its_chain(queue, write):
                    continue
                try:
                    (result,) = await self._transaction([write.work])
                except Exception as alone:
                    _fail(queue, write, alone)
                else:
                    _settle(write.future, result=result)
            return
        except BaseException as exc:
            for write in batch:
                _settle(write.future, error=exc)
            raise
        for write, result in zip(batch, results, strict=True):
            _settle(write.future, result=result)


def _failed_by_its_chain(queue: _Queue, write: _Write) -> bool:
    """Fail ``write`` uncommitted if an earlier write of its chain failed."""
    error = queue.broken.get(write.chain) if write.chain is not None else None
    if error is not None:
        _settle(write.future, error=error)
    return error is not None


def _fail(queue: _Queue, write: _Write, error: BaseException) -> None:
    if write.chain is not None:
        queue.broken.setdefault(write.chain, error)
    _settle(write.future, error=error)


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
