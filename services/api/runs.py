"""The runs resource: submit, read, list, cancel, transcript and live events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from execution.runner import create_run
from graphs.patterns import PATTERNS, get_pattern
from roles.checking import answers_match
from services.api.deps import Services, get_services
from services.api.schemas.errors import refusals
from services.api.schemas.runs import (
    AnswerCheckView,
    Moment,
    PatternView,
    RunCreate,
    RunList,
    RunStatus,
    RunView,
    TurnView,
    Usage,
    check_config,
)
from services.api.schemas.wire import event_stream
from services.settings import Settings
from store.api_keys import scoped_idempotency_key
from store.bus import RESYNC
from store.runs import TERMINAL, RunNotFound, Store
from store.tables.runs import Event, Run

# How long a quiet live stream waits before reading the store again.
STORE_POLL_S = 2.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A cursor is a position, the (created_at, id) of the last run of a page: any such position is
# a valid cursor (runs older than it), so its schema says exactly which strings work.
CURSOR_PATTERN = r"^[0-9]{1,17}_[0-9a-f]{1,32}$"

router = APIRouter(prefix="/v1", tags=["runs"])
NOT_FOUND = refusals(404)


def caller_key_id(request: Request) -> str | None:
    """The API key the request came with (services/api/auth.py); None when keys are off."""
    return getattr(request.state, "api_key_id", None)


async def owned_run(request: Request, run_id: str) -> Run:
    """The run, as a 404 when keys are on and another key submitted it: a key cannot even
    learn that someone else's run exists."""
    run = await get_services(request).store.get_run(run_id)
    key_id = caller_key_id(request)
    if key_id is not None and run.api_key_id != key_id:
        raise RunNotFound(run_id)
    return run


def cost_usd(settings: Settings, usage: dict[str, tuple[int, int]]) -> float:
    total = 0.0
    for model, (prompt, completion) in usage.items():
        price = settings.prices.get(model)
        if price:
            total += prompt * price.input_per_million + completion * price.output_per_million
    return round(total / 1_000_000, 6)


def answer_check(run: Run) -> AnswerCheckView | None:
    """The run's answer judged against the reference its config carries, once it has ended."""
    reference = run.config.get("reference_answer")
    if not isinstance(reference, str) or run.status not in TERMINAL:
        return None
    if run.pattern in PATTERNS and not PATTERNS[run.pattern].judged:
        return None  # a game's answer is its result, not the problem's answer
    check = answers_match(run.answer, reference)
    return AnswerCheckView(correct=check.correct, reason=check.reason, reference=reference)


def trace_url(settings: Settings, trace_id: str | None) -> str | None:
    if not trace_id or not settings.trace_url_template:
        return None
    return settings.trace_url_template.replace("{trace_id}", trace_id)


async def run_views(services: Services, runs: list[Run]) -> list[RunView]:
    usage = await services.store.usage_by_model([r.id for r in runs])
    views = []
    for run in runs:
        by_model = usage.get(run.id, {})
        prompt = sum(p for p, _ in by_model.values())
        completion = sum(c for _, c in by_model.values())
        views.append(
            RunView(
                id=run.id,
                pattern=run.pattern,
                status=run.status,  # type: ignore[arg-type]
                problem=run.problem,
                config=run.config,
                answer=run.answer,
                stop_reason=run.stop_reason,
                error=run.error,
                usage=Usage(
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    total_tokens=prompt + completion,
                ),
                cost_usd=cost_usd(services.settings, by_model),
                cancel_requested=run.cancel_requested,
                trace_id=run.trace_id,
                trace_url=trace_url(services.settings, run.trace_id),
                answer_check=answer_check(run),
                created_at=run.created_at,
                started_at=run.started_at,
                finished_at=run.finished_at,
            )
        )
    return views


def encode_cursor(run: Run) -> str:
    """``<microseconds since 1970 UTC>_<run id>``."""
    return f"{(run.created_at - EPOCH) // timedelta(microseconds=1)}_{run.id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    micros, run_id = cursor.split("_", 1)  # the query's pattern made sure it has this shape
    return EPOCH + timedelta(microseconds=int(micros)), run_id


@router.get("/patterns", response_model=list[PatternView], tags=["patterns"])
async def list_patterns() -> list[PatternView]:
    """Every pattern with the JSON schema of its config."""
    return [
        PatternView(
            name=p.name, summary=p.summary, config_schema=p.config_model.model_json_schema()
        )
        for p in PATTERNS.values()
    ]


@router.post(
    "/runs",
    status_code=202,
    response_model=RunView,
    responses={200: {"model": RunView, "description": "a repeated Idempotency-Key: the first run"}},
)
async def submit(
    body: RunCreate,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RunView:
    """Queue a run. A repeat with the same ``Idempotency-Key`` returns the first run."""
    services = get_services(request)
    pattern = get_pattern(body.pattern)  # 422 with the known names before anything is stored
    check_config(pattern, body.config)
    run, created = await create_run(
        services.store,
        body.pattern,
        body.problem,
        body.config,
        idempotency_key=scoped_idempotency_key(idempotency_key, caller_key_id(request)),
        api_key_id=caller_key_id(request),
    )
    if created:
        await services.executor.enqueue(run.id)
    else:
        response.status_code = 200
    response.headers["Location"] = f"/v1/runs/{run.id}"
    return (await run_views(services, [run]))[0]


@router.get("/runs", response_model=RunList)
async def list_runs(
    request: Request,
    pattern: Annotated[
        str | None,
        Query(
            max_length=64,
            description="a pattern name",
            json_schema_extra={"enum": list(PATTERNS)},
        ),
    ] = None,
    status: RunStatus | None = None,
    created_after: Annotated[Moment | None, Query(description="ISO 8601, with a zone")] = None,
    created_before: Annotated[Moment | None, Query(description="ISO 8601, with a zone")] = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="text in the problem, or the start of the run id"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None,
        Query(pattern=CURSOR_PATTERN, description="next_cursor of the previous page"),
    ] = None,
) -> RunList:
    """Runs, newest first, filtered; follow ``next_cursor`` for older pages."""
    services = get_services(request)
    runs = await services.store.list_runs(
        limit=limit + 1,
        pattern=get_pattern(pattern).name if pattern else None,
        status=status,
        created_after=created_after,
        created_before=created_before,
        before=decode_cursor(cursor) if cursor else None,
        api_key_id=caller_key_id(request),
        search=q.strip() if q else None,
    )
    page, more = runs[:limit], len(runs) > limit
    return RunList(
        items=await run_views(services, page),
        next_cursor=encode_cursor(page[-1]) if more and page else None,
    )


@router.get("/runs/{run_id}", response_model=RunView, responses=NOT_FOUND)
async def get_run(run_id: str, request: Request) -> RunView:
    """Status, answer, token usage and cost so far."""
    services = get_services(request)
    return (await run_views(services, [await owned_run(request, run_id)]))[0]


@router.post("/runs/{run_id}/cancel", status_code=202, response_model=RunView, responses=NOT_FOUND)
async def cancel(run_id: str, request: Request) -> RunView:
    """Stop a run before its next turn (a queued run is cancelled at once)."""
    services = get_services(request)
    await owned_run(request, run_id)
    run = await services.store.request_cancel(run_id)
    return (await run_views(services, [run]))[0]


@router.get("/runs/{run_id}/turns", response_model=list[TurnView], responses=NOT_FOUND)
async def turns(run_id: str, request: Request) -> list[TurnView]:
    """The transcript: every model call of the run, in order."""
    services = get_services(request)
    await owned_run(request, run_id)
    rows = await services.store.turns(run_id)
    return [TurnView.model_validate(row, from_attributes=True) for row in rows]


def sse(event_id: int | None, event_type: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(
        id=str(event_id) if event_id is not None else None,
        event=event_type,
        data=json.dumps(data, default=str),
    )


async def replay(store: Store, run_id: str, after: int) -> AsyncIterator[Event]:
    while True:
        batch = await store.events_after(run_id, after)
        for event in batch:
            after = event.id
            yield event
        if len(batch) < 1000:
            return


async def stream_events(services: Services, run_id: str, last_id: int) -> AsyncIterator[Any]:
    """Stored events after ``last_id``, then live ones, until the run finishes.

    Subscribing before replaying leaves no gap. Stored events are told apart by id, not by
    order: parallel turns commit their events concurrently, so a live event may carry a
    smaller id than one already sent, and it is still new. The store is read again when the
    live stream is quiet for ``STORE_POLL_S``, when the bus says its feed came back after a
    loss, and before the run's end is sent, because live delivery can drop events (a Redis
    restart, a subscriber too slow for its queue) and the store cannot.
    """
    sent: set[int] = set()
    async with services.bus.subscribe(run_id) as queue:
        async for event in unsent(services.store, run_id, last_id, sent):
            yield sse(event.id, event.type, event.payload)
            if event.type == "run_finished":
                return
        replayed_to = max(sent, default=last_id)
        # The store is read again from ``floor``: ids at or below it were all committed by
        # the previous read, one quiet interval earlier, so none can appear there any more.
        floor, next_floor = last_id, replayed_to
        pending = stale_free_backlog(queue, replayed_to)
        while True:
            if pending:
                live = pending.pop(0)
            else:
                try:
                    live = await asyncio.wait_for(queue.get(), timeout=STORE_POLL_S)
                except TimeoutError:
                    async for event in unsent(services.store, run_id, floor, sent):
                        yield sse(event.id, event.type, event.payload)
                        if event.type == "run_finished":
                            return
                    floor, next_floor = next_floor, max(sent, default=next_floor)
                    continue
            event_id = live.get("id")
            if live["type"] in (RESYNC["type"], "run_finished"):
                # The live feed dropped events (it says so after a Redis outage) or may have
                # without ever going quiet: the store has them all, a finished run's too.
                async for event in unsent(services.store, run_id, floor, sent):
                    yield sse(event.id, event.type, event.payload)
                    if event.type == "run_finished":
                        return
                if live["type"] == RESYNC["type"]:
                    continue
            if event_id is not None:
                if event_id in sent:
                    continue
                sent.add(event_id)
            yield sse(event_id, live["type"], live["data"])
            if live["type"] == "run_finished":
                return


async def unsent(store: Store, run_id: str, after: int, sent: set[int]) -> AsyncIterator[Event]:
    """The stored events after ``after`` not yet in ``sent``, which this adds them to."""
    async for event in replay(store, run_id, after):
        if event.id not in sent:
            sent.add(event.id)
            yield event


def stale_free_backlog(queue: asyncio.Queue, last_id: int) -> list[dict[str, Any]]:
    """The events queued while the replay read the store, less the stale live-only ones.

    The stored ones are repeats (their ids are at most ``last_id``); a live-only event
    queued before a repeat happened before something the client has already seen (a turn's
    ``token`` events before its replayed ``turn_finished``) and would arrive out of order, so
    it is dropped. Exact with the in-process bus, which queues on publish; Redis may deliver
    a repeat later than this first look, and a stale live-only event then gets through.
    """
    backlog: list[dict[str, Any]] = []
    while not queue.empty():
        backlog.append(queue.get_nowait())
    last_repeat = max(
        (i for i, e in enumerate(backlog) if e.get("id") is not None and e["id"] <= last_id),
        default=-1,
    )
    return [e for i, e in enumerate(backlog) if i > last_repeat or e.get("id") is not None]


@router.get(
    "/runs/{run_id}/events",
    responses={
        200: {
            "description": "server-sent events until the run finishes",
            "content": event_stream("the event's payload as JSON; see the operation"),
        },
        **NOT_FOUND,
    },
)
async def events(
    run_id: str,
    request: Request,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """The run's conversation as server-sent events: ``run_started``, ``turn_started``,
    ``token`` (``{key, agent, text}``: a model call's text as it is generated, where the
    backend streams; the pieces of a turn join to its completion and all precede its
    ``turn_finished``), ``turn_finished``, ``decision``, ``run_finished``. Reconnect with
    ``Last-Event-ID`` to resume where the stream broke. ``turn_started`` and ``token`` are
    live-only: they have no id and are not replayed."""
    services = get_services(request)
    await owned_run(request, run_id)
    try:
        after = int(last_event_id) if last_event_id else 0
    except ValueError:
        raise HTTPException(422, "Last-Event-ID must be an event id from this stream") from None
    return EventSourceResponse(stream_events(services, run_id, after), ping=15)
