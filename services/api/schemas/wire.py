"""Values as they travel: JSON values read as a JSON schema reads them, and server-sent
events as the OpenAPI document describes them.

Pydantic's lenient mode takes ``"0.5"`` and ``true`` for a number and ``1`` or ``"yes"`` for
a boolean, which the OpenAPI document calls invalid; its strict mode refuses ``4.0`` for an
integer, which the document (and JSON) calls one. These types, with :func:`json_numbers` run
on a value first (a ``mode="before"`` validator: inside the type it would hide the type's
bounds from the JSON schema), sit between the two: a number is a JSON number, a whole one is
an integer, a boolean is a boolean.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Strict


def json_numbers(value: Any) -> Any:
    """``value`` with every whole float made an int, in nested lists and dicts too."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: json_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_numbers(item) for item in value]
    return value


JsonInt = Annotated[int, Strict()]
JsonFloat = Annotated[float, Strict()]
JsonBool = Annotated[bool, Strict()]


NUL = {"pattern": r"\x00"}
"""Text holding NUL (U+0000): PostgreSQL cannot store it, so the API refuses it in all it
stores (and anywhere in a URL)."""


def without_nul(schema: Any) -> None:
    """Say in ``schema`` (in place, once) that none of its strings, keys included, holds NUL."""
    if isinstance(schema, list):
        for item in schema:
            without_nul(item)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string":
        refused = schema.get("not")
        if refused is None:
            schema["not"] = NUL
        elif refused != NUL and NUL not in refused.get("anyOf", ()):
            schema["not"] = {"anyOf": [refused, NUL]}
    if isinstance(schema.get("propertyNames"), dict):
        schema["propertyNames"].setdefault("type", "string")
    for key in ("properties", "$defs"):
        for item in (schema.get(key) or {}).values():
            without_nul(item)
    for key in ("items", "additionalProperties", "propertyNames", "anyOf", "oneOf", "allOf"):
        without_nul(schema.get(key))


def event_stream(data: str) -> dict[str, Any]:
    """A ``text/event-stream`` response's content: a schema for each of its events."""
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "string", "description": data},
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer", "minimum": 0},
        },
    }
    return {"text/event-stream": {"schema": event}}
