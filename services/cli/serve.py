"""``thinktank serve`` and ``thinktank worker``: the HTTP API, Ray Serve, a Celery worker."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import typer

from services.cli.common import console
from services.settings import Settings

T = TypeVar("T")


app = typer.Typer()


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
