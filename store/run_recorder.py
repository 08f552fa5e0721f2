"""The recorder one run's graph writes through: its writes go behind, its events in order.

Through the store itself each turn is committed before ``ask`` returns, so every dependent
model call waited for a commit (1-1.5 ms on SQLite's writer thread, 2-3 ms on PostgreSQL,
which waits for its WAL flush). A run's recorder queues the write and returns: the commit
overlaps the next model call. What it keeps of the guarantees:

- a chain per run (:meth:`store.group_commit.GroupCommit.submit`): the run's writes commit in
  the order they were made, and none after one that failed, so what is stored of a run is
  always a prefix of what it did. A worker killed with writes still queued loses only that
  tail; the run resumed elsewhere replays the prefix and calls the models again from there,
  as it would after a kill just before those calls returned;
- :meth:`committed` waits for every queued write and raises if one failed: the run's
  checkpointer calls it before each checkpoint, so a checkpoint never gets ahead of the turns
  it was made from. :meth:`settle` also waits for the announcements: the runner calls it
  before it records how the run ended;
- a failed write (or a listener that failed on its event) is raised by the run's next
  write, so a run does not go on for long after its transcript stopped being kept;
- events are announced (to listeners and the bus) in the order they were made, a stored one
  once it is committed, the live-only ones (``turn_started``, ``token``) in their place
  between them, so a live stream shows a turn's end before the next turn's first token.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from agents.calls import TurnRecord
from roles.outcomes import Outcome
from store import metrics
from store.runs import LIVE_ONLY, Store, event_write


@dataclass
class _Announcement:
    run_id: str
    event: str
    payload: dict[str, Any]
    stored: asyncio.Future[Any] | None  # the write's event id; None for a live-only event


class RunRecorder:
    """A :class:`~agents.calls.Recorder` for one run, over ``store``."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self._queued: deque[_Announcement] = deque()
        self._announcer: asyncio.Task[None] | None = None
        # the first write (or listener) that failed: the run's next write raises it
        self._failure: BaseException | None = None

    async def record_turn(self, turn: TurnRecord) -> None:
        write = self.store.turn_write(turn)
        self._queue(turn.run_id, write.event, write.payload, write)
        metrics.observe_turn(turn)

    async def find_turn(self, run_id: str, key: str) -> TurnRecord | None:
        return await self.store.find_turn(run_id, key)

    async def emit(self, run_id: str, event: str, payload: dict[str, Any]) -> None:
        if event in LIVE_ONLY:
            self._announce(_Announcement(run_id, event, payload, None))
        else:
            self._queue(run_id, event, payload, event_write(run_id, event, payload))

    async def record_outcome(self, run_id: str, outcome: Outcome) -> None:
        write = self.store.outcome_write(run_id, outcome)
        self._queue(run_id, write.event, write.payload, write)

    async def committed(self) -> None:
        """Return once every write so far is committed; raise if anything failed (a
        checkpoint must not be written then: after a failed write it would be ahead of the
        turns the store holds, and a listener's failure stands for the worker's death)."""
        await self._drained()
        if self._failure is not None:
            raise self._failure

    async def settle(self) -> None:
        """Return once every write so far is committed and every event announced; raise the
        first failure, a write's or a listener's (once: the run may then be resumed, and
        write again)."""
        await self._drained()
        failure, self._failure = self._failure, None
        if failure is not None:
            self.store.mend(self.run_id)
            raise failure

    async def _drained(self) -> None:
        while self._announcer is not None and not self._announcer.done():
            await asyncio.shield(self._announcer)

    def _queue(self, run_id: str, event: str, payload: dict[str, Any], work: Any) -> None:
        if self._failure is not None:
            raise self._failure
        self._announce(_Announcement(run_id, event, payload, self.store.submit(work, chain=run_id)))

    def _announce(self, announcement: _Announcement) -> None:
        self._queued.append(announcement)
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.get_running_loop().create_task(self._announce_in_order())

    async def _announce_in_order(self) -> None:
        while self._queued:
            item = self._queued[0]
            try:
                event_id = None
                if item.stored is not None:
                    # shielded: the write is committed even if this task is cancelled
                    event_id = await asyncio.shield(item.stored)
                await self.store.publish(item.run_id, event_id, item.event, item.payload)
            except Exception as exc:  # the write, or a listener: a failed write is not announced
                self._failure = self._failure or exc
            finally:
                self._queued.popleft()
