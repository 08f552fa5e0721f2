"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real API
server (uvicorn on loopback) whose runs the scripted backend answers.

Screenshots of each page go to ``tests/artifacts/dashboard/`` (git-ignored).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.backends.scripted import ScriptedModelConfig
from agents.model_map import ModelMap
from services.settings import Settings
from tests.api.conftest import LiveServer, wait_for_run

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"
DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

CONTINUE = (
    "### Decision: <Continue>\n### Recruit Number: 3\n"
    "### Direction: add the two numbers carefully\n### Maximum Tokens: 128"
)
STOP = "### Decision: <Stop>\n### Recruit Number: 2\n### Direction: done\n### Maximum Tokens: 64"
# Two rounds: a critic disagrees once (the solver revises), the evaluator is unconvinced in
# round 0, and the CEO stops in round 1.
REPLIES = {
    "ceo": [CONTINUE, STOP],
    "recruiter": ["1. An arithmetic teacher.\n2. A careful checker.\n3. A sceptic."],
    "solver": ["<think>Two plus three: count 3, 4, 5.</think>2 + 3 = 5 so \\boxed{5}"],
    "critic": ["The sum is right. [Agree]", "Check the carry. [Disagree]", "Fine now. [Agree]"],
    "evaluator": ["### Correctness: 0\n### Advice: verify once more", "### Correctness: 1"],
}
DISCUSSION = {
    "pattern": "discussion",
    "problem": "What is 2+3?",
    "config": {"max_rounds": 2, "stop_policy": "ceo", "token_menu": [128, 256]},
}


SKIPPED_FOR_NO_BROWSER = "browser test skipped: "


def chromium_path() -> str | None:
    configured = os.environ.get("THINKTANK_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("chromium")


def no_chromium_reason() -> str:
    configured = os.environ.get("THINKTANK_CHROMIUM")
    if configured:
        return f"THINKTANK_CHROMIUM={configured} is not a file"
    return "no chromium on PATH (apt-get install chromium, or set THINKTANK_CHROMIUM)"


def dashboard_settings(
    tmp_path: Path,
    *,
    latency_s: float = 0.0,
    replies: dict[str, list[str]] | None = None,
    **overrides: Any,
) -> Settings:
    scripted = ScriptedModelConfig(replies=replies or REPLIES, latency_s=latency_s)
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'dashboard.db'}",
        models=ModelMap(default=scripted),
        **overrides,
    )


# Module scope: while Playwright's sync API is open, its event loop counts as running on this
# thread, and tests after these could not run their own.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):  # .ci/run installs it: a missing browser is a broken CI
            pytest.fail(no_chromium_reason())
        pytest.skip(SKIPPED_FOR_NO_BROWSER + no_chromium_reason())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextlib.contextmanager
def open_page(browser: Any, *, bypass_csp: bool = True) -> Iterator[Any]:
    """A page in a fresh browser context (its own session storage). A script error or a
    breach of the page's Content-Security-Policy fails the test.

    Playwright's ``wait_for_function`` evaluates its condition with ``eval``, which the
    page's policy forbids, hence ``bypass_csp``; a test that keeps the policy shows that the
    dashboard itself runs under it.
    """
    context = browser.new_context(viewport={"width": 1500, "height": 1000}, bypass_csp=bypass_csp)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: "Content Security Policy" in message.text and errors.append(message.text),
    )
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with open_page(browser) as page:
        yield page


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(dashboard_settings(tmp_path)) as live:
        yield live


def submit(server: LiveServer, run: dict[str, Any], *, wait: bool = True, **headers: str) -> str:
    with httpx.Client(base_url=server.url, headers=headers) as client:
        created = client.post("/v1/runs", json=run)
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        if wait:
            assert wait_for_run(client, run_id)["status"] == "succeeded"
    return run_id


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say, above the closing line, that the browser tests did not run and why: a plain
    ``make test`` on a machine without chromium otherwise skips them all without a word."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if isinstance(report.longrepr, tuple) and SKIPPED_FOR_NO_BROWSER in report.longrepr[2]
    ]
    if skipped:
        terminalreporter.write_sep("=", "browser tests not run", yellow=True, bold=True)
        count = f"{len(skipped)} browser test{'s' if len(skipped) != 1 else ''}"
        terminalreporter.write_line(f"{count} skipped: {no_chromium_reason()}", yellow=True)
