"""``thinktank campaign``: start, follow, resume and cancel self-play campaigns.

With ``THINKTANK_BROKER_URL`` set, a campaign is driven by the Celery workers (a chain of step
tasks per round, ``services.campaign_chains``) and the command returns once it is sent, or
follows it with ``--watch``. Without a broker (the embedded defaults) the command drives it
itself, in the foreground; Ctrl-C leaves it where it is and ``campaign resume`` continues it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Column, Table

from agents.backends.local.catalog import DEFAULT_MODEL
from agents.model_map import ModelRouter
from services.cli.campaign_report import campaign_report
from services.cli.common import CliError, console, escape, open_store, run_async, when
from services.settings import Settings
from store import campaigns as repo
from store.runs import Store
from store.tables.campaigns import Campaign, CampaignRound

campaign_app = typer.Typer(
    help="Self-play campaigns: play, train, serve and evaluate, round after round.",
    no_args_is_help=True,
)
campaign_app.command("report")(campaign_report)

WATCH_EVERY_S = 2.0


def assignments(values: list[str], what: str) -> dict[str, Any]:
    """``FIELD=VALUE`` options; values are JSON when they parse, else text."""
    options: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{what} option {value!r} is not FIELD=VALUE")
        try:
            options[key.strip().replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip().replace("-", "_")] = raw
    return options


def role_assignments(values: list[str]) -> dict[str, dict[str, Any]]:
    """``MODEL:FIELD=VALUE`` options, by model."""
    roles: dict[str, dict[str, Any]] = {}
    for value in values:
        model, sep, option = value.partition(":")
        if not sep or not model.strip():
            raise CliError(f"--train-role option {value!r} is not MODEL:FIELD=VALUE")
        roles.setdefault(model.strip(), {}).update(assignments([option], "--train-role"))
    return roles


def config_error(exc: ValidationError) -> CliError:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"--{where.replace('_', '-')}: {message}" if where else message)
    return CliError("; ".join(problems))


def _number(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "–"


def headline_score(headline: dict[str, Any]) -> str:
    """A round's headline metric with its interval: ``step accuracy 0.625 [0.41, 0.81] n=24``."""
    name = str(headline.get("name", "score")).replace("_", " ")
    value, low, high = headline.get("value"), headline.get("low"), headline.get("high")
    if not isinstance(value, int | float):
        return f"{name} –"
    interval = f" [{_number(low)}, {_number(high)}]" if low is not None else ""
    return f"{name} {_number(value)}{interval} n={headline.get('n', 0)}"


def round_headline(kind: str, row: CampaignRound) -> dict[str, str]:
    games = row.metrics.get("games", {})
    evaluation = row.metrics.get("eval", {})
    headline = evaluation.get("headline")
    if kind == "spc":
        played = (
            f"{games.get('games', 0)} games ({games.get('valid', 0)} valid): critic "
            f"{games.get('critic_wins', 0)}, sneaky {games.get('sneaky_wins', 0)}, invalid "
            f"{games.get('invalid', 0)}"
            if games
            else ""
        )
        scores = [headline_score(headline)] if headline else []
        if "critic_f1" in evaluation or not headline:
            scores.append(f"critic F1 {_number(evaluation.get('critic_f1'))}")
        score = ", ".join(scores) if evaluation else ""
    else:
        played = (
            f"{games.get('games', 0)} games: reward {_number(games.get('mean_reward'))}, "
            f"gain {_number(games.get('mean_improvement'))}"
            if games
            else ""
        )
        rate = f"solve rate {_number(evaluation.get('solve_rate'))}"
        score = (headline_score(headline) if headline else rate) if evaluation else ""
    steps = " ".join(
        f"{name}{'✓' if entry.get('status') == 'done' else '…'}"
        for name, entry in row.steps.items()
    )
    skipped = [m for m, e in row.training_runs.items() if "skipped" in e]
    versions = ", ".join([*row.versions.values(), *(f"{m} not trained" for m in skipped)])
    return {"steps": steps, "games": played, "versions": versions, "score": score}


def round_notes(row: CampaignRound) -> list[str]:
    """What a round did not do, and why: a role it did not train on bad input."""
    return [
        f"round {row.round}: {model} not trained: {entry['skipped']}"
        for model, entry in row.training_runs.items()
        if "skipped" in entry
    ]


def print_campaign(campaign: Campaign, rounds: list[CampaignRound]) -> None:
    where = f"round {campaign.round}, {campaign.step}" if campaign.step else "finished"
    console.print(
        f"[bold]campaign {escape(campaign.name)}[/bold] ({campaign.id}) · {campaign.kind} · "
        f"{campaign.status} · {where} · driver {campaign.driver}"
    )
    if campaign.error:
        console.print(f"[red]error:[/red] {escape(campaign.error)}")
    if campaign.versions:
        current = ", ".join(f"{m}={v}" for m, v in campaign.versions.items())
        console.print(f"serving: {escape(current)}")
    table = Table(
        Column("round", justify="right"),
        "steps",
        "games",
        "trained versions",
        "evaluation",
        "finished",
    )
    for row in rounds:
        line = round_headline(campaign.kind, row)
        table.add_row(
            str(row.round),
            line["steps"],
            escape(line["games"]),
            escape(line["versions"]),
            line["score"],
            when(row.finished_at),
        )
    console.print(table)
    for row in rounds:
        for note in round_notes(row):
            console.print(escape(note), highlight=False)


async def _show(store: Store, name: str) -> Campaign:
    campaign = await repo.get_campaign(store, name)
    print_campaign(campaign, await repo.rounds_of(store, campaign.id))
    return campaign


async def _watch(store: Store, campaign_id: str) -> Campaign:
    """Print each step as the campaign reaches it, until it ends."""
    seen: tuple[Any, ...] = ()
    while True:
        campaign = await repo.get_campaign(store, campaign_id)
        now = (campaign.status, campaign.round, campaign.step)
        if now != seen:
            seen = now
            where = f"round {campaign.round}: {campaign.step}" if campaign.step else "finished"
            console.print(f"[dim]{campaign.status} · {where}")
        if campaign.status in ("succeeded", "failed", "cancelled"):
            return campaign
        await asyncio.sleep(WATCH_EVERY_S)


async def _drive_here(settings: Settings, store: Store, campaign_id: str, token: str) -> Campaign:
    from training.campaigns import CampaignEnv, drive

    models = ModelRouter(settings.models, on_progress=lambda m: console.print(f"[dim]· {m}"))
    env = CampaignEnv(
        store,
        models,
        settings.database_url,
        on_progress=lambda message: console.print(f"· {escape(message)}", highlight=False),
    )
    try:
        return await drive(env, campaign_id, token)
    finally:
        await models.close()


async def _follow(settings: Settings, store: Store, campaign: Campaign, token: str, *, watch: bool):
    """Drive the campaign here (embedded) or hand it to the workers (Celery)."""
    if settings.broker_url:
        from execution.celery_app import make_celery
        from services.campaign_chains import start_on_celery

        await start_on_celery(make_celery(settings.broker_url), store, campaign.id, token)
        console.print(
            f"campaign {escape(campaign.name)} ({campaign.id}) sent to the workers; follow it "
            f"with `thinktank campaign show {escape(campaign.name)} --watch`"
        )
        if not watch:
            return campaign
        ended = await _watch(store, campaign.id)
    else:
        ended = await _drive_here(settings, store, campaign.id, token)
    print_campaign(ended, await repo.rounds_of(store, ended.id))
    if ended.status != "succeeded":
        raise typer.Exit(1)
    return ended


@campaign_app.command("start")
def campaign_start(
    kind: str = typer.Argument(..., help="spc or rlad"),
    rounds: int = typer.Option(2, min=1, help="play-train-evaluate rounds"),
    games_per_round: int = typer.Option(8, min=1, help="games each round"),
    problems: str = typer.Option(
        "gen:mixed?difficulty=1&n=1000", help="games' problems: a file with answers or a gen: spec"
    ),
    eval_problems: str | None = typer.Option(
        None, help="held-out problems (default: gen:step-errors for spc, gen:mixed for rlad)"
    ),
    eval_limit: int = typer.Option(16, min=1, help="evaluation problems per round"),
    baseline: bool = typer.Option(True, help="evaluate the starting models first (round 0)"),
    concurrency: int = typer.Option(4, min=1, max=256, help="games and evaluation runs at once"),
    base: str = typer.Option(
        DEFAULT_MODEL,
        help="base model (default: the one the embedded default serves), model directory or "
        "model version",
    ),
    name: str | None = typer.Option(None, help="the campaign's name (names its model versions)"),
    game: Annotated[
        list[str] | None, typer.Option("--game", "-g", help="game option FIELD=VALUE (repeatable)")
    ] = None,
    train: Annotated[
        list[str] | None,
        typer.Option("--train", "-t", help="trainer option FIELD=VALUE (repeatable)"),
    ] = None,
    train_role: Annotated[
        list[str] | None,
        typer.Option(
            "--train-role",
            help="one trained model's trainer option MODEL:FIELD=VALUE, over --train's "
            "(critic:learning_rate=1e-5; repeatable)",
        ),
    ] = None,
    balance: bool = typer.Option(
        True, help="spc: the games' critic is one version behind the sneaky generator's"
    ),
    warm_start: bool = typer.Option(
        False,
        help="round 0 builds SFT data for each trained role and trains its first version on "
        "it (SPC's round-0 SFT, RLAD's warm start) before the baseline",
    ),
    warm_start_option: Annotated[
        list[str] | None,
        typer.Option(
            "--warm-start-option",
            "-w",
            help="warm-start data option FIELD=VALUE, as `thinktank data warm-start`'s flags "
            "(n=64, teacher=default; repeatable; implies --warm-start)",
        ),
    ] = None,
    warm_start_train: Annotated[
        list[str] | None,
        typer.Option(
            "--warm-start-train",
            help="SFT trainer option of the warm-start trainings FIELD=VALUE (repeatable)",
        ),
    ] = None,
    evaluation: Annotated[
        list[str] | None,
        typer.Option("--eval", "-e", help="evaluation option FIELD=VALUE (repeatable)"),
    ] = None,
    launcher: str = typer.Option("subprocess", help="training jobs: subprocess, torchrun or ray"),
    watch: bool = typer.Option(
        True, help="with workers: follow the campaign until it ends (--no-watch returns at once)"
    ),
) -> None:
    """Start a self-play campaign (SPC: critic vs sneaky generator; RLAD: abstraction and
    solution players)."""
    from training.campaigns import CampaignConfig, CampaignError, create_campaign

    settings = Settings()

    async def main() -> None:
        try:
            config = CampaignConfig.model_validate(
                {
                    "kind": kind,
                    "rounds": rounds,
                    "games_per_round": games_per_round,
                    "problems": problems,
                    "eval_problems": eval_problems,
                    "eval_limit": eval_limit,
                    "baseline": baseline,
                    "concurrency": concurrency,
                    "base": base,
                    "game": assignments(game or [], "--game"),
                    "train": assignments(train or [], "--train"),
                    "train_roles": role_assignments(train_role or []),
                    "balance": balance,
                    "warm_start": (
                        assignments(warm_start_option or [], "--warm-start-option")
                        if warm_start or warm_start_option or warm_start_train
                        else None
                    ),
                    "warm_start_train": assignments(warm_start_train or [], "--warm-start-train"),
                    "eval": assignments(evaluation or [], "--eval"),
                    "launcher": {"launcher": launcher},
                }
            )
        except ValidationError as exc:
            raise config_error(exc) from None
        driver = "celery" if settings.broker_url else "embedded"
        async with open_store(settings) as store:
            try:
                campaign = await create_campaign(store, config, name=name, driver=driver)
            except (CampaignError, repo.CampaignNameTaken) as exc:
                raise CliError(str(exc)) from None
            console.print(
                f"campaign [bold]{escape(campaign.name)}[/bold] ({campaign.id}): {config.rounds} "
                f"rounds of {config.games_per_round} {kind} games"
            )
            assert campaign.driver_token is not None
            await _follow(settings, store, campaign, campaign.driver_token, watch=watch)

    run_async(main)


@campaign_app.command("show")
def campaign_show(
    campaign: str = typer.Argument(..., help="campaign id or name"),
    watch: bool = typer.Option(False, help="follow it until it ends"),
) -> None:
    """A campaign's rounds: games, trained versions and evaluation metrics."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            found = await _show(store, campaign)
            if watch and found.status not in ("succeeded", "failed", "cancelled"):
                ended = await _watch(store, found.id)
                print_campaign(ended, await repo.rounds_of(store, ended.id))

    run_async(main)


@campaign_app.command("list")
def campaign_list(
    status: str | None = typer.Option(None, help="only campaigns with this status"),
    limit: int = typer.Option(20, min=1, max=1000),
) -> None:
    """Campaigns, newest first."""
    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            found = await repo.list_campaigns(store, limit=limit, status=status)
        if not found:
            console.print("no campaigns yet (`thinktank campaign start spc`)")
            return
        table = Table("id", "name", "kind", "status", "round", "step", "created")
        for c in found:
            table.add_row(
                c.id,
                escape(c.name),
                c.kind,
                c.status,
                str(c.round),
                c.step or "",
                when(c.created_at),
            )
        console.print(table)

    run_async(main)


@campaign_app.command("resume")
def campaign_resume(
    campaign: str = typer.Argument(..., help="campaign id or name"),
    watch: bool = typer.Option(True, help="with workers: follow it until it ends"),
) -> None:
    """Continue a failed, cancelled or interrupted campaign at the step it was in."""
    from training.campaigns import CampaignError, resume_campaign

    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            found = await repo.get_campaign(store, campaign)
            driver = "celery" if settings.broker_url else "embedded"
            try:
                token = await resume_campaign(store, found.id, driver=driver)
            except CampaignError as exc:
                raise CliError(str(exc)) from None
            console.print(
                f"resuming campaign {escape(found.name)} at round {found.round}, {found.step}"
            )
            await _follow(settings, store, found, token, watch=watch)

    run_async(main)


@campaign_app.command("cancel")
def campaign_cancel(campaign: str = typer.Argument(..., help="campaign id or name")) -> None:
    """Stop a campaign; its finished rounds, versions and runs stay."""
    from training.campaigns import cancel_campaign

    settings = Settings()

    async def main() -> None:
        async with open_store(settings) as store:
            found = await cancel_campaign(store, (await repo.get_campaign(store, campaign)).id)
        console.print(f"campaign {escape(found.name)} is {found.status}")

    run_async(main)
