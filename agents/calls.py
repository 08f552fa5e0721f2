"""An agent is a role bound to a model; :func:`ask` is the one way a graph calls it.

``ask`` does everything a model call owes the rest of the system, in one place: it takes the
call's tokens out of the run's budget *before* calling (so no run spends more than it was
given), replays a turn already stored when a run resumes (so a killed worker neither loses nor
duplicates a turn), calls the backend, parses the reply, and records the turn. When the run
asks for it (``RunContext.stream_tokens``), the reply's text also goes out as it is generated,
as live ``token`` events, all of them before the turn's ``turn_finished``. A caller that
passes a :class:`TextWatch` also sees the text as it is generated and may stop the call early
(the turn then keeps the text generated so far, with finish reason ``"cancelled"``).

A call that fails with a retryable :class:`ModelError` (a timeout, a 5xx, a replica
restarting) is tried again, up to :class:`RetryPolicy`'s ``attempts`` in all (those a backend
made by itself count), after an exponential backoff with jitter, each retry announced as a
``turn_retry`` event. The call keeps its token reservation meanwhile, and only its last attempt
becomes the stored turn. A call is not retried once any of its text has gone out (as live
tokens or to a watch), nor once its watch is stopped or its run cancelled: the reader of that
text would see it restart mid-way, and the caller or the owner asked for an end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.genai_spans import mark_replayed, traced_ask, traced_generate
from agents.model import (
    ChatMessage,
    Completion,
    ModelBackend,
    ModelError,
    ModelRequest,
    ModelResponse,
    SamplingParams,
)
from roles.outcomes import Outcome
from roles.parsing import Parsed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Agent:
    """Who speaks: a name in the transcript, a role from the papers, a logical model name."""

    name: str
    role: str
    model: str
    description: str | None = None


class TurnRecord(BaseModel):
    """Everything stored about one model call."""

    run_id: str
    key: str = Field(description="unique within the run; a resumed run replays by it")
    node: str
    round: int = 0
    agent: str
    role: str
    role_description: str | None = None
    model: str
    adapter: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    messages: list[ChatMessage]
    completion: str = ""
    finish_reason: str | None = None
    parsed: dict[str, Any] | None = None
    parse_ok: bool = True
    parse_error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    completion_token_ids: list[int] | None = Field(
        None,
        description="the recorded sample's generated tokens, all completion_tokens of them, "
        "where the backend returned them (the text may leave some out: a stop string)",
    )
    completion_logprobs: list[float] | None = Field(
        None,
        description="the model's log-probability of each of completion_token_ids, for training "
        "without re-tokenizing; only ever stored together with them",
    )


class Recorder(Protocol):
    """Where turns and live events go; the store implements it, tests may too."""

    async def record_turn(self, turn: TurnRecord) -> None:
        """Store the turn and announce it (the run's ``turn_finished`` event)."""
        ...

    async def find_turn(self, run_id: str, key: str) -> TurnRecord | None: ...

    async def emit(self, run_id: str, event: str, payload: dict[str, Any]) -> None: ...

    async def record_outcome(self, run_id: str, outcome: Outcome) -> None:
        """Store a structured result (see :mod:`roles.outcomes`) and announce it (``outcome``)."""
        ...


class BudgetExhausted(Exception):
    """The run's token budget cannot pay for another useful call."""


@dataclass
class TokenBudget:
    """Generated tokens a run may spend, counted across all agents and parallel calls.

    A call reserves its ``max_tokens`` before it starts and gives back what it did not use,
    so parallel branches can never overspend together.
    """

    limit: int | None
    spent: int = 0
    reserved: int = 0
    min_call_tokens: int = 8
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def remaining(self) -> int | None:
        if self.limit is None:
            return None
        return max(0, self.limit - self.spent - self.reserved)

    async def reserve(self, wanted: int) -> int:
        async with self._lock:
            remaining = self.remaining
            granted = wanted if remaining is None else min(wanted, remaining)
            if granted < min(wanted, self.min_call_tokens):
                raise BudgetExhausted(
                    f"token budget of {self.limit} spent ({self.spent} used, "
                    f"{self.reserved} reserved by calls in flight)"
                )
            self.reserved += granted
            return granted

    async def settle(self, reserved: int, used: int) -> None:
        async with self._lock:
            self.reserved -= reserved
            self.spent += used


class ModelSource(Protocol):
    def get(self, logical_name: str) -> ModelBackend: ...


class RetryPolicy(BaseModel):
    """How :func:`ask` retries a model call that failed with a retryable error."""

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(3, ge=1, description="most tries of one call, a backend's own included")
    backoff_s: float = Field(0.5, ge=0.0, description="wait before the first retry; doubles after")
    backoff_max_s: float = Field(8.0, ge=0.0, description="longest single wait between tries")

    def delay_s(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based), with "equal jitter": half fixed,
        half random, so calls that failed together (a replica restarting) do not all come
        back together."""
        base = min(self.backoff_max_s, self.backoff_s * 2 ** (retry - 1))
        return base / 2 + random.uniform(0.0, base / 2)


MODEL_RETRY = RetryPolicy()
"""The policy of runs whose context names none; tests shrink its backoff."""


@dataclass
class RunContext:
    """What a graph's nodes get through LangGraph's runtime context: never checkpointed."""

    run_id: str
    models: ModelSource
    recorder: Recorder
    budget: TokenBudget
    config: Any = None
    resuming: bool = False
    is_cancelled: Callable[[], Awaitable[bool]] | None = None
    stream_tokens: bool = False
    """Publish each call's text as it is generated (live ``token`` events), where the
    backend can stream it."""
    adapters: dict[str, str] = field(default_factory=dict)
    """Logical model name -> the LoRA adapter this run's calls to it name."""
    retry: RetryPolicy | None = None
    """How failed calls are retried; None: :data:`MODEL_RETRY`."""


class RunCancelled(Exception):
    """The run was cancelled by its owner; raised between turns."""


class TokenPublisher:
    """Publishes one model call's text pieces as the run's live ``token`` events.

    A backend hands pieces to :meth:`put` synchronously, mid-generation, while publishing
    awaits the recorder (a Redis round trip between processes), so the two are decoupled:
    pieces are queued and one task per call publishes them, in order. When that task falls
    behind, the pieces waiting go out as one event, so a slow event path means fewer, longer
    events rather than a growing lag. :meth:`close` waits until every piece is out, which puts
    all of a turn's tokens before its ``turn_finished``.

    Tokens are live-only and best-effort: if publishing one fails, the rest of this call's
    pieces are dropped (logged once) and the turn goes on; its ``turn_finished`` carries the
    whole text anyway.
    """

    def __init__(self, recorder: Recorder, run_id: str, payload: dict[str, Any]) -> None:
        self._recorder = recorder
        self._run_id = run_id
        self._payload = payload
        self._pending: list[str] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._failed = False
        self._task: asyncio.Task[None] | None = None  # started by the first piece

    def put(self, piece: str) -> None:
        """Queue a piece; never blocks (the backend's ``on_text``)."""
        if not piece or self._failed or self._closing:
            return
        self._pending.append(piece)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._publish(), name=f"tokens-{self._run_id}-{self._payload.get('key')}"
            )
        self._wakeup.set()

    async def _publish(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            text = "".join(self._pending)
            self._pending.clear()
            try:
                await self._recorder.emit(self._run_id, "token", {**self._payload, "text": text})
            except Exception:
                log.warning(
                    "run %s: could not publish token events of turn %s; dropping the rest",
                    self._run_id,
                    self._payload.get("key"),
                    exc_info=True,
                )
                self._failed = True
                self._pending.clear()
                return

    async def close(self) -> None:
        """Wait until every piece queued so far is published; later ones are ignored."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    def cancel(self) -> None:
        """Drop what is still queued (the call itself was cancelled)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()


class TextWatch:
    """Follows one call's text as it is generated and can end the call early.

    Given to :func:`ask`, ``on_text`` receives each piece of the reply as the backend produces
    it (on the event loop; it must neither block nor raise, and an exception it raises is
    logged and dropped), and :meth:`stop` asks the backend to end the call. A stopped call
    returns normally: its turn is recorded with the text generated so far, finish reason
    ``"cancelled"``, and every token the model generated counted against the run's budget.
    A stop that comes after the reply is complete changes nothing. A turn replayed on resume
    sends no pieces; its stored finish reason says whether it was stopped.
    """

    def __init__(self, on_text: Callable[[str], None] | None = None) -> None:
        self.on_text = on_text
        self.halt = asyncio.Event()

    def stop(self) -> None:
        self.halt.set()

    @property
    def stopped(self) -> bool:
        return self.halt.is_set()

    def piece(self, piece: str) -> None:
        if self.on_text is None:
            return
        try:
            self.on_text(piece)
        except Exception:  # a broken watcher must not break the backend delivering pieces
            log.exception("a text watcher failed on a piece; the call goes on")


@dataclass
class Turn:
    """What a node gets back from :func:`ask`."""

    text: str
    parsed: Any
    record: TurnRecord


@traced_ask(expected=(BudgetExhausted, RunCancelled))
async def ask(
    ctx: RunContext,
    agent: Agent,
    messages: list[ChatMessage],
    *,
    key: str,
    node: str,
    round: int = 0,
    params: SamplingParams | None = None,
    parse: Callable[[str], Any] | None = None,
    parse_completion: Callable[[Completion], Any] | None = None,
    watch: TextWatch | None = None,
) -> Turn:
    """Call ``agent``'s model once and record the turn; see the module docstring.

    ``parse_completion`` replaces ``parse`` where a parser needs more than the text (the
    log-probabilities of sample 0): a replayed turn gives it the stored text and finish
    reason, with no log-probabilities, so a caller that decided on them reads the decision
    back from ``turn.record.parsed``. ``watch`` follows the text and may stop the call.
    """
    if parse is not None and parse_completion is not None:
        raise ValueError("give ask() either parse or parse_completion, not both")
    if ctx.resuming:
        stored = await ctx.recorder.find_turn(ctx.run_id, key)
        if stored is not None and stored.error is None:
            # Its tokens are already in the budget the runner rebuilt from the store.
            mark_replayed(key)
            if parse_completion is not None:
                parsed = parse_completion(_stored_completion(stored))
            else:
                parsed = parse(stored.completion) if parse else None
            return Turn(text=stored.completion, parsed=parsed, record=stored)
    if ctx.is_cancelled is not None and await ctx.is_cancelled():
        raise RunCancelled(f"cancelled before turn {key}")

    params = params or SamplingParams()
    granted = await ctx.budget.reserve(params.max_tokens)
    params = params.model_copy(update={"max_tokens": granted})
    backend = ctx.models.get(agent.model)
    record = TurnRecord(
        run_id=ctx.run_id,
        key=key,
        node=node,
        round=round,
        agent=agent.name,
        role=agent.role,
        role_description=agent.description,
        model=backend.name,
        params=params.model_dump(exclude_defaults=False),
        messages=messages,
    )
    await ctx.recorder.emit(
        ctx.run_id, "turn_started", {"key": key, "agent": agent.name, "role": agent.role}
    )
    request = ModelRequest(
        messages=messages,
        params=params,
        adapter=ctx.adapters.get(agent.model),
        tags={"run": ctx.run_id, "agent": agent.name, "role": agent.role},
    )
    tokens = None
    if ctx.stream_tokens:
        tokens = TokenPublisher(ctx.recorder, ctx.run_id, {"key": key, "agent": agent.name})
    try:
        return await _call(
            ctx, backend, request, record, granted, parse, parse_completion, tokens, watch
        )
    finally:
        if tokens is not None:
            tokens.cancel()  # a no-op once closed; a call cancelled mid-way drops the rest


async def _call(
    ctx: RunContext,
    backend: ModelBackend,
    request: ModelRequest,
    record: TurnRecord,
    granted: int,
    parse: Callable[[str], Any] | None,
    parse_completion: Callable[[Completion], Any] | None,
    tokens: TokenPublisher | None,
    watch: TextWatch | None,
) -> Turn:
    """The model call of :func:`ask` and its recorded turn, whatever the outcome."""
    started = time.perf_counter()
    try:
        response = await _generate(ctx, backend, request, record, tokens, watch)
    except BaseException as exc:
        record.latency_s = time.perf_counter() - started
        record.error = f"{type(exc).__name__}: {exc}"
        await ctx.budget.settle(granted, 0)
        if not isinstance(exc, asyncio.CancelledError):
            if tokens is not None:
                await tokens.close()  # what streamed before the failure precedes the turn
            await ctx.recorder.record_turn(record)
        if isinstance(exc, ModelError | RunCancelled | asyncio.CancelledError):
            raise
        raise ModelError(record.error) from exc
    completion = response.completions[0]
    used = completion.completion_tokens
    await ctx.budget.settle(granted, used)
    record.model = response.model
    record.adapter = response.adapter
    record.completion = completion.text
    record.finish_reason = completion.finish_reason
    record.prompt_tokens = response.prompt_tokens
    record.completion_tokens = used
    record.latency_s = response.latency_s
    record.completion_token_ids, record.completion_logprobs = _completion_tokens(completion)
    if parse_completion is not None:
        parsed = parse_completion(completion)
    else:
        parsed = parse(completion.text) if parse else None
    if isinstance(parsed, BaseModel):
        record.parsed = parsed.model_dump()
    if isinstance(parsed, Parsed):
        record.parse_ok = parsed.parse_ok
        record.parse_error = parsed.parse_error
    if tokens is not None:
        await tokens.close()  # every token event before the turn's turn_finished
    await ctx.recorder.record_turn(record)
    return Turn(text=completion.text, parsed=parsed, record=record)


async def _generate(
    ctx: RunContext,
    backend: ModelBackend,
    request: ModelRequest,
    record: TurnRecord,
    tokens: TokenPublisher | None,
    watch: TextWatch | None,
) -> ModelResponse:
    """The backend's reply, retried as the module docstring says; raises the last failure.

    The call's reservation stays held between tries, so no parallel branch can take the
    tokens a retry needs, and nothing is recorded here: the caller records the one turn.
    """
    policy = ctx.retry or MODEL_RETRY
    sink = _text_sink(tokens, watch)
    tried = 0
    while True:
        delivery = _Delivery(sink)
        try:
            return await traced_generate(
                backend,
                request,
                conversation_id=ctx.run_id,
                on_text=delivery.put if sink is not None else None,
                halt=watch.halt if watch is not None else None,
            )
        except ModelError as exc:
            retried = tried > 0
            tried += max(1, exc.attempts)
            halted = watch is not None and watch.stopped
            if not exc.retryable or tried >= policy.attempts or delivery.delivered or halted:
                if not retried:
                    raise
                raise ModelError(
                    f"{exc} (gave up after {tried} tries)", retryable=exc.retryable, attempts=tried
                ) from exc
            failure = exc
        delay = policy.delay_s(tried)
        log.warning(
            "run %s: turn %s failed on try %d of %d (%s); retrying in %.2fs",
            ctx.run_id,
            record.key,
            tried,
            policy.attempts,
            failure,
            delay,
        )
        await ctx.recorder.emit(
            ctx.run_id,
            "turn_retry",
            {
                "key": record.key,
                "agent": record.agent,
                "role": record.role,
                "attempt": tried,
                "attempts": policy.attempts,
                "error": f"{type(failure).__name__}: {failure}",
                "delay_s": round(delay, 3),
            },
        )
        if watch is None:
            await asyncio.sleep(delay)
        else:  # a stop during the wait ends the call at once, with the failure it had
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.halt.wait(), delay)
            if watch.stopped:
                raise failure
        if ctx.is_cancelled is not None and await ctx.is_cancelled():
            raise RunCancelled(
                f"cancelled while turn {record.key} waited to retry "
                f"({type(failure).__name__}: {failure})"
            ) from failure


class _Delivery:
    """Passes a call's pieces on and remembers whether any text went out."""

    def __init__(self, sink: Callable[[str], None] | None) -> None:
        self._sink = sink
        self.delivered = False

    def put(self, piece: str) -> None:
        if piece:
            self.delivered = True
        if self._sink is not None:
            self._sink(piece)


def _text_sink(
    tokens: TokenPublisher | None, watch: TextWatch | None
) -> Callable[[str], None] | None:
    """Where a call's pieces go: live token events, the caller's watch, both or neither."""
    if tokens is None and watch is None:
        return None
    if watch is None:
        return tokens.put if tokens is not None else None
    if tokens is None:
        return watch.piece
    publish, follow = tokens.put, watch.piece

    def both(piece: str) -> None:
        publish(piece)
        follow(piece)

    return both


def _completion_tokens(completion: Completion) -> tuple[list[int] | None, list[float] | None]:
    """The ids and log-probs a turn keeps of its completion, or None where they would not
    describe exactly the tokens generated and counted: a trainer given them trains on those
    tokens, so wrong ones are worse than none (it then re-tokenizes the text)."""
    ids, logprobs = completion.token_ids, completion.token_logprobs
    if ids is None or len(ids) != completion.completion_tokens:
        return None, None
    if logprobs is None or len(logprobs) != len(ids):
        return list(ids), None
    if not all(math.isfinite(value) for value in logprobs):  # JSON (and a trainer) needs them
        return list(ids), None
    return list(ids), list(logprobs)


def _stored_completion(stored: TurnRecord) -> Completion:
    """A stored turn as the completion a parser sees on replay (log-probabilities are not
    stored)."""
    reason = stored.finish_reason if stored.finish_reason in _FINISH_REASONS else "stop"
    return Completion(
        text=stored.completion,
        finish_reason=reason,  # type: ignore[arg-type]
        completion_tokens=stored.completion_tokens,
    )


_FINISH_REASONS = ("stop", "length", "cancelled", "error")
