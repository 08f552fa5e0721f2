"""What every parser of model output returns besides its own fields."""

from __future__ import annotations

from pydantic import BaseModel


class Parsed(BaseModel):
    """Whether the text could be read; a parser never raises on malformed output."""

    parse_ok: bool = True
    parse_error: str | None = None
