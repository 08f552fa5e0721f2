"""Request limits enforced before a handler runs: body size, and no NUL in the URL.

Their refusals carry the reason as ``detail``, like the rest of the API, and as OpenAI's
``error`` object, so an OpenAI client of the face shows it too.
"""

from __future__ import annotations

import contextlib
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    pass


async def refuse(send: Send, status: int, reason: str, code: str) -> None:
    error = {"message": reason, "type": "invalid_request_error", "param": None, "code": code}
    body = json.dumps({"detail": reason, "error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class NulInUrl:
    """400 for a path or query string holding NUL (``%00``): no run id, filter or search text
    contains one, and PostgreSQL refuses it as a query parameter."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            await refuse(send, 400, "the URL contains a NUL character (%00)", "invalid_url")
            return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """413 for a body over ``max_bytes``: by its Content-Length, or as it streams in (a chunked
    body has none). Once a streamed body is over, the app is told the client left, so it stops
    reading, and whatever it answers to that is dropped: the client gets the 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        started = False
        rejected = False

        async def counting_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if started:  # the app answered before reading it all: too late for a 413
                        raise BodyTooLarge
                    rejected = True
                    await self._reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counting_receive, tracking_send)

    async def _reject(self, send: Send) -> None:
        await refuse(
            send, 413, f"request body larger than {self.max_bytes} bytes", "request_too_large"
        )
