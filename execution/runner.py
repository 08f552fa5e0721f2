"""Running one stored run: the wiring of pattern graph, checkpointer, store and models.

The CLI, the workers and the benchmarks all call :func:`execute_run`; it is the only place
that knows both the graphs and the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Durability

from agents.calls import RunCancelled, RunContext, TokenBudget
from agents.model import ModelError
from agents.model_map import ModelRouter
from execution.checkpoints import open_checkpointer, settle_first
from execution.tracing import observe_run, trace_nodes
from graphs.patterns import Pattern, get_pattern
from store.db import is_transient
from store.run_recorder import RunRecorder
from store.runs import Store
from store.tables.runs import Run

log = logging.getLogger(__name__)


class CancelWatch:
    """Whether the run's owner asked it to stop, read from the store at most every
    ``interval_s``: a database read before every turn would cost more than the turn's own
    bookkeeping, and a cancel only needs to land between turns."""

    def __init__(
        self, store: Store, run_id: str, interval_s: float = 0.5, *, known: bool | None = None
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.interval_s = interval_s
        # ``known``: the flag as the claim just read it, which spares the first turn a read
        self.checked_at = -interval_s if known is None else time.monotonic()
        self.cancelled = bool(known)

    async def __call__(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.checked_at >= self.interval_s:
            self.checked_at = now
            try:
                self.cancelled = await self.store.cancel_requested(self.run_id)
            except Exception as exc:  # a database outage: the run's writes wait it out
                log.warning("could not read whether run %s was cancelled: %s", self.run_id, exc)
        return self.cancelled


class RunOutcome(dict[str, Any]):
    """status, answer, stop_reason, error and the graph's final state."""

    def stored(self) -> dict[str, Any]:
        """What the run's row and its ``run_finished`` event keep: all but the state."""
        return {k: v for k, v in self.items() if k != "state"}


async def submit_run(store: Store, pattern: str, problem: str, config: dict[str, Any]) -> str:
    """Validate the pattern's config and store a queued run; returns its id.

    Raises ``UnknownPattern``, ``ValueError`` for an empty problem and pydantic's
    ``ValidationError`` for a bad config; nothing is stored then.
    """
    run, _ = await create_run(store, pattern, problem, config)
    return run.id


async def create_run(
    store: Store,
    pattern: str,
    problem: str,
    config: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    api_key_id: str | None = None,
) -> tuple[Run, bool]:
    """Like :func:`submit_run`, returning the run and whether it is new (idempotency)."""
    spec = get_pattern(pattern)
    if not problem.strip():
        raise ValueError("the problem text is empty")
    validated = spec.config_model.model_validate(config)
    return await store.create_run(
        spec.name,
        problem,
        validated.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        api_key_id=api_key_id,
    )


def process_owner() -> str:
    """This process's name on the leases it holds: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_is_live(run: Run) -> bool:
    """Whether someone holds the run's lease now."""
    expires = run.lease_expires_at
    if run.lease_owner is None or expires is None:
        return False
    if expires.tzinfo is None:  # SQLite hands back naive datetimes; they are stored in UTC
        expires = expires.replace(tzinfo=UTC)
    return expires > datetime.now(UTC)


def holder_is_dead(owner: str) -> bool:
    """Whether a lease holder is a process of this host that no longer exists, so its
    lease need not be waited out (a restarted embedded server, ``runs resume`` after a
    crash). Holders on other hosts are judged by their lease's expiry alone."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by another user
        return False
    return False


class RunInterrupted(Exception):
    """The run stopped for a reason outside it (the database went away, the lease was
    lost). It is not finished: it keeps its status and resumes from its checkpoint when it
    is executed again."""


class Lease:
    """Keeps a run's lease while it executes: renewed every third of its length, so a
    worker that dies lets go within ``lease_s`` and the run is enqueued again elsewhere."""

    def __init__(self, store: Store, run_id: str, owner: str, lease_s: float) -> None:
        self.store, self.run_id, self.owner, self.lease_s = store, run_id, owner, lease_s
        self.lost = False

    async def hold(self, work: asyncio.Task[Any]) -> None:
        while not work.done():
            await asyncio.sleep(self.lease_s / 3)
            try:
                held = await self.store.renew_lease(self.run_id, self.owner, self.lease_s)
            except Exception as exc:  # the database is away; the run's own writes wait too
                log.warning("could not renew the lease of run %s: %s", self.run_id, exc)
                continue
            if not held:
                log.warning("run %s was taken over by another worker; stopping here", self.run_id)
                self.lost = True
                work.cancel()
                return


async def execute_run(
    run_id: str,
    *,
    store: Store,
    models: ModelRouter,
    database_url: str,
    stream_tokens: bool = True,
    owner: str | None = None,
    lease_s: float = 30.0,
) -> RunOutcome:
    """Run (or resume) a stored run to its end and record how it ended.

    A run that has a checkpoint resumes from it: finished nodes are not re-run, and the node
    that was interrupted replays the turns it had already stored instead of calling the model
    again. A model failure fails the run with the reason; the turns made so far stay stored.
    ``stream_tokens`` publishes the text of every model call as it is generated (live
    ``token`` events; replayed turns have none).

    The run is executed only by the holder of its lease (``owner``, this process by
    default): a second delivery of a run that a live worker executes returns its stored
    state at once. A database outage that outlasts the store's retries raises
    :class:`RunInterrupted` with the run left unfinished, to be executed again.
    """
    owner = owner or process_owner()
    # Claimed first and read only when that fails: the claim hands back the run, so a fresh
    # run costs one round trip here. It refuses a finished run, which ends just as before.
    claimed = await store.claim(run_id, owner, lease_s)
    if claimed is None:
        run = await store.get_run(run_id)
        holder = run.lease_owner
        if run.status in ("succeeded", "cancelled"):
            return _stored_outcome(run)
        if holder and holder_is_dead(holder):
            claimed = await store.claim(run_id, owner, lease_s, take_from=holder)
        if claimed is None:
            log.info("run %s is held by %s; not executing it twice", run_id, holder)
            return _stored_outcome(run)
    run = claimed
    lease = Lease(store, run_id, owner, lease_s)
    try:
        async with observe_run(store, run) as observed:
            work = asyncio.ensure_future(
                _execute(
                    run,
                    store=store,
                    models=models,
                    database_url=database_url,
                    stream_tokens=stream_tokens,
                )
            )
            keeper = asyncio.ensure_future(lease.hold(work))
            try:
                outcome = await work
            except asyncio.CancelledError:
                if not lease.lost:
                    raise
                raise RunInterrupted(f"run {run_id} was taken over by another worker") from None
            except Exception as exc:
                if any(is_transient(e) for e in _chain(exc)):
                    raise RunInterrupted(f"database unreachable: {exc}") from exc
                raise
            finally:
                await _stop(keeper)
            # Finished only once the keeper has stopped: a renewal refused because the run
            # had just ended would otherwise cancel the finishing half-way.
            await _record_finish(store, run_id, owner, outcome)
            observed.finish(outcome)
        return outcome
    except RunInterrupted:
        with contextlib.suppress(Exception):
            await store.release_lease(run_id, owner)
        raise
    except asyncio.CancelledError:
        # Stopped from inside this process (a driver cancelled, Ctrl-C): nobody executes the
        # run any more, so whoever resumes it need not wait for the lease to expire.
        with contextlib.suppress(Exception):
            await asyncio.shield(store.release_lease(run_id, owner))
        raise


def _stored_outcome(run: Run) -> RunOutcome:
    return RunOutcome(
        status=run.status,
        answer=run.answer,
        stop_reason=run.stop_reason,
        error=run.error,
        state={},
    )


async def _execute(
    run: Run, *, store: Store, models: ModelRouter, database_url: str, stream_tokens: bool
) -> RunOutcome:
    run_id = run.id
    pattern = get_pattern(run.pattern)
    config = pattern.config_model.model_validate(run.config)
    recorder = RunRecorder(store, run_id)
    async with open_checkpointer(database_url) as saver:
        settle_first(saver, recorder.committed)
        graph = _compiled(pattern).copy({"checkpointer": saver})
        thread: dict[str, Any] = {
            "configurable": {"thread_id": run_id},
            "recursion_limit": pattern.recursion_limit(config),
        }
        # A run claimed for the first time has never executed: it has no checkpoint and no
        # turns, so neither is read. Any later attempt reads both to resume.
        resuming, spent = False, 0
        if run.attempts != 1:
            resuming = await saver.aget_tuple(thread) is not None
            _, spent = await store.token_totals(run_id)
        context = RunContext(
            run_id=run_id,
            models=models,
            recorder=recorder,
            budget=TokenBudget(limit=config.token_budget, spent=spent),
            config=config,
            resuming=resuming or spent > 0,
            is_cancelled=CancelWatch(store, run_id, known=run.cancel_requested),
            stream_tokens=stream_tokens,
            adapters=dict(config.adapters),
        )
        await recorder.emit(run_id, "run_started", {"pattern": pattern.name, "resuming": resuming})
        initial = None if resuming else pattern.initial_state(run.problem, config)
        try:
            try:
                state = await graph.ainvoke(initial, thread, context=context, durability=DURABILITY)
            except BaseException:
                # what ended the run is what it reports; its writes are still waited for,
                # so they are all stored and announced before its end is
                with contextlib.suppress(Exception):
                    await recorder.settle()
                raise
            await recorder.settle()  # a write that failed fails the run, as below
        except RunCancelled as exc:
            return _outcome("cancelled", error=str(exc))
        except ModelError as exc:
            return _outcome("failed", error=f"model call failed: {exc}")
        except Exception as exc:
            if any(is_transient(e) for e in _chain(exc)):
                raise  # not the run's fault: execute_run leaves it to be resumed
            # anything else fails the run with its reason; the traceback goes to logs
            traceback.print_exc()
            return _outcome("failed", error=f"{type(exc).__name__}: {exc}")
    return _outcome(
        "succeeded",
        answer=state.get("answer"),
        stop_reason=state.get("stop_reason"),
        state=state,
    )


DURABILITY: Durability = "exit"
"""A run's graph state is checkpointed when it ends, not after every step. The turn log is the
durable record: a run resumed after a kill starts its graph again and every turn already
stored is replayed from the store (``agents.calls.ask``), not asked again, so no turn is lost
or repeated; steps are deterministic given their turns (SPC's step choice is seeded by the
run id). Checkpointing each step (``"sync"``) cost 2-3 commits and 9 statements per model
call on PostgreSQL: per extra call of a discussion at 50 ms, 39 ms against 14 ms
(``benchmarks/overhead.py``)."""

_COMPILED: dict[Pattern, CompiledStateGraph] = {}


def _compiled(pattern: Pattern) -> CompiledStateGraph:
    """The pattern's graph, compiled once per process (that costs ~30 ms); each run takes a
    copy bound to its own checkpointer, which is cheap."""
    if pattern not in _COMPILED:
        graph = trace_nodes(pattern.build_graph())
        _COMPILED[pattern] = graph.compile(name=pattern.name)
    return _COMPILED[pattern]


async def _record_finish(store: Store, run_id: str, owner: str, outcome: RunOutcome) -> None:
    """Store how the run ended and its ``run_finished`` event, together; only while
    ``owner`` still holds the lease, so a worker that lost the run does not finish it too."""
    try:
        finished = await store.finish_run(run_id, owner=owner, **outcome.stored())
    except Exception as exc:
        if any(is_transient(e) for e in _chain(exc)):
            raise RunInterrupted(f"database unreachable: {exc}") from exc
        raise
    if not finished:
        raise RunInterrupted(f"run {run_id} was taken over by another worker")


def _outcome(
    status: str,
    *,
    answer: str | None = None,
    stop_reason: str | None = None,
    error: str | None = None,
    state: dict[str, Any] | None = None,
) -> RunOutcome:
    """How the graph ended; :func:`execute_run` records it once the lease keeper is stopped."""
    return RunOutcome(
        status=status, answer=answer, stop_reason=stop_reason, error=error, state=state or {}
    )


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has stopped (it may be mid-renewal)."""
    task.cancel()
    await asyncio.wait([task])  # unlike awaiting it, lets a cancel of the caller through


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes: the graph wraps what a node raised."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
