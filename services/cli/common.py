"""What every ``thinktank`` command shares: the console, one-line errors, the store."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape as rich_escape

from agents.backends.local.catalog import WeightsError
from execution.runner import RunInterrupted
from graphs.options import explain
from graphs.patterns import UnknownPattern, get_pattern
from services.settings import Settings
from store.campaigns import CampaignNotFound
from store.db import DatabaseURLError, create_engine, migrate
from store.runs import RunNotFound, Store

console = Console()
T = TypeVar("T")


def escape(text: str) -> str:
    """``text`` as rich markup that prints as it is. rich's own escape leaves a backslash
    before a bracket alone, which rich then reads as an escaped bracket: the ``\\[`` that opens
    a model's LaTeX display would print as ``[``."""
    return rich_escape(re.sub(r"(\\+)(?=\[)", lambda m: m.group(1) * 2, text))


def when(moment: datetime | None) -> str:
    """A stored time as tables show it; empty when it has not happened."""
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(main())
    except (
        CliError,
        WeightsError,
        CampaignNotFound,
        DatabaseURLError,
        RunNotFound,
        UnknownPattern,
        ValueError,
    ) as exc:
        # escaped: a message may hold brackets (an extra to install), which rich reads as markup
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except RunInterrupted as exc:
        console.print(
            f"[red]error:[/red] {exc}\nThe run keeps its stored turns; "
            "`thinktank runs resume RUN_ID` continues it once the database is back."
        )
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: the run keeps its stored turns")
        raise typer.Exit(130) from None


@asynccontextmanager
async def open_store(settings: Settings):
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
    except Exception as exc:
        await engine.dispose()
        raise CliError(f"cannot open the database {engine.url!r}: {exc}") from exc
    store = Store(engine)
    try:
        yield store
    finally:
        await store.close()
        await engine.dispose()


def parse_options(args: list[str]) -> dict[str, Any]:
    """``--field-name VALUE`` or ``--field-name=VALUE`` pairs into config fields.

    Values are read as JSON when they parse (numbers, lists, null), else as strings.
    """
    options: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise CliError(f"unexpected argument {arg!r}; pattern options look like --name VALUE")
        name, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise CliError(f"option --{name} needs a value")
            value = args[i + 1]
            i += 1
        try:
            options[name.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[name.replace("-", "_")] = value
        i += 1
    return options


def pattern_options_error(pattern: str, exc: ValidationError) -> CliError:
    """A pattern's options that do not validate, as one line naming its options."""
    fields = get_pattern(pattern).config_model.model_fields
    return CliError(explain(exc, subject=pattern, known=fields))


def check_models(settings: Settings) -> None:
    """The local models' weights, ready before a command starts runs (one line and exit 2
    when a package is missing or damaged)."""
    settings.models.check_local_weights(lambda message: console.print(f"[dim]· {message}"))
