"""The bodies of the API's refusals, and which statuses each group of routes documents.

Every refusal outside the OpenAI face is ``{"detail": "<reason>"}``; a 422 for invalid fields
adds ``errors``, one entry per field. Refusals made before a route runs (a missing API key, a
rate limit, a body too large, a NUL in the URL) also carry OpenAI's ``error`` object, so an
OpenAI client shows their reason too. The OpenAI face answers every error in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}`` (``ErrorBody``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.api.schemas.openai import ErrorBody, ErrorDetail


class FieldError(BaseModel):
    loc: list[str | int] = Field(
        description="where: body, query, path or header, then the field's path in it"
    )
    msg: str = Field(description="what is wrong with it")
    type: str = Field(description="the kind of error, e.g. missing, string_too_long")


class ErrorMessage(BaseModel):
    detail: str = Field(description="why the request was refused")
    errors: list[FieldError] | None = Field(
        None, description="on a 422 for invalid fields: each of them, without the input"
    )
    error: ErrorDetail | None = Field(
        None, description="the same reason in OpenAI's shape, on refusals made before a route"
    )


REASONS: dict[int, str] = {
    400: "the URL holds a NUL character (%00), or the body is not readable",
    401: "with API keys on: no key, or an unknown or revoked one (WWW-Authenticate: Bearer)",
    404: "nothing has this id, or it belongs to another API key",
    413: "the body is larger than the server's max_body_bytes",
    422: "invalid input: detail says why; for invalid fields, errors lists each one",
    429: "with API keys on: over the key's requests per minute (Retry-After), or a submission "
    "once the key's token quota is spent",
    502: "the run ended without an answer: it failed or was cancelled (x-should-retry: false)",
}

HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {
        "Retry-After": {
            "description": "seconds until the key may call again (not sent for a spent quota)",
            "schema": {"type": "string"},
        }
    },
}


def refusals(*statuses: int, openai: bool = False) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for ``statuses``, with the body each is sent with."""
    model = ErrorBody if openai else ErrorMessage
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        documented[status] = {"model": model, "description": REASONS[status]}
        if status in HEADERS:
            documented[status]["headers"] = HEADERS[status]
    return documented
