"""Structured results of a run, beside its free-text turns.

Some patterns produce facts that training turns into data: an SPC game and who won it, an
RLAD abstraction and its reward. A graph hands them to its recorder as :class:`Outcome`
records; the store keeps each kind in its own table. ``key`` is unique within a run, as a
turn's is, so a resumed run that recomputes an outcome replaces it instead of adding a copy.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field


class Outcome(BaseModel):
    """Base of every structured result; subclasses name their ``kind`` (the store's table)."""

    kind: ClassVar[str]
    key: str = Field(description="unique within the run; recording the same key again replaces")
