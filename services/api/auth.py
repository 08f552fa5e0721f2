"""API keys on every ``/v1`` route: who is calling, and whether they may call now.

With keys on, a request to ``/v1/...`` needs ``Authorization: Bearer <key>`` (or
``X-API-Key: <key>``). A missing, unknown or revoked key gets 401 with ``WWW-Authenticate:
Bearer`` and the reason; a key over its requests per minute gets 429 with ``Retry-After``; a
key whose runs have spent its token quota gets 429 on its next submission, by ``POST
/v1/runs`` or the OpenAI face's ``POST /v1/chat/completions`` (see :mod:`services.ratelimit`).
Bodies carry the reason twice: ``detail``, like the rest of the API, and OpenAI's ``error``
object, so OpenAI clients of ``/v1/chat/completions`` show it too. The key's id goes to
``request.state.api_key_id``, which scopes what the runs resource shows. Health, metrics and
the docs stay open.

Keys are on when ``Settings.auth`` is ``on``, off when it is ``off``, and with ``auto`` on
unless the server binds a loopback address: a server only this machine can reach trusts it.

A stream already open when its key is revoked runs to its end; every new request is checked.
This is ASGI middleware rather than a route dependency so that any route added under
``/v1`` later is guarded without anyone remembering to. Neither the key nor its hash is
logged; uvicorn's access log has no headers, and its trace log masks them.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.ratelimit import make_rate_limiter, token_quota_left
from services.settings import Settings
from store.api_keys import find_key

GUARDED_PREFIX = "/v1"
# requests that start a run: the token quota is checked on these
SUBMISSIONS = frozenset({"/v1/runs", "/v1/chat/completions"})


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # another host name: it may resolve anywhere, so it is not trusted
        return False


def keys_required(auth: Literal["auto", "on", "off"], bind_host: str) -> bool:
    if auth == "auto":
        return not is_loopback(bind_host)
    return auth == "on"


def presented_key(headers: dict[bytes, bytes]) -> tuple[str | None, str]:
    """The key the request carries, or None and why not."""
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip(), ""
        return None, "the Authorization header must be 'Bearer <API key>'"
    api_key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    if api_key:
        return api_key, ""
    return None, "an API key is required: send 'Authorization: Bearer <API key>'"


def relative_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def is_guarded(path: str) -> bool:
    return path == GUARDED_PREFIX or path.startswith(GUARDED_PREFIX + "/")


def is_submission(scope: Scope, path: str) -> bool:
    return scope["method"] == "POST" and path.rstrip("/") in SUBMISSIONS


def refusal(
    status: int, reason: str, kind: str, code: str, headers: dict[str, str]
) -> JSONResponse:
    error = {"message": reason, "type": kind, "param": None, "code": code}
    return JSONResponse({"detail": reason, "error": error}, status_code=status, headers=headers)


def unauthorized(reason: str, *, invalid: bool) -> JSONResponse:
    # RFC 6750: no error code when the request carried no credentials at all
    challenge = 'Bearer realm="thinktank"' + (', error="invalid_token"' if invalid else "")
    return refusal(
        401,
        reason,
        "invalid_request_error",
        "invalid_api_key",
        {"WWW-Authenticate": challenge},
    )


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, *, settings: Settings, bind_host: str) -> None:
        self.app = app
        self.enabled = keys_required(settings.auth, bind_host)
        self.limiter = make_rate_limiter(settings) if self.enabled else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing_at_shutdown(send))
            return
        path = relative_path(scope) if scope["type"] in ("http", "websocket") else ""
        if not self.enabled or not is_guarded(path):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # none exist; one added later must not be open
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return

        key, problem = presented_key(dict(scope["headers"]))
        if key is None:
            await unauthorized(problem, invalid=False)(scope, receive, send)
            return
        store = scope["app"].state.services.store
        row = await find_key(store, key)
        if row is None or row.revoked_at is not None:
            reason = "unknown API key" if row is None else "this API key was revoked"
            await unauthorized(reason, invalid=True)(scope, receive, send)
            return

        assert self.limiter is not None
        decision = await self.limiter.hit(row.id, row.rate_limit_per_minute)
        if not decision.allowed:
            reason = (
                f"rate limit exceeded: {decision.limit} requests per minute; "
                f"retry in {decision.retry_after_s}s"
            )
            headers = {
                "Retry-After": str(decision.retry_after_s),
                "X-RateLimit-Limit": str(decision.limit),
                "X-RateLimit-Remaining": "0",
            }
            response = refusal(429, reason, "requests", "rate_limit_exceeded", headers)
            await response(scope, receive, send)
            return
        if is_submission(scope, path):
            left = await token_quota_left(store, row)
            if left is not None and left <= 0:
                # No Retry-After: a quota is a lifetime total, waiting does not refill it; and
                # x-should-retry stops OpenAI clients from retrying a 429 on their own.
                reason = (
                    f"token quota exhausted: this key's runs have spent "
                    f"{row.token_quota - left} of its {row.token_quota} tokens; "
                    "no new runs can be submitted with it"
                )
                headers = {"x-should-retry": "false"}
                response = refusal(429, reason, "insufficient_quota", "insufficient_quota", headers)
                await response(scope, receive, send)
                return

        scope.setdefault("state", {})["api_key_id"] = row.id
        await self.app(scope, receive, send)

    def _closing_at_shutdown(self, send: Send) -> Send:
        async def closing(message: Message) -> None:
            if message["type"].startswith("lifespan.shutdown") and self.limiter is not None:
                await self.limiter.close()
            await send(message)

        return closing


SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key from `thinktank keys create`: Authorization: Bearer tt_...",
    },
    "apiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "the same API key in a header of its own",
    },
}


def document_security(openapi: dict[str, Any], *, required: bool) -> None:
    """Name the key schemes in the OpenAPI document (so /docs has an Authorize button), and
    mark the ``/v1`` operations as needing one of them when this server requires keys."""
    openapi.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    if not required:
        return
    for path, operations in openapi.get("paths", {}).items():
        if is_guarded(path):
            for operation in operations.values():
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
