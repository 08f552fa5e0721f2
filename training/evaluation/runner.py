"""Running an evaluation's jobs as stored runs, resumably, ``concurrency`` at a time; what
``thinktank eval`` and ``thinktank eval-critic`` share."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, NamedTuple

from agents.model_map import ModelRouter
from execution.batches import bounded
from execution.runner import RunInterrupted, create_run, execute_run
from store import evaluations as repo
from store.runs import Store
from store.tables.evaluations import Evaluation, EvaluationItem
from training.evaluation.records import (
    EvaluationError,
    ItemResult,
    Job,
    Progress,
    ProgressCallback,
    Scorer,
)
from training.problems import Problem

log = logging.getLogger(__name__)


def _run_key(evaluation_id: str, job: Job) -> str:
    key = f"eval:{evaluation_id}:{job.pattern}:{job.problem.id}"
    if len(key) <= 200:
        return key
    digest = hashlib.sha256(job.problem.id.encode()).hexdigest()
    return f"eval:{evaluation_id}:{job.pattern}:{digest}"


async def open_evaluation(
    store: Store, *, name: str, kind: str, source: str, identity: dict[str, Any]
) -> Evaluation:
    """The evaluation called ``name``: created, or found with the same settings to resume."""
    evaluation, created = await repo.create_evaluation(
        store, name=name, kind=kind, source=source, config=identity
    )
    differs = [] if created else _other_settings(evaluation, kind, identity)
    if differs:
        raise EvaluationError(
            f"an evaluation named {name!r} already exists with other settings "
            f"({', '.join(differs)}); rerun it with its own settings to resume it, or choose "
            "another --name"
        )
    return evaluation


def _other_settings(evaluation: Evaluation, kind: str, identity: dict[str, Any]) -> list[str]:
    """The settings in which a stored evaluation differs from ``identity``; none if alike."""
    if evaluation.kind == kind and evaluation.config == identity:
        return []
    stored = evaluation.config if evaluation.kind == kind else {"kind": evaluation.kind}
    return sorted(
        key
        for key in {*stored, *identity}
        if stored.get(key) != identity.get(key) and key != "kind"
    ) or ["kind"]


class Evaluated(NamedTuple):
    evaluation: Evaluation
    items: list[ItemResult]
    status: str
    """finished, or interrupted while some item stays pending"""


async def evaluate_jobs(
    store: Store,
    models: ModelRouter,
    database_url: str,
    jobs: list[Job],
    *,
    name: str,
    kind: str,
    source: str,
    identity: dict[str, Any],
    score: Scorer,
    concurrency: int,
    on_progress: ProgressCallback | None = None,
) -> Evaluated:
    """Open (or resume) the evaluation ``name`` and run its jobs; the caller scores the items
    and stores the summary with :func:`repo.set_evaluation_status`."""
    evaluation = await open_evaluation(
        store, name=name, kind=kind, source=source, identity=identity
    )
    items = await run_jobs(
        store,
        models,
        database_url,
        evaluation,
        jobs,
        score=score,
        concurrency=concurrency,
        on_progress=on_progress,
    )
    return Evaluated(evaluation, items, _status(items))


async def stored_jobs(
    store: Store, jobs: list[Job], *, name: str, kind: str, identity: dict[str, Any]
) -> Evaluated:
    """The evaluation ``name`` as far as it has run, running nothing: each job's stored item,
    a pending one where the evaluation never got that far."""
    evaluation = await repo.find_evaluation(store, name)
    if evaluation is None:
        raise EvaluationError(f"no evaluation named {name!r} has run yet")
    if _other_settings(evaluation, kind, identity):
        raise EvaluationError(f"the evaluation named {name!r} ran with other settings")
    stored = {
        (row.problem_id, row.pattern): row
        for row in await repo.evaluation_items(store, evaluation.id)
    }
    items = []
    for job in jobs:
        row = stored.get((job.problem.id, job.pattern))
        items.append(ItemResult.from_row(row) if row else _pending(job, stored, reason=None))
    return Evaluated(evaluation, items, _status(items))


def _status(items: list[ItemResult]) -> str:
    return "finished" if all(item.ended for item in items) else "interrupted"


async def run_jobs(
    store: Store,
    models: ModelRouter,
    database_url: str,
    evaluation: Evaluation,
    jobs: list[Job],
    *,
    score: Scorer,
    concurrency: int,
    on_progress: ProgressCallback | None = None,
) -> list[ItemResult]:
    """Run the jobs not done yet, ``concurrency`` at a time; the results of all, in order.

    Items whose run succeeded (or was cancelled) are taken as they are; the others run, or
    resume, their run. An interrupted run stays pending, to be resumed by the next call.
    """
    stored = {
        (row.problem_id, row.pattern): row
        for row in await repo.evaluation_items(store, evaluation.id)
    }
    results: dict[tuple[str, str], ItemResult] = {}
    todo: list[tuple[int, Job]] = []
    for position, job in enumerate(jobs):
        row = stored.get((job.problem.id, job.pattern))
        if row is not None and row.status in ("succeeded", "cancelled"):
            results[(job.problem.id, job.pattern)] = ItemResult.from_row(row)
        else:
            todo.append((position, job))
    progress = Progress(name=evaluation.name, total=len(jobs), resumed=len(results))
    for result in results.values():
        _count(progress, result)
    if on_progress:
        on_progress(progress)

    async def run_one(todo_item: tuple[int, Job]) -> None:
        position, job = todo_item
        try:
            result = await _run_job(
                store, models, database_url, evaluation, job, position, stored, score
            )
        except Exception as exc:  # a bug or an outage: the item stays pending
            log.exception("%s/%s could not be evaluated", job.pattern, job.problem.id)
            result = _pending(job, stored, reason=f"not evaluated: {exc}")
        results[(job.problem.id, job.pattern)] = result
        if result.ended:
            _count(progress, result)
        progress.last = result
        if on_progress:
            on_progress(progress)

    await repo.set_evaluation_status(store, evaluation.id, "running")
    try:
        await bounded(todo, run_one, concurrency=concurrency)
    except BaseException:
        # Ctrl-C, or a bug: what ended is stored; the rest resumes on the next call.
        await asyncio.shield(repo.set_evaluation_status(store, evaluation.id, "interrupted"))
        raise
    return [results[(job.problem.id, job.pattern)] for job in jobs]


def _count(progress: Progress, result: ItemResult) -> None:
    progress.ended += 1
    progress.correct += bool(result.correct)
    progress.failed += result.status == "failed"


async def _run_job(
    store: Store,
    models: ModelRouter,
    database_url: str,
    evaluation: Evaluation,
    job: Job,
    position: int,
    stored: dict[tuple[str, str], EvaluationItem],
    score: Scorer,
) -> ItemResult:
    row = stored.get((job.problem.id, job.pattern))
    if row is None or row.run_id is None:
        run, _ = await create_run(
            store,
            job.pattern,
            job.problem.problem,
            job.config,
            idempotency_key=_run_key(evaluation.id, job),
        )
        if row is None:
            row = await repo.add_item(
                store,
                evaluation.id,
                problem_id=job.problem.id,
                pattern=job.pattern,
                run_id=run.id,
                reference=_reference(job.problem),
                position=position,
            )
        if row.run_id != run.id:  # its old run was deleted (the key is SET NULL)
            await repo.attach_run(store, row.id, run.id)
            row.run_id = run.id
    run_id = row.run_id
    started = time.monotonic()
    try:
        await execute_run(
            run_id, store=store, models=models, database_url=database_url, stream_tokens=False
        )
    except RunInterrupted as exc:
        log.warning("run %s of %s/%s was interrupted: %s", run_id, job.pattern, job.problem.id, exc)
        return ItemResult.from_row(row).model_copy(update={"reason": f"interrupted: {exc}"})
    wall_s = time.monotonic() - started
    run = await store.get_run(run_id)
    if run.status not in ("succeeded", "failed", "cancelled"):
        # another process holds the run (a second evaluation of the same name): not ours to score
        return ItemResult.from_row(row).model_copy(update={"reason": f"run is {run.status}"})
    # sympy can take a second on a hard answer: off the loop, so concurrent runs go on
    correct, reason = await asyncio.to_thread(score, job, run)
    values = {
        "status": run.status,
        "correct": correct,
        "answer": run.answer,
        "reason": reason,
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "wall_s": wall_s,
    }
    await repo.finish_item(store, row.id, **values)
    return ItemResult(
        problem_id=job.problem.id,
        pattern=job.pattern,
        run_id=run_id,
        reference=row.reference,
        **values,
    )


def _pending(
    job: Job, stored: dict[tuple[str, str], EvaluationItem], *, reason: str | None
) -> ItemResult:
    row = stored.get((job.problem.id, job.pattern))
    return ItemResult(
        problem_id=job.problem.id,
        pattern=job.pattern,
        run_id=row.run_id if row else None,
        status="pending",
        correct=None,
        answer=None,
        reference=_reference(job.problem),
        reason=reason,
        prompt_tokens=0,
        completion_tokens=0,
        wall_s=None,
    )


def _reference(problem: Problem) -> str | None:
    if problem.first_error_step is not None:
        return str(problem.first_error_step)
    return problem.answer
