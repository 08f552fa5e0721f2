"""The ``thinktank`` command line: the root command and its groups, one module each.

Every command is a thin face: it reads its options, calls the function the API and the
workers call too, and prints. Bad input is one line and exit status 2 (services.cli.common).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer

from services.cli import (
    campaign,
    data,
    db,
    evaluate,
    game,
    keys,
    models,
    runs,
    serve,
    solve,
    train,
)

app = typer.Typer(
    help="thinktank: several LLM agents reasoning together, every word stored.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def installed_version() -> str:
    try:
        return version("thinktank")
    except PackageNotFoundError:  # run from a checkout that pip never installed
        return "unknown (not installed)"


def _print_version(requested: bool) -> None:
    if requested:
        typer.echo(f"thinktank {installed_version()}")
        raise typer.Exit()


@app.callback()
def root(
    show_version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the installed version and exit.",
    ),
) -> None:
    """thinktank: several LLM agents reasoning together, every word stored."""


app.add_typer(solve.app)  # solve, patterns
app.add_typer(runs.app, name="runs")
app.add_typer(db.app, name="db")
app.add_typer(serve.app)  # serve, worker
app.add_typer(keys.app, name="keys")
app.add_typer(game.app, name="game")
app.add_typer(train.app, name="train")
app.add_typer(models.app, name="models")
app.add_typer(evaluate.app)  # eval, eval-critic
app.add_typer(data.app, name="data")
app.add_typer(campaign.campaign_app, name="campaign")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
