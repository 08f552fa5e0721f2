"""Evaluations in the store: find or create one by name, its items, its outcome."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from store.runs import Store
from store.tables.evaluations import Evaluation, EvaluationItem
from store.tables.runs import utcnow


class EvaluationNotFound(LookupError):
    def __str__(self) -> str:
        return f"no evaluation named {self.args[0]!r}"


async def find_evaluation(store: Store, name: str) -> Evaluation | None:
    async with store.session() as session:
        return await session.scalar(select(Evaluation).where(Evaluation.name == name))


async def get_evaluation(store: Store, name: str) -> Evaluation:
    found = await find_evaluation(store, name)
    if found is None:
        raise EvaluationNotFound(name)
    return found


async def list_evaluations(store: Store, *, limit: int = 20) -> list[Evaluation]:
    query = select(Evaluation).order_by(Evaluation.created_at.desc()).limit(limit)
    async with store.session() as session:
        return list((await session.scalars(query)).all())


async def create_evaluation(
    store: Store, *, name: str, kind: str, source: str, config: dict[str, Any]
) -> tuple[Evaluation, bool]:
    """Store a running evaluation; with the name taken, return that one (and False)."""
    row = Evaluation(name=name, kind=kind, source=source, config=config, status="running")
    try:
        async with store.session() as session, session.begin():
            session.add(row)
    except IntegrityError:
        existing = await find_evaluation(store, name)
        if existing is None:
            raise
        return existing, False
    return row, True


async def set_evaluation_status(
    store: Store, evaluation_id: str, status: str, *, summary: dict[str, Any] | None = None
) -> None:
    values: dict[str, Any] = {"status": status}
    if summary is not None:
        values["summary"] = summary
    if status != "running":
        values["finished_at"] = utcnow()
    async with store.session() as session, session.begin():
        await session.execute(
            update(Evaluation).where(Evaluation.id == evaluation_id).values(**values)
        )


async def evaluation_items(store: Store, evaluation_id: str) -> list[EvaluationItem]:
    query = (
        select(EvaluationItem)
        .where(EvaluationItem.evaluation_id == evaluation_id)
        .order_by(EvaluationItem.position.is_(None), EvaluationItem.position, EvaluationItem.id)
    )
    async with store.session() as session:
        return list((await session.scalars(query)).all())


async def add_item(
    store: Store,
    evaluation_id: str,
    *,
    problem_id: str,
    pattern: str,
    run_id: str,
    reference: str | None,
    position: int | None = None,
) -> EvaluationItem:
    """The item of (problem, pattern), created pending with its run unless it exists."""
    row = EvaluationItem(
        evaluation_id=evaluation_id,
        problem_id=problem_id,
        pattern=pattern,
        position=position,
        run_id=run_id,
        reference=reference,
        status="pending",
        prompt_tokens=0,
        completion_tokens=0,
    )
    try:
        async with store.session() as session, session.begin():
            session.add(row)
    except IntegrityError:
        query = select(EvaluationItem).where(
            EvaluationItem.evaluation_id == evaluation_id,
            EvaluationItem.problem_id == problem_id,
            EvaluationItem.pattern == pattern,
        )
        async with store.session() as session:
            existing = await session.scalar(query)
        if existing is None:
            raise
        return existing
    return row


async def attach_run(store: Store, item_id: int, run_id: str) -> None:
    async with store.session() as session, session.begin():
        await session.execute(
            update(EvaluationItem).where(EvaluationItem.id == item_id).values(run_id=run_id)
        )


async def finish_item(store: Store, item_id: int, **values: Any) -> None:
    """Record how an item's run ended: status, correct, answer, reason, tokens, wall time."""
    async with store.session() as session, session.begin():
        await session.execute(
            update(EvaluationItem)
            .where(EvaluationItem.id == item_id)
            .values(**values, finished_at=utcnow())
        )
