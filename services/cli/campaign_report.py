"""``thinktank campaign report``: a campaign's learning curve as a table and a PNG.

Registered on the ``campaign`` command group (``services.cli.campaign``). The numbers come from
``training.campaigns.report``, the same the campaign API and the dashboard show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import CliError, console, escape, open_store, run_async
from services.settings import Settings
from store import campaigns as repo

CURVE_FILE = "learning-curve.png"


def campaign_report(
    campaign: str = typer.Argument(..., help="campaign id or name"),
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="where to write the PNG (default: learning-curve.png in its folder)"
        ),
    ] = None,
    as_json: bool = typer.Option(False, "--json", help="print the rounds as JSON"),
) -> None:
    """Each round's headline metric with its 95% interval, games played, valid-game share,
    mean rewards and final training loss; writes the learning curve as a PNG."""
    # here, not at the top: the campaign package loads the trainers' and patterns' settings
    from training.campaigns import campaign_dir
    from training.campaigns.report import (
        load_report,
        render_table,
        skipped_notes,
        write_curve_png,
    )

    settings = Settings()

    async def main() -> None:
        if out is not None and out.suffix.lower() != ".png":
            raise CliError(f"--out {out}: the learning curve is a PNG; name a .png file")
        async with open_store(settings) as store:
            found = await repo.get_campaign(store, campaign)
            rounds = await repo.rounds_of(store, found.id)
            if not rounds:
                raise CliError(
                    f"campaign {found.name} has no rounds yet ({found.status}); its report "
                    "has nothing to show until its first round starts"
                )
            report = await load_report(store, found, rounds)
        path = out if out is not None else campaign_dir(found.id) / CURVE_FILE
        try:
            write_curve_png(report, path)
        except OSError as exc:
            raise CliError(
                f"cannot write the learning curve to {path}: {exc.strerror or exc}"
            ) from None
        if as_json:
            typer.echo(json.dumps({**report.model_dump(mode="json"), "png": str(path)}, indent=2))
            return
        console.print(escape(render_table(report)), highlight=False, soft_wrap=True)
        for note in skipped_notes(report):
            console.print(f"[dim]{escape(note)}", highlight=False)
        console.print(f"learning curve: {escape(str(path))}", highlight=False, soft_wrap=True)

    run_async(main)
