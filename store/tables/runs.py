"""The transcript store's tables: runs and the turns their agents took."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, relationship

JSONType = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """A moment in UTC, timezone-aware on the way in and out, on every database.

    PostgreSQL's ``timestamptz`` keeps the zone; SQLite keeps text without one, and hands back
    naive datetimes that serialise without a zone (a client then reads them in its own). So
    values are converted to UTC before they are written and marked as UTC when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        # a naive value is taken as UTC, the store's zone (CURRENT_TIMESTAMP is UTC too)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
        datetime: UtcDateTime(),
    }


def new_run_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    # Set in Python, not only by the server: SQLite's CURRENT_TIMESTAMP has whole seconds,
    # too coarse to order runs created in the same second (cursor pagination needs it).
    return datetime.now(UTC)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_run_id)
    pattern: Mapped[str] = mapped_column(String(64), index=True)
    problem: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    answer: Mapped[str | None] = mapped_column(Text)
    stop_reason: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), index=True
    )
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=false())
    trace_id: Mapped[str | None] = mapped_column(String(32))
    api_key_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # A run is executed by whoever holds its lease; a worker that dies stops renewing it, and
    # once it expires the run is enqueued again and resumes from its checkpoint.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    enqueued_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    turns: Mapped[list[Turn]] = relationship(
        back_populates="run", order_by="Turn.id", lazy="raise", cascade="all, delete-orphan"
    )


class Turn(Base):
    """One model call: who asked, what was sent, what came back, what it cost."""

    __tablename__ = "turns"
    __table_args__ = (
        UniqueConstraint("run_id", "key", name="uq_turns_run_id_key"),
        Index("ix_turns_run_id_id", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    node: Mapped[str] = mapped_column(String(64))
    round: Mapped[int] = mapped_column(Integer, default=0)
    agent: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(64))
    role_description: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200))
    adapter: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any]]
    messages: Mapped[list[Any]]
    completion: Mapped[str] = mapped_column(Text, default="")
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    parsed: Mapped[dict[str, Any] | None]
    parse_ok: Mapped[bool] = mapped_column(default=True)
    parse_error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    # what the backend generated, token by token, when it says (None: it did not say)
    completion_token_ids: Mapped[list[Any] | None]
    completion_logprobs: Mapped[list[Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    run: Mapped[Run] = relationship(back_populates="turns")


class Event(Base):
    """What a run's live stream carried, kept so a client that reconnects misses nothing."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_run_id_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class ApiKey(Base):
    """An API key: only its hash is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_run_id)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer, default=60)
    token_quota: Mapped[int | None] = mapped_column(BigInteger)
    can_start_campaigns: Mapped[bool] = mapped_column(default=False, server_default=false())
    """Campaigns train models: a key starts them only once it is granted that."""
    max_running_campaigns: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    revoked_at: Mapped[datetime | None]


class OutcomeRow:
    """Columns every outcome table shares (see :mod:`roles.outcomes`).

    An outcome table is a subclass of this and ``Base`` whose other columns are named as the
    fields of its :class:`~roles.outcomes.Outcome` model, so the store writes one from the other
    without a mapping per kind.
    """

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (UniqueConstraint("run_id", "key", name=f"uq_{cls.__tablename__}_run_id_key"),)
