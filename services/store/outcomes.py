"""Which table holds each kind of :class:`~roles.outcomes.Outcome`.

A pattern that records a new kind adds its table here (a subclass of ``OutcomeRow`` in
``services/store/``) and a migration that creates it.
"""

from __future__ import annotations

from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite

from roles.rlad import RladAbstraction
from roles.spc import SpcGame
from services.store.models import Base
from services.store.rlad_models import RladAbstractionRow
from services.store.spc_models import SpcGameRow

OUTCOME_TABLES: dict[str, type[Base]] = {
    RladAbstraction.kind: RladAbstractionRow,
    SpcGame.kind: SpcGameRow,
}


class UnknownOutcome(LookupError):
    def __str__(self) -> str:
        return f"no table stores outcomes of kind {self.args[0]!r}"


def outcome_table(kind: str) -> type[Base]:
    try:
        return OUTCOME_TABLES[kind]
    except KeyError:
        raise UnknownOutcome(kind) from None


def outcome_upsert(table: type[Base], dialect_name: str) -> Insert:
    """Insert an outcome; the same (run, key) again replaces the stored one."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(table)
    replaced = [
        c.key for c in table.__table__.columns if c.key not in ("id", "run_id", "key", "created_at")
    ]
    return statement.on_conflict_do_update(
        index_elements=["run_id", "key"],
        set_={name: statement.excluded[name] for name in replaced},
    )
