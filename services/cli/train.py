"""``thinktank train``: LoRA training as model versions, thin over training.jobs."""

from __future__ import annotations

import os
from typing import Any, TypeVar

import typer
from pydantic import ValidationError

from graphs.options import explain
from services.cli.common import CliError, console, escape, open_store, parse_options, run_async
from services.settings import Settings

T = TypeVar("T")


app = typer.Typer(
    help="Train LoRA adapters (SFT, game-reward RL) as model versions.", no_args_is_help=True
)

TRAIN_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
LAUNCHER_FIELDS = frozenset({"base_adapter", "parent", "dataset_hash"})


def _train_config(kind: str, args: list[str]) -> Any:
    from training.jobs import CONFIGS, config_for

    options = parse_options(args)
    for filled in LAUNCHER_FIELDS & options.keys():
        raise CliError(f"--{filled.replace('_', '-')} is filled in by thinktank, not by hand")
    try:
        return config_for(kind, options)
    except ValidationError as exc:
        known = [f for f in CONFIGS[kind].model_fields if f not in LAUNCHER_FIELDS]
        raise CliError(explain(exc, subject=f"train {kind}", known=known)) from None


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
            try:
                job = await jobs.launch_run(
                    store,
                    run,
                    database_url=settings.database_url,
                    options=options,
                    detach=detach,
                )
            except jobs.JobConflict as exc:
                raise CliError(str(exc)) from None
            return run.id, job

    submitted = run_async(submit)
    if submitted is None:
        return
    run_id, job = submitted
    if isinstance(job, str):  # a Ray job: the cluster runs it, whatever happens here
        console.print(f"Ray job {job} (`ray job logs {job}`)")
    if detach:
        where = "" if isinstance(job, str) else f" (pid {job.pid}); log: {jobs.log_path(run_id)}"
        console.print(
            f"running in the background{where}; follow it with `thinktank train show {run_id}`"
        )
        return
    code = jobs.wait_run(job, options)
    if code is None:
        console.print(f"[yellow]stopped following[/yellow]: Ray job {job} goes on")
        raise typer.Exit(130)

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
    @app.command(
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


@app.command("options")
def train_options(kind: str = typer.Argument(..., help="sft or rl")) -> None:
    """List every option of a trainer, with its default."""
    from services.cli.training_tables import print_config_options
    from training.jobs import CONFIGS

    if kind not in CONFIGS:
        console.print(f"[red]error:[/red] unknown trainer {kind!r} (sft or rl)")
        raise typer.Exit(2)
    print_config_options(console, f"train {kind}", CONFIGS[kind])


@app.command("list")
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


@app.command("show")
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
