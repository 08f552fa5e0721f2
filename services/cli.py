"""The ``thinktank`` command line: solve problems, read stored runs, list patterns."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from agents.model_map import ModelRouter
from graphs.registry import PATTERNS, UnknownPattern, get_pattern
from services import keys
from services.console import LivePrinter, print_run, print_runs
from services.runner import execute_run, submit_run
from services.settings import Settings
from services.store.db import DatabaseURLError, create_engine, migrate
from services.store.repository import RunNotFound, Store
from services.telemetry import configure_tracing

app = typer.Typer(
    help="thinktank: several LLM agents reasoning together, every word stored.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="Read stored runs.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

console = Console()
T = TypeVar("T")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(main())
    except (CliError, DatabaseURLError, RunNotFound, UnknownPattern, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
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


async def run_live(
    settings: Settings, prepare: Callable[[Store], Awaitable[str]], *, quiet: bool
) -> None:
    """Execute the run ``prepare`` names, printing the conversation as it happens."""
    configure_tracing()  # `solve` and `runs resume`: exports only with OTEL_EXPORTER_OTLP_*
    printer = LivePrinter(console, quiet=quiet)
    models = ModelRouter(settings.models, on_progress=printer.progress)
    async with open_store(settings) as store:
        run_id = await prepare(store)
        run = await store.get_run(run_id)
        store.listeners.append(printer.on_event)
        printer.start(run_id, run.pattern, run.problem)
        try:
            outcome = await execute_run(
                run_id,
                store=store,
                models=models,
                database_url=settings.database_url,
                # only the live printer would read them, and it is silent with --quiet
                stream_tokens=settings.stream_tokens and not quiet,
            )
        finally:
            printer.stop()
            await models.close()
        run = await store.get_run(run_id)
    printer.summary(run)
    if outcome["status"] != "succeeded":
        raise typer.Exit(1)


def parse_pattern_options(args: list[str]) -> dict[str, Any]:
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


def validation_message(pattern: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "config"
        if error["type"] == "extra_forbidden":
            known = ", ".join(
                "--" + f.replace("_", "-") for f in get_pattern(pattern).config_model.model_fields
            )
            problems.append(
                f"--{where.replace('_', '-')} is not an option of {pattern} (options: {known})"
            )
        else:
            problems.append(f"--{where.replace('_', '-')}: {error['msg']}")
    return "; ".join(problems)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Pattern options (--agents 3, --max-rounds 3, --samples 8, ...): `thinktank patterns`.",
)
def solve(
    ctx: typer.Context,
    problem: str = typer.Argument(..., help="the problem text"),
    pattern: str = typer.Option("discussion", "--pattern", "-p", help="collaboration pattern"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only the answer"),
) -> None:
    """Solve PROBLEM with a pattern, printing the conversation live, and store the run."""
    settings = Settings()

    async def main() -> None:
        spec = get_pattern(pattern)
        options = parse_pattern_options(ctx.args)
        try:
            spec.config_model.model_validate(options)
        except ValidationError as exc:
            raise CliError(validation_message(spec.name, exc)) from None

        async def submit(store: Store) -> str:
            return await submit_run(store, spec.name, problem, options)

        await run_live(settings, submit, quiet=quiet)

    run_async(main)


@app.command()
def patterns() -> None:
    """List the patterns and every option each one takes."""
    for spec in PATTERNS.values():
        console.print(f"[bold]{spec.name}[/bold]: {spec.summary}")
        for name, field in spec.config_model.model_fields.items():
            default = field.get_default(call_default_factory=True)
            console.print(
                f"  --{name.replace('_', '-'):<22} {field.description or ''} "
                f"[dim](default: {json.dumps(default)})[/dim]"
            )


@runs_app.command("list")
def runs_list(
    limit: int = typer.Option(20, min=1, max=1000, help="most runs shown, newest first"),
    pattern: str | None = typer.Option(None, help="only this pattern"),
    status: str | None = typer.Option(None, help="queued, running, succeeded, failed, cancelled"),
) -> None:
    """List stored runs, newest first."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            name = get_pattern(pattern).name if pattern else None
            print_runs(console, await store.list_runs(limit=limit, pattern=name, status=status))

    run_async(main)


@runs_app.command("show")
def runs_show(
    run_id: str = typer.Argument(..., help="the run's id (from `runs list`)"),
    as_json: bool = typer.Option(False, "--json", help="print the run and its turns as JSON"),
) -> None:
    """Show a run and every turn: agent, role, model, prompt, completion, parse, tokens, latency."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            run = await store.get_run(run_id)
            turns = await store.turns(run_id)
        print_run(console, run, turns, as_json=as_json)

    run_async(main)


@runs_app.command("resume")
def runs_resume(
    run_id: str = typer.Argument(..., help="a run that was interrupted or failed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only the answer"),
) -> None:
    """Continue a run from its last checkpoint; turns already stored are kept, not re-made."""
    settings = Settings()

    async def main() -> None:
        async def check(store: Store) -> str:
            run = await store.get_run(run_id)
            if run.status == "succeeded":
                raise CliError(f"run {run_id} already succeeded; nothing to resume")
            return run_id

        await run_live(settings, check, quiet=quiet)

    run_async(main)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind"),
    port: int = typer.Option(8000, min=1, max=65535, help="port to bind"),
) -> None:
    """Serve the HTTP API (runs in this process unless THINKTANK_BROKER_URL is set)."""
    import uvicorn

    from services.api.app import create_app

    settings = Settings()
    mode = f"Celery on {settings.broker_url}" if settings.broker_url else "in-process executor"
    from services.api.auth import keys_required

    keys = "required" if keys_required(settings.auth, host) else "not required"
    console.print(
        f"thinktank API on http://{host}:{port} (docs at /docs; runs: {mode}; API keys {keys})"
    )
    uvicorn.run(create_app(settings, bind_host=host), host=host, port=port, log_level="info")


@app.command()
def worker(
    concurrency: int = typer.Option(4, min=1, help="runs this worker executes at once"),
    loglevel: str = typer.Option("INFO", help="Celery log level"),
) -> None:
    """Start a Celery worker that executes queued runs (needs THINKTANK_BROKER_URL)."""
    settings = Settings()
    if not settings.broker_url:
        console.print("[red]error:[/red] set THINKTANK_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
        raise typer.Exit(2)
    from services.worker import make_celery

    celery = make_celery(settings.broker_url)
    # Threads, not processes: every run of this worker shares one event loop, one connection
    # pool and the local model's batching (see services/worker.py).
    celery.worker_main(
        [
            "worker",
            "-Q",
            "runs",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the store's tables (every command also does this at start)."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings):
            console.print("database is at the newest schema")

    run_async(main)


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="who or what the key is for"),
    rate_limit: int = typer.Option(
        keys.DEFAULT_RATE_LIMIT_PER_MINUTE, min=1, help="requests per minute"
    ),
    token_quota: int | None = typer.Option(
        None, min=1, help="tokens the key's runs may spend in all (default: no quota)"
    ),
) -> None:
    """Create an API key and print it; it is shown this once and cannot be shown again."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            row, key = await keys.create_key(
                store, name, rate_limit_per_minute=rate_limit, token_quota=token_quota
            )
        quota = f"{row.token_quota} tokens" if row.token_quota else "none"
        console.print(
            f"created API key {row.id} ({escape(row.name)}): prefix {row.prefix}, "
            f"{row.rate_limit_per_minute} requests/minute, token quota {quota}"
        )
        console.print(f"\n{key}\n", markup=False, highlight=False, soft_wrap=True)
        console.print(
            "This is the only time the key is shown: only its hash is stored, so it cannot be "
            f"shown again. A lost key can only be revoked (thinktank keys revoke {row.prefix})."
        )

    run_async(main)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys: id, name, prefix, created, revoked, limits, tokens spent (never the key)."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            rows = await keys.list_keys(store)
            spent = await keys.tokens_spent_by_key(store)
        if not rows:
            console.print('no API keys yet: try `thinktank keys create "my client"`')
            return
        table = Table(
            Column("id", no_wrap=True),
            "name",
            Column("prefix", no_wrap=True),
            Column("created", no_wrap=True),
            Column("revoked", no_wrap=True),
            "req/min",
            "token quota",
            "spent",
        )
        for row in rows:
            table.add_row(
                row.id,
                escape(row.name),
                row.prefix,
                row.created_at.strftime("%Y-%m-%d %H:%M"),
                row.revoked_at.strftime("%Y-%m-%d %H:%M") if row.revoked_at else "",
                str(row.rate_limit_per_minute),
                str(row.token_quota) if row.token_quota is not None else "none",
                str(spent.get(row.id, 0)),
            )
        console.print(table)

    run_async(main)


@keys_app.command("revoke")
def keys_revoke(
    id_or_prefix: str = typer.Argument(..., help="the key's id or prefix (from `keys list`)"),
) -> None:
    """Revoke an API key: its next request is refused."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            try:
                row = await keys.revoke_key(store, id_or_prefix)
            except (keys.KeyNotFound, keys.AmbiguousKey) as exc:
                raise CliError(str(exc)) from None
        console.print(f"revoked API key {row.id} ({escape(row.name)}, prefix {row.prefix})")

    run_async(main)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
