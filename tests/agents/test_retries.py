""":func:`ask` retrying a model call that failed retryably: one stored turn, tokens paid once.

A timeout, a 5xx or a replica restarting is tried again after a short backoff, each retry a
``turn_retry`` event; a refusal, a call whose text already went out, a stopped watch and a
cancelled run are not. The backoff is shrunk here so that no test sleeps for seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import agents.calls
from agents.backends.scripted import ScriptedBackend, Slow
from agents.calls import (
    Agent,
    RetryPolicy,
    RunCancelled,
    RunContext,
    TextWatch,
    TokenBudget,
    Turn,
    ask,
)
from agents.model import ChatMessage, ModelError, ModelRequest, ModelResponse, SamplingParams
from agents.model_map import ModelRouter
from execution.runner import execute_run, submit_run
from store.runs import Store
from tests.conftest import RunHarness
from tests.graphs.test_discussion import AGREE, PROBLEM, ROLES, SOLUTION, WRONG, ceo

SOLVER = Agent(name="Solver", role="solver", model="policy")
ANSWER = "It is \\boxed{5}"  # 3 tokens to the scripted backend
QUICK = RetryPolicy(attempts=3, backoff_s=0.02, backoff_max_s=0.05)


def flaky(reason: str) -> ModelError:
    return ModelError(reason, retryable=True)


class Events:
    """The store's events of one run, in order."""

    def __init__(self, store: Store) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        store.listeners.append(lambda _run, event, payload: self.seen.append((event, payload)))

    def kinds(self) -> list[str]:
        return [event for event, _ in self.seen if event != "token"]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [payload for event, payload in self.seen if event == kind]


async def context(
    store: Store, backend: Any, *, limit: int | None = 100, **fields: Any
) -> RunContext:
    run_id = await submit_run(store, "single", "What is 2+3?", {})
    return RunContext(
        run_id=run_id,
        models=ModelRouter.single(backend),
        recorder=store,
        budget=TokenBudget(limit=limit),
        retry=fields.pop("retry", QUICK),
        **fields,
    )


async def ask_solver(ctx: RunContext, watch: TextWatch | None = None) -> Turn:
    return await ask(
        ctx,
        SOLVER,
        [ChatMessage(role="user", content="What is 2+3?")],
        key="solve/0",
        node="solve",
        params=SamplingParams(max_tokens=64),
        watch=watch,
    )


async def test_a_call_failing_twice_then_answering_is_one_turn_paid_once(store: Store) -> None:
    backend = ScriptedBackend(
        {"solver": [flaky("replica restarting"), flaky("HTTP 503: overloaded"), ANSWER]}
    )
    events = Events(store)
    ctx = await context(store, backend)

    turn = await ask_solver(ctx)

    assert turn.text == ANSWER and turn.record.error is None
    assert [r.params.max_tokens for r in backend.requests] == [64, 64, 64]
    assert (ctx.budget.spent, ctx.budget.reserved) == (3, 0)
    [stored] = await store.turns(ctx.run_id)
    assert (stored.key, stored.completion, stored.error) == ("solve/0", ANSWER, None)
    assert (stored.completion_tokens, stored.prompt_tokens) == (3, 3)
    assert events.kinds() == ["turn_started", "turn_retry", "turn_retry", "turn_finished"]
    retries = events.of("turn_retry")
    assert [(r["key"], r["attempt"], r["attempts"]) for r in retries] == [
        ("solve/0", 1, 3),
        ("solve/0", 2, 3),
    ]
    assert "replica restarting" in retries[0]["error"] and "HTTP 503" in retries[1]["error"]
    # equal jitter: at least half the exponential step, at most the cap
    assert 0.01 <= retries[0]["delay_s"] <= 0.02 and 0.02 <= retries[1]["delay_s"] <= 0.04
    assert (await store.token_totals(ctx.run_id)) == (3, 3)


async def test_a_refused_call_fails_at_once(store: Store) -> None:
    backend = ScriptedBackend({"solver": [ModelError("bad request: no such adapter"), ANSWER]})
    events = Events(store)
    ctx = await context(store, backend)

    with pytest.raises(ModelError, match="bad request: no such adapter") as caught:
        await ask_solver(ctx)

    assert "tries" not in str(caught.value)
    assert len(backend.requests) == 1 and events.of("turn_retry") == []
    [stored] = await store.turns(ctx.run_id)
    assert "no such adapter" in (stored.error or "")
    assert (ctx.budget.spent, ctx.budget.reserved) == (0, 0)


async def test_a_call_failing_every_try_gives_up_with_the_last_reason(store: Store) -> None:
    backend = ScriptedBackend({"solver": [flaky("timeout 1"), flaky("timeout 2"), flaky("gone")]})
    events = Events(store)
    ctx = await context(store, backend)

    with pytest.raises(ModelError) as caught:
        await ask_solver(ctx)

    assert str(caught.value) == "gone (gave up after 3 tries)"
    assert caught.value.retryable is True and caught.value.attempts == 3
    assert len(backend.requests) == 3 and len(events.of("turn_retry")) == 2
    [stored] = await store.turns(ctx.run_id)
    assert stored.error == "ModelError: gone (gave up after 3 tries)"
    assert (ctx.budget.spent, ctx.budget.reserved) == (0, 0)


async def test_a_backend_that_retried_by_itself_is_not_retried_again(store: Store) -> None:
    exhausted = ModelError("endpoint failed after 4 attempt(s)", retryable=True, attempts=4)
    backend = ScriptedBackend({"solver": [exhausted, ANSWER]})
    ctx = await context(store, backend)

    with pytest.raises(ModelError, match=r"failed after 4 attempt\(s\)$"):
        await ask_solver(ctx)
    assert len(backend.requests) == 1


class BreaksAfterText:
    """Types two words, then the connection drops; answers whole on the next call."""

    name = "breaks"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(
        self,
        request: ModelRequest,
        *,
        on_text: Callable[[str], None] | None = None,
        halt: asyncio.Event | None = None,
    ) -> ModelResponse:
        self.calls += 1
        if self.calls > 1:
            return await ScriptedBackend(default_reply=ANSWER).generate(request, on_text=on_text)
        for piece in ("Six ", "times "):
            if on_text is not None:
                on_text(piece)
        raise flaky("stream broke after the first token")

    async def close(self) -> None:
        return None


async def test_a_call_whose_text_went_to_a_watch_is_not_retried(store: Store) -> None:
    backend = BreaksAfterText()
    seen: list[str] = []
    ctx = await context(store, backend)

    with pytest.raises(ModelError, match="stream broke"):
        await ask_solver(ctx, TextWatch(seen.append))

    assert backend.calls == 1 and seen == ["Six ", "times "]


async def test_a_call_whose_text_went_out_as_live_tokens_is_not_retried(store: Store) -> None:
    backend = BreaksAfterText()
    events = Events(store)
    ctx = await context(store, backend, stream_tokens=True)

    with pytest.raises(ModelError, match="stream broke"):
        await ask_solver(ctx)

    assert backend.calls == 1 and events.of("turn_retry") == []
    assert "".join(t["text"] for t in events.of("token")) == "Six times "


async def test_a_call_that_failed_before_any_text_streams_only_the_answer(store: Store) -> None:
    backend = ScriptedBackend({"solver": [flaky("no replica yet"), Slow(ANSWER, 0.05)]})
    events = Events(store)
    seen: list[str] = []
    ctx = await context(store, backend, stream_tokens=True)

    turn = await ask_solver(ctx, TextWatch(seen.append))

    assert turn.text == ANSWER and len(backend.requests) == 2
    assert "".join(seen) == "".join(t["text"] for t in events.of("token")) == ANSWER
    assert events.kinds() == ["turn_started", "turn_retry", "turn_finished"]


async def test_a_stopped_watch_ends_the_call_with_its_failure(store: Store) -> None:
    # the model fails after the caller stopped it: the call is over, not tried again
    backend = ScriptedBackend({"solver": [Slow(flaky("server went away"), 1.0), ANSWER]})
    ctx = await context(store, backend)
    watch = TextWatch()
    asyncio.get_running_loop().call_later(0.05, watch.stop)

    with pytest.raises(ModelError, match="server went away"):
        await ask_solver(ctx, watch)
    assert len(backend.requests) == 1


async def test_a_run_cancelled_during_the_backoff_is_not_retried(store: Store) -> None:
    backend = ScriptedBackend({"solver": [flaky("HTTP 502"), ANSWER]})
    checks = 0

    async def cancelled() -> bool:
        nonlocal checks
        checks += 1
        return checks > 1  # the owner cancels once the first try has failed

    ctx = await context(store, backend, is_cancelled=cancelled)
    with pytest.raises(RunCancelled, match="waited to retry"):
        await ask_solver(ctx)

    assert len(backend.requests) == 1
    [stored] = await store.turns(ctx.run_id)
    assert "HTTP 502" in (stored.error or "")
    assert (ctx.budget.spent, ctx.budget.reserved) == (0, 0)


def test_the_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff_s=0.5, backoff_max_s=2.0)
    for retry, base in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 2.0)]:
        delays = [policy.delay_s(retry) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)
        assert len(set(delays)) > 1
    assert agents.calls.MODEL_RETRY.attempts == 3


# -- whole runs ------------------------------------------------------------------------------


def discussion_backend(failure_rate: float = 0.0, **replies: list[Any]) -> ScriptedBackend:
    """One reply per role, so a retried call answers as its first try would have."""
    script: dict[str, list[Any]] = {
        "ceo": [ceo()],
        "recruiter": [ROLES],
        "solver": [SOLUTION],
        "critic": [AGREE],
        "evaluator": [WRONG],
        **replies,
    }
    return ScriptedBackend(script, failure_rate=failure_rate, seed=3)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs built by the runner use the module's policy: ten tries, no waiting."""
    monkeypatch.setattr(agents.calls, "MODEL_RETRY", RetryPolicy(attempts=10, backoff_s=0.0))


@pytest.mark.usefixtures("quick_retries")
async def test_a_discussion_on_a_model_failing_30_percent_of_calls_succeeds(
    harness: RunHarness,
) -> None:
    clean_id, clean = await harness.run(discussion_backend(), "discussion", PROBLEM, max_rounds=2)
    flaky_model = discussion_backend(failure_rate=0.3)

    run_id, outcome = await harness.run(flaky_model, "discussion", PROBLEM, max_rounds=2)

    assert outcome["status"] == "succeeded", outcome["error"]
    assert (outcome["answer"], outcome["stop_reason"]) == (clean["answer"], clean["stop_reason"])
    turns = await harness.store.turns(run_id)
    clean_turns = await harness.store.turns(clean_id)
    assert sorted(t.key for t in turns) == sorted(t.key for t in clean_turns)
    assert all(t.error is None for t in turns)
    retries = [p for e, p in harness.events if e == "turn_retry"]
    assert len(flaky_model.requests) == len(clean_turns) + len(retries)
    assert len(retries) >= 3  # the faults did happen
    assert await harness.store.token_totals(run_id) == await harness.store.token_totals(clean_id)


@pytest.mark.usefixtures("quick_retries")
async def test_a_run_failed_by_a_call_out_of_tries_resumes_and_remakes_only_that_call(
    harness: RunHarness,
) -> None:
    always = [flaky(f"try {i}") for i in range(1, 11)]
    run_id, first = await harness.run(
        discussion_backend(evaluator=always), "discussion", PROBLEM, max_rounds=1
    )
    assert first["status"] == "failed" and "try 10 (gave up after 10 tries)" in first["error"]
    failed = [t for t in await harness.store.turns(run_id) if t.error]
    assert [t.node for t in failed] == ["evaluate"]

    healthy = discussion_backend()
    outcome = await execute_run(
        run_id,
        store=harness.store,
        models=ModelRouter.single(healthy),
        database_url=harness.database_url,
    )

    assert outcome["status"] == "succeeded" and outcome["answer"] == "42"
    assert [r.tags["role"] for r in healthy.requests] == ["evaluator"]
    turns = await harness.store.turns(run_id)
    assert len({t.key for t in turns}) == len(turns) and all(t.error is None for t in turns)
    run = await harness.store.get_run(run_id)
    assert run.completion_tokens == sum(t.completion_tokens for t in turns)
