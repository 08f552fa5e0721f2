"""Which table holds each kind of :class:`~roles.outcomes.Outcome`.

A pattern that records a new kind adds its table here (a subclass of ``OutcomeRow`` in
``services/store/``) and a migration that creates it.
"""

from __future__ import annotations

from roles.rlad import RladAbstraction
from roles.spc import SpcGame
from store.tables.rlad import RladAbstractionRow
from store.tables.runs import Base
from store.tables.spc import SpcGameRow

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
