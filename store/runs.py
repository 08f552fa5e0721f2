"""Reading and writing runs and turns. The graphs' :class:`~agents.calls.Recorder` lives here."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Insert, and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.calls import TurnRecord
from roles.outcomes import Outcome
from store import metrics
from store.bus import EventBus
from store.db import is_transient, sessionmaker, sync_twin
from store.group_commit import GroupCommit, Work
from store.outcomes import outcome_table
from store.tables.runs import Base, Event, Run, Turn, new_run_id, utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")
OutcomeT = TypeVar("OutcomeT", bound=Outcome)

EventListener = Callable[[str, str, dict[str, Any]], Awaitable[None] | None]

TERMINAL = ("succeeded", "failed", "cancelled")
# Events a stream shows live but the store does not keep: they say nothing a replay needs.
LIVE_ONLY = frozenset({"turn_started", "token"})
TURN_EVENT_OMITS = frozenset({"messages", "completion_token_ids", "completion_logprobs"})


class RunNotFound(LookupError):
    def __str__(self) -> str:
        return f"no run with id {self.args[0]!r}"


class NulInText(ValueError):
    """PostgreSQL text and JSONB refuse U+0000; SQLite would keep it. Refusing it on every
    database keeps a run that one store accepts from failing on the other."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} contains a NUL character (\\u0000), which cannot be stored")


def find_nul(value: Any, path: str) -> str | None:
    """The first place in ``value`` (strings, keys, nested lists and dicts) that holds NUL."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = find_nul(key, path) or find_nul(item, f"{path}.{key}")
            if where:
                return where
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            where = find_nul(item, f"{path}[{index}]")
            if where:
                return where
    return None


def upsert_by_run_and_key(table: type[Base], dialect_name: str) -> Insert:
    """Insert a row keyed by (run, key); the same key again replaces it (a turn re-made after
    a failed attempt, an outcome recomputed on resume). Built once per store and table so
    SQLAlchemy compiles it once, not on every write."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(table)
    kept = ("id", "run_id", "key", "created_at")
    replaced = [c.key for c in table.__table__.columns if c.key not in kept]
    return statement.on_conflict_do_update(
        index_elements=["run_id", "key"],
        set_={name: statement.excluded[name] for name in replaced},
    )


def insert_event(connection: Connection, run_id: str, event: str, payload: dict[str, Any]) -> int:
    result = connection.execute(
        insert(Event).values(run_id=run_id, type=event, payload=payload).returning(Event.id)
    )
    return int(result.scalar_one())


def event_write(run_id: str, event: str, payload: dict[str, Any]) -> Work:
    return lambda connection: insert_event(connection, run_id, event, payload)


@dataclass(frozen=True)
class RowWithEvent:
    """One row upserted and the event that announces it, committed together: what a turn or
    an outcome writes. A transaction that holds several with one statement (a fan-in's
    turns) writes them as two multi-row statements instead of two statements each."""

    statement: Insert
    values: dict[str, Any]
    run_id: str
    event: str
    payload: dict[str, Any]

    def __call__(self, connection: Connection) -> int:
        connection.execute(self.statement, self.values)
        return insert_event(connection, self.run_id, self.event, self.payload)


def run_works(connection: Connection, works: list[Work]) -> list[Any]:
    """Every work in order; runs of :class:`RowWithEvent` on one table merged."""
    results: list[Any] = []
    # by identity: a statement's == builds SQL, and the store builds each upsert once
    for _, group in itertools.groupby(
        works, key=lambda w: id(w.statement) if isinstance(w, RowWithEvent) else id(w)
    ):
        same = list(group)
        if len(same) == 1 or not isinstance(same[0], RowWithEvent):
            results.extend(work(connection) for work in same)
            continue
        rows: list[RowWithEvent] = same  # type: ignore[assignment]
        connection.execute(rows[0].statement, [row.values for row in rows])
        ids = connection.execute(
            insert(Event).returning(Event.id, sort_by_parameter_order=True),
            [{"run_id": r.run_id, "type": r.event, "payload": r.payload} for r in rows],
        )
        results.extend(int(event_id) for event_id in ids.scalars().all())
    return results


def without_nul(value: Any) -> Any:
    """``value`` with every NUL character in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def turn_record(row: Turn) -> TurnRecord:
    return TurnRecord(
        run_id=row.run_id,
        key=row.key,
        node=row.node,
        round=row.round,
        agent=row.agent,
        role=row.role,
        role_description=row.role_description,
        model=row.model,
        adapter=row.adapter,
        params=row.params,
        messages=row.messages,
        completion=row.completion,
        finish_reason=row.finish_reason,
        parsed=row.parsed,
        parse_ok=row.parse_ok,
        parse_error=row.parse_error,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        latency_s=row.latency_ms / 1000.0,
        error=row.error,
        completion_token_ids=row.completion_token_ids,
        completion_logprobs=row.completion_logprobs,
    )


class Store:
    """Runs and turns on one database; also a recorder that graphs may write turns through.

    Each turn is committed before its recording returns, so whatever kills a run later, the
    transcript up to that turn is on disk. A run the runner executes writes through its own
    :class:`~store.run_recorder.RunRecorder` instead, which does not wait for the commit.
    Writes that arrive together (a fan-in's turns, concurrent runs' events) share one
    transaction (see :mod:`store.group_commit`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        listeners: list[EventListener] | None = None,
        bus: EventBus | None = None,
        write_retry_s: float = 30.0,
    ) -> None:
        self.engine = engine
        self.write_retry_s = write_retry_s
        self.bus = bus
        self.session = sessionmaker(engine)
        self.listeners: list[EventListener] = list(listeners or [])
        self._upserts: dict[type[Base], Insert] = {}
        # SQLite has one writer at a time. Its writes go through one thread with a plain
        # sqlite3 connection: queued there instead of colliding in SQLite's busy handler,
        # and one thread hop per transaction instead of one per statement (aiosqlite's way).
        self._sqlite_writer: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            self._sqlite_writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
            self._sync_engine = sync_twin(engine)
        self._writer = GroupCommit(self._transaction)

    async def _write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a committed transaction, shared with the writes that queue beside it."""
        result: T = await self._writer.write(work)
        return result

    async def _transaction(self, works: list[Work]) -> list[Any]:
        """Run ``works`` in one committed transaction.

        A database that is briefly unreachable (a restart, a failover) is waited for: the
        transaction is retried with backoff for up to ``write_retry_s``, so a run rides out
        the outage instead of failing. Past that the error reaches the callers.
        """
        delay, deadline = 0.1, time.monotonic() + self.write_retry_s
        while True:
            try:
                if self._sqlite_writer is not None:
                    loop = asyncio.get_running_loop()
                    return await loop.run_in_executor(
                        self._sqlite_writer, self._transaction_sync, works
                    )
                async with self.engine.begin() as connection:
                    return await connection.run_sync(run_works, works)
            except DBAPIError as exc:
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("database write failed (%s); retrying in %.1f s", exc.orig, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _transaction_sync(self, works: list[Work]) -> list[Any]:
        with self._sync_engine.begin() as connection:
            return run_works(connection, works)

    def _upsert(self, table: type[Base]) -> Insert:
        if table not in self._upserts:
            self._upserts[table] = upsert_by_run_and_key(table, self.engine.dialect.name)
        return self._upserts[table]

    async def close(self) -> None:
        if self._sqlite_writer is not None:
            self._sqlite_writer.shutdown(wait=True)
            self._sync_engine.dispose()

    # --- runs ----------------------------------------------------------------------------

    async def create_run(
        self,
        pattern: str,
        problem: str,
        config: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        api_key_id: str | None = None,
    ) -> tuple[Run, bool]:
        """Store a queued run; with an idempotency key already used, return that run instead.

        Returns the run and whether it was created now.
        """
        where = find_nul(pattern, "pattern") or find_nul(problem, "problem")
        where = where or find_nul(config, "config") or find_nul(idempotency_key, "idempotency key")
        if where:
            raise NulInText(where)
        if idempotency_key is not None:
            existing = await self.find_by_idempotency_key(idempotency_key)
            if existing is not None:
                return existing, False
        run_id = new_run_id()
        try:
            await self._write(
                lambda connection: connection.execute(
                    insert(Run).values(
                        id=run_id,
                        pattern=pattern,
                        problem=problem,
                        config=config,
                        status="queued",
                        prompt_tokens=0,
                        completion_tokens=0,
                        idempotency_key=idempotency_key,
                        api_key_id=api_key_id,
                        cancel_requested=False,
                        attempts=0,
                        enqueued_at=utcnow(),  # its creator enqueues it next
                    )
                )
            )
        except IntegrityError:
            # two requests with one key raced; the other one's run stands
            existing = await self.find_by_idempotency_key(idempotency_key or "")
            if existing is None:
                raise
            return existing, False
        return await self.get_run(run_id), True

    async def find_by_idempotency_key(self, key: str) -> Run | None:
        async with self.session() as session:
            return await session.scalar(select(Run).where(Run.idempotency_key == key))

    async def get_run(self, run_id: str) -> Run:
        async with self.session() as session:
            run = await session.get(Run, run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    async def list_runs(
        self,
        *,
        limit: int = 20,
        pattern: str | None = None,
        status: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        api_key_id: str | None = None,
        search: str | None = None,
    ) -> list[Run]:
        """Newest first. ``before`` is a (created_at, id) cursor: runs strictly older.
        ``search`` matches problem text anywhere (any case) or the start of the run id."""
        query = select(Run).order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)
        if search:
            query = query.where(
                or_(
                    Run.problem.icontains(search, autoescape=True),
                    Run.id.startswith(search.lower(), autoescape=True),
                )
            )
        if pattern:
            query = query.where(Run.pattern == pattern)
        if status:
            query = query.where(Run.status == status)
        if created_after:
            query = query.where(Run.created_at >= created_after)
        if created_before:
            query = query.where(Run.created_at < created_before)
        if api_key_id:
            query = query.where(Run.api_key_id == api_key_id)
        if before:
            at, run_id = before
            query = query.where(
                or_(Run.created_at < at, and_(Run.created_at == at, Run.id < run_id))
            )
        async with self.session() as session:
            return list((await session.scalars(query)).all())

    async def _update_run(self, run_id: str, **values: Any) -> None:
        statement = update(Run).where(Run.id == run_id).values(**values)
        await self._write(lambda connection: connection.execute(statement))

    async def request_cancel(self, run_id: str) -> Run:
        """Ask a run to stop; it stops before its next turn. A queued run is cancelled now."""
        run = await self.get_run(run_id)
        if run.status in TERMINAL:
            return run
        # No worker will run a queued run, so its event stream ends here; one a worker
        # claimed meanwhile is asked to stop instead, and that worker finishes it.
        if run.status != "queued" or not await self.finish_run(
            run_id,
            status="cancelled",
            error="cancelled before it started",
            only_if_status="queued",
            cancel_requested=True,
        ):
            await self._update_run(run_id, cancel_requested=True)
        return await self.get_run(run_id)

    async def cancel_requested(self, run_id: str) -> bool:
        async with self.session() as session:
            return bool(await session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))

    async def set_trace_id(self, run_id: str, trace_id: str) -> None:
        await self._update_run(run_id, trace_id=trace_id)

    async def claim_run(
        self, run_id: str, owner: str, lease_s: float, *, take_from: str | None = None
    ) -> bool:
        """Take the lease on an unfinished run and mark it running; False when another
        live owner holds it (a duplicate delivery of the same run) or it has ended.
        ``take_from`` names a holder known to be dead, whose lease is taken at once.

        One conditional UPDATE, so of two workers racing for a run exactly one wins.
        """
        return await self.claim(run_id, owner, lease_s, take_from=take_from) is not None

    async def claim(
        self, run_id: str, owner: str, lease_s: float, *, take_from: str | None = None
    ) -> Run | None:
        """:meth:`claim_run`, returning the claimed run as it now is, or None: the executor
        needs no read of the run before or after (``attempts`` 1 says it never ran before)."""
        now = utcnow()
        # Not even ``owner`` itself may claim a run it holds: two deliveries of one run to
        # two threads of one worker must not both execute it.
        holders = [Run.lease_owner.is_(None)]
        if take_from is not None:
            holders.append(Run.lease_owner == take_from)
        statement = (
            update(Run)
            .where(
                Run.id == run_id,
                Run.status.in_(("queued", "running", "failed")),
                or_(*holders, Run.lease_expires_at.is_(None), Run.lease_expires_at < now),
            )
            .values(
                status="running",
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_s),
                attempts=Run.attempts + 1,
                started_at=func.coalesce(Run.started_at, now),
                error=None,
            )
            .returning(*Run.__table__.columns)
        )
        row = await self._write(lambda connection: connection.execute(statement).first())
        return None if row is None else Run(**row._asdict())

    async def renew_lease(self, run_id: str, owner: str, lease_s: float) -> bool:
        """Extend the lease ``owner`` holds; False when it no longer holds it."""
        statement = (
            update(Run)
            .where(Run.id == run_id, Run.lease_owner == owner, Run.status == "running")
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        )
        result = await self._write(lambda connection: connection.execute(statement))
        return result.rowcount == 1

    async def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease up early (an interrupted run), so it is picked up at once."""
        statement = (
            update(Run)
            .where(Run.id == run_id, Run.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )
        await self._write(lambda connection: connection.execute(statement))

    async def requeue_due(self, requeue_after_s: float, limit: int = 100) -> list[str]:
        """Mark as enqueued, and return, the runs that must be enqueued again:

        - running runs whose lease expired (their worker died) and that were not enqueued
          since;
        - queued runs enqueued longer than ``requeue_after_s`` ago (the broker lost the
          message, e.g. a Redis restart without persistence), and running ones likewise.

        Each run is marked with a conditional UPDATE, so of several reapers one enqueues it.
        """
        now = utcnow()
        stale = now - timedelta(seconds=requeue_after_s)
        lease_gone = or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < now)
        due = or_(
            and_(
                Run.status == "running",
                lease_gone,
                or_(
                    Run.enqueued_at.is_(None),
                    Run.lease_expires_at.is_(None),
                    Run.enqueued_at < Run.lease_expires_at,
                    Run.enqueued_at < stale,
                ),
            ),
            and_(Run.status == "queued", or_(Run.enqueued_at.is_(None), Run.enqueued_at < stale)),
        )
        query = select(Run.id, Run.enqueued_at).where(due).order_by(Run.created_at).limit(limit)
        async with self.session() as session:
            candidates = (await session.execute(query)).all()
        claimed = []
        for run_id, seen in candidates:
            same = Run.enqueued_at.is_(None) if seen is None else Run.enqueued_at == seen
            statement = update(Run).where(Run.id == run_id, same).values(enqueued_at=now)
            result = await self._write(lambda connection, s=statement: connection.execute(s))
            if result.rowcount == 1:
                claimed.append(run_id)
        return claimed

    async def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        answer: str | None = None,
        stop_reason: str | None = None,
        error: str | None = None,
        owner: str | None = None,
        only_if_status: str | None = None,
        cancel_requested: bool | None = None,
    ) -> bool:
        """Record how a run ended and end its event stream, in one transaction: the outcome,
        its token totals, the released lease and the ``run_finished`` event commit together
        or not at all, so no reader ever sees a finished run whose stream is still open.

        ``owner``: only while that worker holds the lease (a worker that lost its run to
        another must not finish it too); ``only_if_status``: only from that status. Returns
        whether the run was finished; when not, nothing was written.
        """
        where = [Run.id == run_id]
        if owner is not None:
            where.append(Run.lease_owner == owner)
        if only_if_status is not None:
            where.append(Run.status == only_if_status)
        extra = {} if cancel_requested is None else {"cancel_requested": cancel_requested}
        payload = {"status": status, "answer": answer, "stop_reason": stop_reason, "error": error}
        totals = select(
            func.coalesce(func.sum(Turn.prompt_tokens), 0),
            func.coalesce(func.sum(Turn.completion_tokens), 0),
        ).where(Turn.run_id == run_id)

        def write(connection: Connection) -> int | None:
            prompt, completion = connection.execute(totals).one()
            result = connection.execute(
                update(Run)
                .where(*where)
                .values(
                    status=status,
                    answer=answer,
                    stop_reason=stop_reason,
                    error=error,
                    prompt_tokens=int(prompt),
                    completion_tokens=int(completion),
                    finished_at=utcnow(),
                    lease_owner=None,
                    lease_expires_at=None,
                    **extra,
                )
            )
            if result.rowcount != 1:
                return None
            return insert_event(connection, run_id, "run_finished", payload)

        event_id = await self._write(write)
        if event_id is None:
            return False
        await self.publish(run_id, event_id, "run_finished", payload)
        return True

    # --- turns ---------------------------------------------------------------------------

    async def record_turn(self, turn: TurnRecord) -> None:
        write = self.turn_write(turn)
        event_id = await self._write(write)
        metrics.observe_turn(turn)
        await self.publish(turn.run_id, event_id, write.event, write.payload)

    def turn_write(self, turn: TurnRecord) -> RowWithEvent:
        """The write that stores ``turn`` and its ``turn_finished`` event, together: a
        replayed stream shows every turn."""
        # A model may emit NUL characters, which PostgreSQL cannot store in text or JSON; the
        # turn keeps them as U+FFFD on every database rather than failing the run.
        values = without_nul(turn.model_dump(exclude={"latency_s"}))
        values["messages"] = without_nul([m.model_dump() for m in turn.messages])
        values["latency_ms"] = turn.latency_s * 1000.0
        # The event shows the turn, not its token arrays (training reads them from the table).
        payload = without_nul(turn.model_dump(mode="json", exclude=TURN_EVENT_OMITS))
        return RowWithEvent(self._upsert(Turn), values, turn.run_id, "turn_finished", payload)

    async def find_turn(self, run_id: str, key: str) -> TurnRecord | None:
        async with self.session() as session:
            row = await session.scalar(select(Turn).where(Turn.run_id == run_id, Turn.key == key))
        return turn_record(row) if row else None

    async def turns(self, run_id: str) -> list[Turn]:
        async with self.session() as session:
            rows = await session.scalars(
                select(Turn).where(Turn.run_id == run_id).order_by(Turn.id)
            )
            return list(rows.all())

    async def usage_by_model(self, run_ids: list[str]) -> dict[str, dict[str, tuple[int, int]]]:
        """run id -> model -> (prompt tokens, completion tokens), for pricing."""
        if not run_ids:
            return {}
        query = (
            select(
                Turn.run_id,
                Turn.model,
                func.sum(Turn.prompt_tokens),
                func.sum(Turn.completion_tokens),
            )
            .where(Turn.run_id.in_(run_ids))
            .group_by(Turn.run_id, Turn.model)
        )
        usage: dict[str, dict[str, tuple[int, int]]] = {}
        async with self.session() as session:
            for run_id, model, prompt, completion in (await session.execute(query)).all():
                usage.setdefault(run_id, {})[model] = (int(prompt or 0), int(completion or 0))
        return usage

    async def token_totals(self, run_id: str) -> tuple[int, int]:
        query = select(
            func.coalesce(func.sum(Turn.prompt_tokens), 0),
            func.coalesce(func.sum(Turn.completion_tokens), 0),
        ).where(Turn.run_id == run_id)
        async with self.session() as session:
            prompt, completion = (await session.execute(query)).one()
        return int(prompt), int(completion)

    # --- outcomes ------------------------------------------------------------------------

    async def record_outcome(self, run_id: str, outcome: Outcome) -> None:
        write = self.outcome_write(run_id, outcome)
        event_id = await self._write(write)
        await self.publish(run_id, event_id, write.event, write.payload)

    def outcome_write(self, run_id: str, outcome: Outcome) -> RowWithEvent:
        table = outcome_table(outcome.kind)
        fields = without_nul(outcome.model_dump(mode="json"))  # model text, as in turns
        values = {"run_id": run_id, **fields}
        payload = {"kind": outcome.kind, **fields}
        return RowWithEvent(self._upsert(table), values, run_id, "outcome", payload)

    async def outcomes(self, run_id: str, kind: type[OutcomeT]) -> list[OutcomeT]:
        """A run's outcomes of one kind, in the order they were first recorded."""
        table = outcome_table(kind.kind)
        async with self.session() as session:
            rows = await session.scalars(
                select(table).where(table.run_id == run_id).order_by(table.id)
            )
            return [
                kind.model_validate({name: getattr(row, name) for name in kind.model_fields})
                for row in rows.all()
            ]

    # --- live events ---------------------------------------------------------------------

    async def emit(self, run_id: str, event: str, payload: dict[str, Any]) -> None:
        """Store (unless live-only) and publish one event of a run's stream."""
        event_id = None
        if event not in LIVE_ONLY:
            event_id = await self._write(event_write(run_id, event, payload))
        await self.publish(run_id, event_id, event, payload)

    def submit(self, work: Work, *, chain: str) -> asyncio.Future[Any]:
        """Queue ``work`` behind every write queued before it, in ``chain`` (see
        :meth:`GroupCommit.submit`), without waiting for it: a run's recorder writes so."""
        return self._writer.submit(work, chain=chain)

    def mend(self, chain: str) -> None:
        """Let ``chain``'s writes commit again after one failed (see :meth:`submit`)."""
        self._writer.mend(chain)

    async def publish(
        self, run_id: str, event_id: int | None, event: str, payload: dict[str, Any]
    ) -> None:
        """Announce an event to the listeners and the bus; a stored one once it is committed."""
        for listener in self.listeners:
            result = listener(run_id, event, payload)
            if result is not None:
                await result
        if self.bus is not None:
            await self.bus.publish(
                run_id, {"id": event_id, "run_id": run_id, "type": event, "data": payload}
            )

    async def events_after(self, run_id: str, after_id: int = 0, limit: int = 1000) -> list[Event]:
        query = (
            select(Event)
            .where(Event.run_id == run_id, Event.id > after_id)
            .order_by(Event.id)
            .limit(limit)
        )
        async with self.session() as session:
            return list((await session.scalars(query)).all())
