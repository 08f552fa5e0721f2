"""The ``thinktank`` command line: solve problems, read stored runs, list patterns."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from agents.model_map import ModelRouter
from execution.runner import (
    execute_run,
    holder_is_dead,
    lease_is_live,
    submit_run,
)
from execution.tracing import configure_tracing
from graphs.patterns import PATTERNS, get_pattern
from services.cli.campaign import campaign_app
from services.cli.common import CliError, console, open_store, run_async
from services.cli.console import LivePrinter, print_run, print_runs
from services.settings import Settings
from store import api_keys
from store.runs import Store

T = TypeVar("T")

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
game_app = typer.Typer(help="Self-play games whose records become training data.")
app.add_typer(game_app, name="game")


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
            if field.is_required():
                default = "required"
            else:
                default = f"default: {json.dumps(field.get_default(call_default_factory=True))}"
            console.print(
                f"  --{name.replace('_', '-'):<22} {field.description or ''} [dim]({default})[/dim]"
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
            if lease_is_live(run) and not holder_is_dead(run.lease_owner or ""):
                raise CliError(
                    f"run {run_id} is being executed by {run.lease_owner} (its lease runs "
                    f"until {run.lease_expires_at:%H:%M:%S} UTC); if that process is gone, "
                    "resume after then"
                )
            return run_id

        await run_live(settings, check, quiet=quiet)

    run_async(main)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind"),
    port: int = typer.Option(8000, min=1, max=65535, help="port to bind"),
    ray: bool = typer.Option(
        False, "--ray", help="deploy on Ray Serve: the API as an ingress, a deployment per model"
    ),
    serve_config: str | None = typer.Option(
        None, help="with --ray: write a Serve config file (for `serve deploy`) and exit"
    ),
) -> None:
    """Serve the HTTP API (runs in this process unless THINKTANK_BROKER_URL is set)."""
    import uvicorn

    from services.api.app import create_app

    settings = Settings()
    if ray:
        serve_on_ray(settings, host, port, Path(serve_config) if serve_config else None)
        return
    mode = f"Celery on {settings.broker_url}" if settings.broker_url else "in-process executor"
    from services.api.auth import keys_required

    keys = "required" if keys_required(settings.auth, host) else "not required"
    console.print(
        f"thinktank API on http://{host}:{port} (docs at /docs; runs: {mode}; API keys {keys})"
    )
    uvicorn.run(create_app(settings, bind_host=host), host=host, port=port, log_level="info")


def serve_on_ray(settings: Settings, host: str, port: int, config_file: Path | None) -> None:
    """``serve --ray``: the Serve applications of services.serving, or their config file."""
    try:
        from services.serving.app import ServingConfigError, plan_apps, serve_config
        from services.serving.run import serve_forever
    except ImportError as exc:
        console.print(
            f"[red]error:[/red] --ray needs Ray Serve (pip install 'thinktank[serve]'): {exc}"
        )
        raise typer.Exit(2) from None
    try:
        plan_apps(settings)
    except ServingConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if config_file is not None:
        import yaml

        config_file.write_text(yaml.safe_dump(serve_config(settings, host=host, port=port)))
        console.print(f"wrote {config_file}: run it with `serve deploy {config_file}`")
        return

    def report(apps: list) -> None:
        for served in apps:
            models = ", ".join(
                f"{m.spec.deployment_name()} ({', '.join(m.names)})" for m in served.models
            )
            where = f"http://{host}:{port}{served.route_prefix.rstrip('/')}"
            console.print(f"{served.name}: {where}" + (f"  models: {models}" if models else ""))
        console.print("serving on Ray; Ctrl-C stops")

    serve_forever(settings, host, port, report)


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
    from services.worker.app import make_worker_app

    celery = make_worker_app(settings.broker_url)
    # Threads, not processes: every run of this worker shares one event loop, one connection
    # pool and the local model's batching (see services/worker/loop.py).
    celery.worker_main(
        [
            "worker",
            "-Q",
            "runs,campaigns",
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
        api_keys.DEFAULT_RATE_LIMIT_PER_MINUTE, min=1, help="requests per minute"
    ),
    token_quota: int | None = typer.Option(
        None, min=1, help="tokens the key's runs may spend in all (default: no quota)"
    ),
) -> None:
    """Create an API key and print it; it is shown this once and cannot be shown again."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            row, key = await api_keys.create_key(
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
            rows = await api_keys.list_keys(store)
            spent = await api_keys.tokens_spent_by_key(store)
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
                row = await api_keys.revoke_key(store, id_or_prefix)
            except (api_keys.KeyNotFound, api_keys.AmbiguousKey) as exc:
                raise CliError(str(exc)) from None
        console.print(f"revoked API key {row.id} ({escape(row.name)}, prefix {row.prefix})")

    run_async(main)


@game_app.command(
    "spc",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Game options (--rollouts 8, --round 1, --critic-model critic-0, ...): "
    "`thinktank patterns`, under spc_game.",
)
def game_spc(
    ctx: typer.Context,
    problems: str = typer.Option(
        ..., "--problems", help='JSONL of {"problem", "answer"[, "solution"]}, or a gen: source'
    ),
    games: int = typer.Option(1, "--games", min=1, help="games to play (problems are cycled)"),
    concurrency: int = typer.Option(1, min=1, max=64, help="games played at once"),
) -> None:
    """Play SPC self-play games: a sneaky generator against a step critic, one run per game."""
    from roles.spc import SpcGame, summarize_games
    from training.games import game_config
    from training.problems import Problem, load_problems

    settings = Settings()

    async def main() -> None:
        options = parse_pattern_options(ctx.args)
        for taken in ("reference_answer", "solution"):
            if taken in options:
                raise CliError(f"--{taken.replace('_', '-')} comes from each problem of --problems")
        loaded = load_problems(problems)
        playable = [p for p in loaded if p.answer]
        if not playable:
            raise CliError(f"{problems}: no problem has a reference answer to play a game on")
        spec = get_pattern("spc_game")
        try:
            spec.config_model.model_validate({**options, "reference_answer": "0"})
        except ValidationError as exc:
            raise CliError(validation_message(spec.name, exc)) from None
        if len(playable) < len(loaded):
            console.print(f"[dim]skipping {len(loaded) - len(playable)} problems without an answer")
        schedule = [playable[i % len(playable)] for i in range(games)]
        configure_tracing()
        models = ModelRouter(settings.models, on_progress=lambda m: console.print(f"[dim]· {m}"))
        gate = asyncio.Semaphore(concurrency)
        finished = 0

        async def play(store: Store, problem: Problem) -> tuple[str, list[SpcGame]]:
            nonlocal finished
            config = game_config(spec.name, problem, options)
            async with gate:
                run_id = await submit_run(store, spec.name, problem.problem, config)
                outcome = await execute_run(
                    run_id,
                    store=store,
                    models=models,
                    database_url=settings.database_url,
                    stream_tokens=False,
                )
                played = await store.outcomes(run_id, SpcGame)
            finished += 1
            if played:
                g = played[0]
                what = (
                    f"{g.result} (critic {g.critic_reward:+d}, sneaky {g.sneaky_reward:+d}; "
                    f"step {g.step_index + 1}/{g.steps_total}, {g.error_type or 'no error type'})"
                )
            elif outcome["status"] == "succeeded":
                what = f"no game ({outcome['stop_reason']})"
            else:
                what = f"[red]{outcome['status']}[/red]: {escape(str(outcome['error']))}"
            console.print(f"game {finished}/{games} · {escape(problem.id)} · run {run_id} · {what}")
            return outcome["status"], played

        try:
            async with open_store(settings) as store:
                results = await asyncio.gather(*(play(store, p) for p in schedule))
        finally:
            await models.close()
        summary = summarize_games(g for _, played in results for g in played)
        failed = sum(status != "succeeded" for status, _ in results)
        table = Table("SPC games", Column("", justify="right"))
        for label, value in (
            ("games played", str(summary.games)),
            ("valid rewrites", str(summary.valid)),
            ("critic wins (error detected)", str(summary.critic_wins)),
            ("sneaky wins (critic fooled)", str(summary.sneaky_wins)),
            ("invalid rewrites", str(summary.invalid)),
            ("unreadable verdicts", str(summary.unparsed)),
            ("runs without a game", str(len(results) - summary.games - failed)),
            ("failed runs", str(failed)),
            ("critic reward", f"{summary.critic_reward:+d}"),
            ("sneaky reward", f"{summary.sneaky_reward:+d}"),
            ("critic reward on original steps", f"{summary.paired_reward:+d}"),
        ):
            table.add_row(label, value)
        console.print(table)
        if failed:
            raise typer.Exit(1)

    run_async(main)


# --- training: thin commands over training.jobs and store.model_versions ----------------------

train_app = typer.Typer(
    help="Train LoRA adapters (SFT, game-reward RL) as model versions.", no_args_is_help=True
)
app.add_typer(train_app, name="train")
models_app = typer.Typer(help="Registered model versions (trained adapters).", no_args_is_help=True)
app.add_typer(models_app, name="models")

TRAIN_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
LAUNCHER_FIELDS = frozenset({"base_adapter", "parent", "dataset_hash"})


def _train_config(kind: str, args: list[str]) -> Any:
    from training.jobs import CONFIGS, config_for

    options = parse_pattern_options(args)
    for filled in LAUNCHER_FIELDS & options.keys():
        raise CliError(f"--{filled.replace('_', '-')} is filled in by thinktank, not by hand")
    try:
        return config_for(kind, options)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = "--" + ".".join(str(p) for p in error["loc"]).replace("_", "-")
            if error["type"] == "extra_forbidden":
                known = ", ".join(
                    "--" + f.replace("_", "-")
                    for f in CONFIGS[kind].model_fields
                    if f not in LAUNCHER_FIELDS
                )
                problems.append(f"{where} is not an option of train {kind} (options: {known})")
            elif where == "--":
                problems.append(error["msg"].removeprefix("Value error, "))
            else:
                problems.append(f"{where}: {error['msg']}")
        raise CliError("; ".join(problems)) from None


def start_training(
    kind: str,
    args: list[str],
    *,
    resume: bool,
    detach: bool,
    launcher: str,
    nproc_per_node: int,
    idempotency_key: str | None,
    ray_address: str | None = None,
    gpus: float = 0.0,
) -> None:
    """Store (or find) the training run, launch its job, and follow it to the end."""
    from services.cli.training_tables import metrics_summary
    from store import model_versions
    from training import jobs
    from training.datasets import DatasetError

    settings = Settings()
    if launcher not in ("subprocess", "torchrun", "ray"):
        console.print(
            f"[red]error:[/red] --launcher is subprocess, torchrun or ray, not {launcher!r}"
        )
        raise typer.Exit(2)
    options = jobs.LaunchOptions(
        launcher=launcher, nproc_per_node=nproc_per_node, ray_address=ray_address, gpus=gpus
    )

    async def submit() -> tuple[str, Any] | None:
        config = _train_config(kind, args)
        async with open_store(settings) as store:
            try:
                sub = await jobs.submit_training(
                    store,
                    kind,
                    config,
                    key=idempotency_key,
                    resume=resume,
                    options=options if options.launcher == "ray" else None,
                )
            except (jobs.JobConflict, DatasetError, model_versions.ModelVersionExists) as exc:
                raise CliError(str(exc)) from None
            run = sub.run
            if sub.action == "done":
                version = await model_versions.get_model_version(store, run.model_name)
                console.print(
                    f"already trained with these settings and data: model version "
                    f"{escape(version.name)} (training run {run.id}); "
                    f"{metrics_summary(version.kind, version.metrics)}"
                )
                return None
            if sub.action == "running":
                raise CliError(
                    f"training run {run.id} with these settings is already running (pid "
                    f"{run.pid} on {run.host}); follow it with `thinktank train show {run.id}`"
                )
            if sub.action == "stopped":
                step = (run.progress or {}).get("step")
                at = f" at step {step}/{run.progress.get('total_steps')}" if step else ""
                raise CliError(
                    f"training run {run.id} with these settings stopped{at} ({run.status}: "
                    f"{run.error or 'no reason recorded'}); add --resume to continue it from "
                    "its last checkpoint"
                )
            verb = "resuming" if sub.action == "resume" else "starting"
            console.print(
                f"{verb} training run {run.id}: {kind} → model version {escape(run.model_name)}"
            )
            if options.launcher == "ray":
                try:
                    job = await jobs.launch_ray(
                        store, run, database_url=settings.database_url, options=options
                    )
                except jobs.JobConflict as exc:
                    raise CliError(str(exc)) from None
                return run.id, job
            process = await jobs.launch(
                store, run, database_url=settings.database_url, options=options, detach=detach
            )
            return run.id, process

    submitted = run_async(submit)
    if submitted is None:
        return
    run_id, job = submitted
    if isinstance(job, str):  # a Ray job: the cluster runs it, whatever happens here
        console.print(f"Ray job {job} (`ray job logs {job}`)")
        if detach:
            console.print(f"follow it with `thinktank train show {run_id}`")
            return
        ray_code = jobs.wait_ray(options, job)
        if ray_code is None:
            console.print(f"[yellow]stopped following[/yellow]: Ray job {job} goes on")
            raise typer.Exit(130)
        code = ray_code
    elif detach:
        console.print(
            f"running in the background (pid {job.pid}); log: {jobs.log_path(run_id)}; "
            f"follow it with `thinktank train show {run_id}`"
        )
        return
    else:
        code = jobs.wait_attached(job)

    async def settle() -> tuple[Any, Any]:
        async with open_store(settings) as store:
            run = await jobs.settle(store, run_id, code)
            version = None
            if run.status == "succeeded":
                version = await model_versions.get_model_version(store, run.model_name)
            return run, version

    run, version = run_async(settle)
    if version is not None:
        console.print(
            f"registered model version [bold]{escape(version.name)}[/bold]: "
            f"{metrics_summary(version.kind, version.metrics)}"
        )
        console.print(f"adapter: {escape(version.adapter_path)}", highlight=False)
        return
    if run.status == "interrupted":
        console.print(
            f"[yellow]interrupted[/yellow]: training run {run_id} keeps its checkpoints; run "
            "the same command with --resume to continue"
        )
        raise typer.Exit(130)
    console.print(f"[red]training failed[/red]: {escape(run.error or 'no reason recorded')}")
    raise typer.Exit(1)


def _train_command(kind: str, summary: str) -> None:
    @train_app.command(
        kind,
        context_settings=TRAIN_CONTEXT,
        help=summary,
        epilog=f"Trainer options (--data FILE, --base, --name, --max-steps, ...): "
        f"`thinktank train options {kind}`.",
    )
    def command(
        ctx: typer.Context,
        resume: bool = typer.Option(
            False, "--resume", help="continue the stopped run with these settings"
        ),
        detach: bool = typer.Option(
            False, "--detach", help="run in the background; follow with `train show`"
        ),
        launcher: str = typer.Option(
            "subprocess", help="subprocess or torchrun (here), or ray (a Ray Job)"
        ),
        nproc_per_node: int = typer.Option(1, min=1, help="processes (GPUs) for torchrun"),
        ray_address: str | None = typer.Option(
            None, help="Ray job server for --launcher ray (default: $RAY_ADDRESS)"
        ),
        gpus: float = typer.Option(0.0, min=0, help="GPUs a Ray job asks for"),
        idempotency_key: str | None = typer.Option(
            None, help="the training's identity (default: a hash of kind, settings, data)"
        ),
    ) -> None:
        start_training(
            kind,
            ctx.args,
            resume=resume,
            detach=detach,
            launcher=launcher,
            nproc_per_node=nproc_per_node,
            idempotency_key=idempotency_key,
            ray_address=ray_address,
            gpus=gpus,
        )


_train_command(
    "sft", "Fine-tune a LoRA adapter on chat examples and register it as a model version."
)
_train_command(
    "rl",
    "Train a LoRA adapter on scored completions (group-relative policy gradient, clipped "
    "ratio, KL to the base) and register it as a model version.",
)


@train_app.command("options")
def train_options(kind: str = typer.Argument(..., help="sft or rl")) -> None:
    """List every option of a trainer, with its default."""
    from services.cli.training_tables import print_config_options
    from training.jobs import CONFIGS

    if kind not in CONFIGS:
        console.print(f"[red]error:[/red] unknown trainer {kind!r} (sft or rl)")
        raise typer.Exit(2)
    print_config_options(console, f"train {kind}", CONFIGS[kind])


@train_app.command("list")
def train_list(
    limit: int = typer.Option(20, min=1, max=1000, help="most runs shown, newest first"),
) -> None:
    """List training runs, newest first."""
    from services.cli.training_tables import print_training_runs
    from store import model_versions

    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            print_training_runs(
                console, await model_versions.list_training_runs(store, limit=limit)
            )

    run_async(main)


@train_app.command("show")
def train_show(
    run_id: str = typer.Argument(..., help="the training run's id (from `train list`)"),
    as_json: bool = typer.Option(False, "--json", help="print the run as JSON"),
    ray_address: str | None = typer.Option(
        None, help="Ray job server asked whether a Ray run's job still runs (default: $RAY_ADDRESS)"
    ),
) -> None:
    """Show a training run: status, progress, process, settings."""
    from services.cli.training_tables import print_training_run
    from store import model_versions
    from training import jobs

    settings = Settings()
    # without a job server named, a Ray run is shown as stored: guessing one could fail it
    ray = ray_address or os.environ.get("RAY_ADDRESS")
    options = jobs.LaunchOptions(launcher="ray", ray_address=ray_address) if ray else None

    async def main() -> None:
        async with open_store(settings) as store:
            try:
                run = await model_versions.get_training_run(store, run_id)
            except model_versions.TrainingRunNotFound as exc:
                raise CliError(str(exc)) from None
            run = await jobs.refresh_status(store, run, options)
            print_training_run(console, run, as_json=as_json)

    run_async(main)


@models_app.command("list")
def models_list(
    role: str | None = typer.Option(None, help="only versions for this logical model"),
    kind: str | None = typer.Option(None, help="only sft or rl versions"),
    limit: int = typer.Option(50, min=1, max=1000, help="most versions shown, newest first"),
) -> None:
    """List registered model versions, newest first."""
    from services.cli.training_tables import print_model_versions
    from store import model_versions

    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            versions = await model_versions.list_model_versions(
                store, limit=limit, kind=kind, role=role
            )
        print_model_versions(console, versions)

    run_async(main)


@models_app.command("show")
def models_show(
    name: str = typer.Argument(..., help="the model version's name (from `models list`)"),
    as_json: bool = typer.Option(False, "--json", help="print the version as JSON"),
) -> None:
    """Show a model version: base, adapter, dataset, metrics, training settings."""
    from services.cli.training_tables import print_model_version
    from store import model_versions

    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            try:
                version = await model_versions.get_model_version(store, name)
            except model_versions.ModelVersionNotFound as exc:
                raise CliError(str(exc)) from None
        print_model_version(console, version, as_json=as_json)

    run_async(main)


# --- evaluation: thin commands over training.evaluation and training.critic_eval ------------


async def _run_evaluation(
    settings: Settings, evaluate: Callable[[Store, ModelRouter, Any], Awaitable[T]]
) -> T:
    """Open the store and the models, show a progress bar on stderr, and run ``evaluate``."""
    from services.cli.eval_progress import ProgressBar

    configure_tracing()
    errors = Console(stderr=True)
    models = ModelRouter(settings.models, on_progress=lambda m: errors.print(f"[dim]· {m}"))
    bar = ProgressBar()
    try:
        async with open_store(settings) as store:
            return await evaluate(store, models, bar)
    except asyncio.CancelledError:
        bar.close()
        errors.print(
            "[yellow]interrupted[/yellow]: what finished is stored; run the same command again "
            "to resume"
        )
        raise
    finally:
        bar.close()
        await models.close()


def _evaluation_out(name: str, out: Path | None) -> Path:
    from agents.paths import data_dir

    return out if out is not None else data_dir() / "evaluations" / name


def _unwritable(out: Path | None, exc: OSError) -> CliError:
    # the evaluation itself is stored: rerunning with a writable --out resumes, not redoes, it
    return CliError(
        f"cannot write the results to {out or 'the data dir'}: {exc.strerror or exc}; "
        "the evaluation is stored, rerun with another --out to write them"
    )


def _config_error(exc: ValidationError) -> CliError:
    return CliError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()))


def _report_end(status: str, pending: int, results: Path) -> None:
    console.print(f"results: {results}", highlight=False)
    console.print(
        "every item names its run: `thinktank runs show RUN_ID` shows its transcript",
        highlight=False,
    )
    if status != "finished":
        console.print(
            f"[yellow]{pending} item(s) did not finish[/yellow]: run the same command again "
            "to finish them"
        )
        raise typer.Exit(1)


@app.command("eval")
def eval_patterns(
    source: str = typer.Option(
        ...,
        "--source",
        help="a problem file or folder (GSM8K, MATH, AIME, problem/answer JSONL) or "
        "gen:KIND[?difficulty=D&n=N&seed=S]",
    ),
    patterns: str = typer.Option(
        "single,self-consistency", "--patterns", help="comma-separated patterns to compare"
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="the first N problems"),
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=256, help="runs at once"),
    budget_tokens: int | None = typer.Option(
        None,
        "--budget-tokens",
        min=1,
        help="generated tokens each pattern may spend on all the problems (equal cost)",
    ),
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="PATTERN.FIELD=VALUE, or FIELD=VALUE for every pattern that has FIELD "
            "(repeatable)",
        ),
    ] = None,
    seed: int = typer.Option(0, "--seed", help="seed of a gen: source"),
    name: str | None = typer.Option(
        None, "--name", help="the evaluation's name; the same name resumes it (default: a hash)"
    ),
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="folder for results.json and the plot (default: under the data dir)"
        ),
    ] = None,
) -> None:
    """Compare patterns on the same problems: accuracy, tokens, time. Rerun to resume."""
    from training.evaluation import (
        EvalConfig,
        evaluate_patterns,
        pattern_options,
        render_table,
        write_results,
    )

    settings = Settings()

    async def main() -> None:
        names = [get_pattern(p).name for p in patterns.split(",") if p.strip()]
        if not names:
            raise CliError("--patterns names no pattern")
        try:
            config = EvalConfig(
                patterns=names,
                source=source,
                limit=limit,
                seed=seed,
                options=pattern_options(names, option or []),
                budget_tokens=budget_tokens,
                name=name,
                concurrency=concurrency,
            )
        except ValidationError as exc:
            raise _config_error(exc) from None
        summary, items = await _run_evaluation(
            settings,
            lambda store, models, bar: evaluate_patterns(
                store, models, settings.database_url, config, on_progress=bar
            ),
        )
        console.print(render_table(summary), markup=False, highlight=False, soft_wrap=True)
        try:
            results, plot = write_results(summary, items, _evaluation_out(summary.name, out))
        except OSError as exc:
            raise _unwritable(out, exc) from None
        console.print(f"plot: {plot}", highlight=False)
        _report_end(summary.status, sum(p.pending for p in summary.patterns), results)

    run_async(main)


@app.command("eval-critic")
def eval_critic(
    source: str = typer.Option(
        ...,
        "--source",
        help="a ProcessBench or PRM800K file (or folder) of labelled steps, or "
        "gen:step-errors[?difficulty=D&n=N&seed=S&error_rate=R]",
    ),
    model: str = typer.Option("verifier", "--model", help="logical model name of the judge"),
    mode: str = typer.Option("slow", "--mode", help="slow: critique each step; fast: at once"),
    samples: int = typer.Option(1, "--samples", min=1, max=16, help="judgments voted per item"),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="budget of each judgment"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="the first N solutions"),
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=256, help="runs at once"),
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="FIELD=VALUE of the process_judge pattern (repeatable)"
        ),
    ] = None,
    name: str | None = typer.Option(
        None, "--name", help="the evaluation's name; the same name resumes it (default: a hash)"
    ),
    out: Annotated[
        Path | None,
        typer.Option("--out", help="folder for results.json (default: under the data dir)"),
    ] = None,
) -> None:
    """Score a critic the ProcessBench way: earliest wrong step or -1; F1 per subset."""
    from training.critic_eval import (
        JUDGE_PATTERN,
        CriticEvalConfig,
        evaluate_critic,
        render_critic_table,
        write_critic_results,
    )
    from training.evaluation import pattern_options

    settings = Settings()

    async def main() -> None:
        try:
            config = CriticEvalConfig(
                source=source,
                judge_model=model,
                mode=mode,
                samples=samples,
                max_tokens=max_tokens,
                limit=limit,
                options=pattern_options([JUDGE_PATTERN], option or []).get(JUDGE_PATTERN, {}),
                name=name,
                concurrency=concurrency,
            )
        except ValidationError as exc:
            raise _config_error(exc) from None
        result, items = await _run_evaluation(
            settings,
            lambda store, models, bar: evaluate_critic(
                store, models, settings.database_url, config, on_progress=bar
            ),
        )
        console.print(render_critic_table(result), markup=False, highlight=False, soft_wrap=True)
        try:
            results = write_critic_results(result, items, _evaluation_out(result.name, out))
        except OSError as exc:
            raise _unwritable(out, exc) from None
        _report_end(result.status, sum(not i.ended for i in items), results)

    run_async(main)


data_app = typer.Typer(help="Training data from stored runs.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("export")
def data_export(
    out: Annotated[Path, typer.Option(help="directory for data.jsonl and manifest.json")],
    kind: str = typer.Option(
        ..., help="spc-critic, spc-sneaky, rlad-abstraction, rlad-solution, m1-sft or verifier"
    ),
    pattern: str | None = typer.Option(None, help="only runs of this pattern"),
    since: str | None = typer.Option(None, help="only runs created on or after (ISO date)"),
    only_correct: bool = typer.Option(
        False, "--only-correct", help="m1-sft: only runs whose answer matches the reference"
    ),
    limit: int | None = typer.Option(None, min=1, help="most source runs, newest first"),
    require_consensus: bool = typer.Option(
        True, help="m1-sft: only discussions whose critics all agreed with the last solution"
    ),
    require_format: bool = typer.Option(
        True, help="m1-sft: only turns in their role's format (parsed; solver's \\boxed{})"
    ),
) -> None:
    """Write a training dataset (records the trainers read) from stored runs."""
    from datetime import UTC, datetime

    from training.export import ExportFilters, export_dataset

    settings = Settings()

    async def main() -> None:
        try:
            after = datetime.fromisoformat(since) if since else None
        except ValueError:
            raise CliError(f"--since {since!r} is not an ISO date") from None
        if after is not None and after.tzinfo is None:
            after = after.replace(tzinfo=UTC)
        filters = ExportFilters(
            pattern=pattern,
            since=after,
            only_correct=only_correct,
            limit=limit,
            require_consensus=require_consensus,
            require_format=require_format,
        )
        async with open_store(settings) as store:
            manifest = await export_dataset(store, kind, filters, out)
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(manifest.skipped.items())) or "none"
        console.print(
            f"{manifest.records} {kind} records from {len(manifest.source_runs)} runs "
            f"(skipped: {skipped}) -> {out}",
            markup=False,
        )

    run_async(main)


app.add_typer(campaign_app, name="campaign")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
