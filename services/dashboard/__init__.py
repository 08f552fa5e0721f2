"""The web dashboard: static HTML, CSS and ES modules served at ``/ui``.

There is no build step: the browser loads the files as they are. The page reads only the
public JSON API under ``/v1`` (with the API key the user enters, when keys are on), so the
files themselves are served to anyone; they hold no data.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).with_name("static")
MOUNT_PATH = "/ui"

# The page shows text written by models and users: even if a renderer slipped and put some in
# as markup, no script from anywhere but these files would run, and nothing could be sent
# elsewhere.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


class DashboardFiles(StaticFiles):
    """Static files with the dashboard's security headers; revalidated on every load, so a
    new version of the server never runs with an old cached module beside a new one."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/ui/`` (``/ui`` redirects there)."""
    app.mount(MOUNT_PATH, DashboardFiles(directory=STATIC_DIR, html=True), name="dashboard")
