"""The transformers backend's queue: calls waiting for a batch, and which of them may share one."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.model import Completion, ModelError, ModelRequest, TextCallback

Outcome = tuple[list[Completion], int] | ModelError
"""What the worker hands back per request: its completions and prompt length, or its error."""


@dataclass
class Pending:
    """A generate call waiting for a batch."""

    request: ModelRequest
    future: asyncio.Future[tuple[list[Completion], int]]
    enqueued: float
    on_text: TextCallback | None = None
    halt: threading.Event = field(default_factory=threading.Event)  # read by the worker
    stoppable: bool = False  # the caller may halt it: deliver as soon as its rows end

    def resolver(self, loop: asyncio.AbstractEventLoop) -> Callable[[Outcome], None]:
        """Settles the call's future from the worker thread (a no-op once it is done)."""
        future = self.future

        def settle(outcome: Outcome) -> None:
            if future.done():
                return
            if isinstance(outcome, ModelError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        return lambda outcome: loop.call_soon_threadsafe(settle, outcome)

    def emitter(self, loop: asyncio.AbstractEventLoop) -> Callable[[str], None] | None:
        """Hands the worker's pieces to ``on_text`` on the loop, in order. They all arrive
        before the batch's results (callbacks run in the order they were scheduled), so
        before ``generate`` returns; a caller that gave up gets no more."""
        on_text, future = self.on_text, self.future
        if on_text is None:
            return None

        def deliver(piece: str) -> None:
            if not future.done():
                on_text(piece)

        return lambda piece: loop.call_soon_threadsafe(deliver, piece)

    @property
    def rows(self) -> int:
        return self.request.params.n

    @property
    def key(self) -> tuple[Any, ...]:
        return batch_key(self.request)


def batch_key(request: ModelRequest) -> tuple[Any, ...]:
    """Requests with equal keys can share one generate call.

    Greedy requests all batch together; sampled ones need the same temperature and top_p
    (they are per-call settings of transformers' generate) and the same seed (one seed per call).
    """
    params = request.params
    if params.temperature == 0:
        return ("greedy",)
    return ("sample", params.temperature, params.top_p, params.seed)


@dataclass
class Interjection:
    """A short request served between two decoding steps of the running batch."""

    request: ModelRequest
    emitter: Callable[[str], None] | None
    halt: threading.Event
    resolve: Callable[[Outcome], None]


async def relay_halt(halt: asyncio.Event, rows: threading.Event) -> None:
    """Passes a caller's halt (an event of its loop) on to the worker thread's rows."""
    await halt.wait()
    rows.set()


@dataclass
class LoopState:
    """What belongs to one event loop: the pending queue and the batcher task draining it."""

    loop: asyncio.AbstractEventLoop
    pending: deque[Pending] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
