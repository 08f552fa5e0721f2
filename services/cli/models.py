"""``thinktank models``: the base models one can name and the registered model versions."""

from __future__ import annotations

from typing import TypeVar

import typer
from rich.table import Table

from agents.backends.local.catalog import CATALOG, installed
from agents.backends.local.config import LocalModelConfig
from services.cli.common import CliError, console, escape, open_store, run_async
from services.settings import Settings

T = TypeVar("T")


app = typer.Typer(
    help="Base models and registered model versions (trained adapters).", no_args_is_help=True
)


@app.command("list")
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


@app.command("show")
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


@app.command("base")
def models_base() -> None:
    """List the base models the local backend can name, and whether each is ready here."""
    settings = Settings()
    default = settings.models.default
    chosen = default.model if isinstance(default, LocalModelConfig) else None
    table = Table("name", "model", "quantization", "license", "here", "good for")
    for entry in CATALOG.values():
        mark = " (default)" if entry.name == chosen else ""
        table.add_row(
            f"{entry.name}{mark}",
            entry.title,
            entry.quantization,
            entry.license,
            escape(installed(entry)),
            entry.note,
        )
    console.print(table)
    console.print(
        "A local model may also be a GGUF file or a transformers model folder (a path), or, "
        "with engine = 'transformers' where a hub is reachable, a Hugging Face id. The default "
        "is settings' models.default.model (THINKTANK_MODELS__DEFAULT='{\"backend\": "
        '"local", "model": "qwen2.5-coder-1.5b"}\').',
        highlight=False,
    )
