"""Running one stored run: the wiring of pattern graph, checkpointer, store and models.

The CLI, the workers and the benchmarks all call :func:`execute_run`; it is the only place
that knows both the graphs and the database.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from agents.calls import RunCancelled, RunContext, TokenBudget
from agents.model import ModelError
from agents.model_map import ModelRouter
from graphs.registry import get_pattern
from services.checkpoints import open_checkpointer
from services.store.models import Run
from services.store.repository import Store
from services.telemetry import observe_run, trace_nodes


class CancelWatch:
    """Whether the run's owner asked it to stop, read from the store at most every
    ``interval_s``: a database read before every turn would cost more than the turn's own
    bookkeeping, and a cancel only needs to land between turns."""

    def __init__(self, store: Store, run_id: str, interval_s: float = 0.5) -> None:
        self.store = store
        self.run_id = run_id
        self.interval_s = interval_s
        self.checked_at = -interval_s
        self.cancelled = False

    async def __call__(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.checked_at >= self.interval_s:
            self.checked_at = now
            self.cancelled = await self.store.cancel_requested(self.run_id)
        return self.cancelled


class RunOutcome(dict[str, Any]):
    """status, answer, stop_reason, error and the graph's final state."""


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


async def execute_run(
    run_id: str,
    *,
    store: Store,
    models: ModelRouter,
    database_url: str,
    stream_tokens: bool = True,
) -> RunOutcome:
    """Run (or resume) a stored run to its end and record how it ended.

    A run that has a checkpoint resumes from it: finished nodes are not re-run, and the node
    that was interrupted replays the turns it had already stored instead of calling the model
    again. A model failure fails the run with the reason; the turns made so far stay stored.
    ``stream_tokens`` publishes the text of every model call as it is generated (live
    ``token`` events; replayed turns have none).
    """
    run = await store.get_run(run_id)
    if run.status in ("succeeded", "cancelled"):
        return RunOutcome(
            status=run.status,
            answer=run.answer,
            stop_reason=run.stop_reason,
            error=run.error,
            state={},
        )
    async with observe_run(store, run) as observed:
        outcome = await _execute(
            run,
            store=store,
            models=models,
            database_url=database_url,
            stream_tokens=stream_tokens,
        )
        observed.finish(outcome)
    return outcome


async def _execute(
    run: Run, *, store: Store, models: ModelRouter, database_url: str, stream_tokens: bool
) -> RunOutcome:
    run_id = run.id
    pattern = get_pattern(run.pattern)
    config = pattern.config_model.model_validate(run.config)
    async with open_checkpointer(database_url) as saver:
        graph = trace_nodes(pattern.build_graph()).compile(checkpointer=saver, name=pattern.name)
        thread: dict[str, Any] = {
            "configurable": {"thread_id": run_id},
            "recursion_limit": pattern.recursion_limit(config),
        }
        checkpoint = await saver.aget_tuple(thread)
        resuming = checkpoint is not None
        _, spent = await store.token_totals(run_id)
        context = RunContext(
            run_id=run_id,
            models=models,
            recorder=store,
            budget=TokenBudget(limit=config.token_budget, spent=spent),
            config=config,
            resuming=resuming or spent > 0,
            is_cancelled=CancelWatch(store, run_id),
            stream_tokens=stream_tokens,
        )
        await store.mark_running(run_id)
        await store.emit(run_id, "run_started", {"pattern": pattern.name, "resuming": resuming})
        initial = None if resuming else pattern.initial_state(run.problem, config)
        try:
            state = await graph.ainvoke(initial, thread, context=context, durability="sync")
        except RunCancelled as exc:
            return await _finish(store, run_id, "cancelled", error=str(exc))
        except ModelError as exc:
            return await _finish(store, run_id, "failed", error=f"model call failed: {exc}")
        except Exception as exc:  # the run fails with its reason; the traceback goes to logs
            traceback.print_exc()
            return await _finish(store, run_id, "failed", error=f"{type(exc).__name__}: {exc}")
    return await _finish(
        store,
        run_id,
        "succeeded",
        answer=state.get("answer"),
        stop_reason=state.get("stop_reason"),
        state=state,
    )


async def _finish(
    store: Store,
    run_id: str,
    status: str,
    *,
    answer: str | None = None,
    stop_reason: str | None = None,
    error: str | None = None,
    state: dict[str, Any] | None = None,
) -> RunOutcome:
    await store.finish_run(
        run_id, status=status, answer=answer, stop_reason=stop_reason, error=error
    )
    outcome = RunOutcome(
        status=status, answer=answer, stop_reason=stop_reason, error=error, state=state or {}
    )
    await store.emit(run_id, "run_finished", {k: v for k, v in outcome.items() if k != "state"})
    return outcome
