"""Model versions and training runs in the store: reserve a name, track a run, register a result.

Names are versioned (``policy-sft-v3``: role, kind, version) and never reused: a name is
reserved by the training run that will produce it, and once registered its model version is
never replaced. Adapters live under the data directory, ``models/adapters/<name>/``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from agents.paths import data_dir
from store.runs import Store
from store.tables.runs import utcnow
from store.tables.training import ModelVersion, TrainingRun

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_VERSION_RE = re.compile(r"(.+)-v(\d+)")
_AUTO_NAME_TRIES = 20


class ModelVersionExists(ValueError):
    pass


class ModelVersionNotFound(LookupError):
    def __str__(self) -> str:
        return f"no model version named {self.args[0]!r} (see `thinktank models list`)"


class TrainingRunNotFound(LookupError):
    def __str__(self) -> str:
        return f"no training run with id {self.args[0]!r}"


def adapters_dir() -> Path:
    return data_dir() / "models" / "adapters"


def adapter_dir(name: str) -> Path:
    return adapters_dir() / check_model_name(name)


def training_dir(run_id: str) -> Path:
    """A training run's working files: checkpoints, the final adapter before it is published."""
    return data_dir() / "training" / run_id


def check_model_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"bad model version name {name!r}: 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


async def _taken_names(store: Store, prefix: str) -> set[str]:
    like = f"{prefix}-v%"
    async with store.session() as session:
        versions = await session.scalars(
            select(ModelVersion.name).where(ModelVersion.name.like(like))
        )
        reserved = await session.scalars(
            select(TrainingRun.model_name).where(TrainingRun.model_name.like(like))
        )
        taken = set(versions.all()) | set(reserved.all())
    # an adapter folder with no row (a database reset) still owns its name
    if adapters_dir().is_dir():
        taken |= {path.name for path in adapters_dir().glob(f"{prefix}-v*")}
    return taken


async def next_version_name(store: Store, prefix: str) -> str:
    """``<prefix>-v<N>`` with N one past the highest version registered or reserved."""
    highest = 0
    for name in await _taken_names(store, prefix):
        match = _VERSION_RE.fullmatch(name)
        if match and match.group(1) == prefix:
            highest = max(highest, int(match.group(2)))
    return check_model_name(f"{prefix}-v{highest + 1}")


async def name_is_free(store: Store, name: str) -> bool:
    async with store.session() as session:
        version = await session.scalar(select(ModelVersion.id).where(ModelVersion.name == name))
        run = await session.scalar(select(TrainingRun.id).where(TrainingRun.model_name == name))
    return version is None and run is None and not adapter_dir(name).exists()


# --- training runs -------------------------------------------------------------------------


async def find_training_run(store: Store, idempotency_key: str) -> TrainingRun | None:
    async with store.session() as session:
        return await session.scalar(
            select(TrainingRun).where(TrainingRun.idempotency_key == idempotency_key)
        )


async def get_training_run(store: Store, run_id: str) -> TrainingRun:
    async with store.session() as session:
        row = await session.get(TrainingRun, run_id)
    if row is None:
        raise TrainingRunNotFound(run_id)
    return row


async def training_runs_and_versions(
    store: Store, run_ids: Collection[str]
) -> dict[str, tuple[TrainingRun, ModelVersion | None]]:
    """The training runs of ``run_ids`` that exist, each with the version it registered (None
    until it has), in two queries whatever their number (a campaign's page reads every round's)."""
    if not run_ids:
        return {}
    async with store.session() as session:
        runs = (
            await session.scalars(select(TrainingRun).where(TrainingRun.id.in_(set(run_ids))))
        ).all()
        names = {run.model_name for run in runs}
        versions = {
            v.name: v
            for v in (
                await session.scalars(select(ModelVersion).where(ModelVersion.name.in_(names)))
            ).all()
        }
    return {run.id: (run, versions.get(run.model_name)) for run in runs}


async def list_training_runs(
    store: Store, *, limit: int = 20, kind: str | None = None
) -> list[TrainingRun]:
    query = select(TrainingRun).order_by(TrainingRun.created_at.desc()).limit(limit)
    if kind is not None:
        query = query.where(TrainingRun.kind == kind)
    async with store.session() as session:
        return list((await session.scalars(query)).all())


async def create_training_run(
    store: Store,
    *,
    kind: str,
    config: dict[str, Any],
    model_name: str | None,
    name_prefix: str,
    idempotency_key: str | None = None,
) -> tuple[TrainingRun, bool]:
    """Store a queued training run that reserves its model name; returns it and whether it is
    new. With an idempotency key already used, the run that holds it is returned instead.

    ``model_name`` None picks the next free ``<name_prefix>-vN``; an explicit name that is taken
    (registered, reserved by another run, or its adapter folder exists) is refused.
    """
    if idempotency_key is not None:
        existing = await find_training_run(store, idempotency_key)
        if existing is not None:
            return existing, False
    for _ in range(_AUTO_NAME_TRIES):
        name = (
            check_model_name(model_name)
            if model_name is not None
            else await next_version_name(store, name_prefix)
        )
        if not await name_is_free(store, name):
            if model_name is not None:
                raise ModelVersionExists(
                    f"model version name {name!r} is taken (registered, reserved by another "
                    "training run, or its adapter folder exists); names are never reused: "
                    "choose another --name"
                )
            continue  # an orphan adapter folder holds this version; try the next one
        row = TrainingRun(
            kind=kind,
            model_name=name,
            config={**config, "name": name},
            status="queued",
            progress={},
            idempotency_key=idempotency_key,
        )
        try:
            async with store.session() as session, session.begin():
                session.add(row)
        except IntegrityError:
            if idempotency_key is not None:
                raced = await find_training_run(store, idempotency_key)
                if raced is not None:
                    return raced, False
            if model_name is not None:
                raise ModelVersionExists(f"model version name {name!r} is taken") from None
            continue  # another run reserved the same next version a moment ago
        return row, True
    raise ModelVersionExists(f"could not reserve a free name for {name_prefix!r}")


async def update_training_run(store: Store, run_id: str, **values: Any) -> None:
    async with store.session() as session, session.begin():
        result = await session.execute(
            update(TrainingRun).where(TrainingRun.id == run_id).values(**values)
        )
    if result.rowcount == 0:
        raise TrainingRunNotFound(run_id)


async def record_launch(
    store: Store, run_id: str, *, pid: int | None, host: str, launcher: str
) -> None:
    """Note the process just started for a run, unless that process already says it runs."""
    async with store.session() as session, session.begin():
        await session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.status != "running")
            .values(
                status="queued", pid=pid, host=host, launcher=launcher, error=None, finished_at=None
            )
        )


async def mark_training_started(
    store: Store, run_id: str, *, pid: int, host: str, launcher: str
) -> None:
    now = utcnow()
    await update_training_run(
        store,
        run_id,
        status="running",
        pid=pid,
        host=host,
        launcher=launcher,
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        error=None,
    )


async def record_progress(store: Store, run_id: str, progress: dict[str, Any]) -> None:
    await update_training_run(store, run_id, progress=progress, heartbeat_at=utcnow())


async def finish_training_run(
    store: Store, run_id: str, status: str, *, error: str | None = None
) -> None:
    await update_training_run(store, run_id, status=status, error=error, finished_at=utcnow())


# --- model versions ------------------------------------------------------------------------


async def register_model_version(
    store: Store,
    *,
    name: str,
    kind: str,
    role: str,
    base_model: str,
    adapter_path: Path,
    dataset_hash: str,
    metrics: dict[str, Any],
    config: dict[str, Any],
    training_run_id: str | None = None,
    parent: str | None = None,
) -> ModelVersion:
    """Add a model version; a name already registered is refused, never overwritten."""
    row = ModelVersion(
        name=check_model_name(name),
        kind=kind,
        role=role,
        base_model=base_model,
        adapter_path=str(adapter_path),
        parent=parent,
        dataset_hash=dataset_hash,
        metrics=metrics,
        config=config,
        training_run_id=training_run_id,
    )
    try:
        async with store.session() as session, session.begin():
            session.add(row)
    except IntegrityError:
        raise ModelVersionExists(
            f"model version {name!r} is already registered; names are never reused"
        ) from None
    return row


async def get_model_version(store: Store, name: str) -> ModelVersion:
    async with store.session() as session:
        row = await session.scalar(select(ModelVersion).where(ModelVersion.name == name))
    if row is None:
        raise ModelVersionNotFound(name)
    return row


async def list_model_versions(
    store: Store, *, limit: int = 50, kind: str | None = None, role: str | None = None
) -> list[ModelVersion]:
    query = (
        select(ModelVersion)
        .order_by(ModelVersion.created_at.desc(), ModelVersion.name.desc())
        .limit(limit)
    )
    if kind is not None:
        query = query.where(ModelVersion.kind == kind)
    if role is not None:
        query = query.where(ModelVersion.role == role)
    async with store.session() as session:
        return list((await session.scalars(query)).all())
