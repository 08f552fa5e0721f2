"""A campaign's learning curve as people read it: one row per round, as a table and a picture.

Each round gives its headline metric with its 95% interval (what the evaluate step measured on
held-out problems), how many games it played and what share of them counted, the players' mean
rewards, and the final loss of each training the round ran. ``thinktank campaign report``, the
campaign API and the dashboard's campaign page all read rounds through :func:`load_report`, so
they show the same numbers.

The headline is the evaluation's ``headline`` entry when it has one (SPC: the critic's mean step
accuracy; RLAD: the solve rate, each with its Wilson interval). Rounds evaluated before that
entry existed fall back to what they stored: the critic's ProcessBench F1 (no interval: an F1
over subsets is not a proportion) or the solve rate with the Wilson interval of solved/problems.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from store import campaigns as repo
from store import model_versions
from store.runs import Store
from store.tables.campaigns import Campaign, CampaignRound
from store.tables.training import ModelVersion, TrainingRun
from training.evaluation.stats import wilson_interval

CONFIDENCE = 0.95

REWARD_NAMES = {"spc": ("critic", "sneaky"), "rlad": ("abstraction",)}
"""The players whose mean game reward each kind reports, in the table's order."""


class Headline(BaseModel):
    """The number a round is judged by, with its interval (None where it has none)."""

    name: str
    value: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0


class RoundReport(BaseModel):
    """One round of the learning curve."""

    round: int = Field(description="0 is the baseline evaluation")
    headline: Headline | None = Field(None, description="null until the round is evaluated")
    games: int | None = Field(None, description="games played (null before the play step)")
    failed_games: int = Field(0, description="game runs that failed and count for nothing")
    valid_share: float | None = Field(
        None,
        description="SPC: valid rewrites / games; RLAD: abstractions that did not leak the "
        "answer / abstractions",
    )
    rewards: dict[str, float | None] = Field(
        default_factory=dict, description="player -> mean game reward"
    )
    improvement: float | None = Field(
        None, description="RLAD: mean solve-rate gain of an abstraction over none"
    )
    losses: dict[str, float | None] = Field(
        default_factory=dict,
        description="trained model -> final training loss (null while it trains or if lost)",
    )
    skipped: dict[str, str] = Field(
        default_factory=dict, description="model -> why the round did not train it"
    )


class CampaignReport(BaseModel):
    id: str
    name: str
    kind: str
    status: str
    rounds: list[RoundReport]


# --- reading the store ---------------------------------------------------------------------


async def load_report(
    store: Store, campaign: Campaign, rounds: list[CampaignRound] | None = None
) -> CampaignReport:
    """The campaign's rounds (read unless given) with the training runs they launched."""
    if rounds is None:
        rounds = await repo.rounds_of(store, campaign.id)
    run_ids = {
        entry["id"]
        for row in rounds
        for entry in (row.training_runs or {}).values()
        if isinstance(entry, dict) and isinstance(entry.get("id"), str)
    }
    # a run missing from the store (a database restored without it) has an unknown loss
    trainings = await model_versions.training_runs_and_versions(store, run_ids)
    return build_report(campaign, rounds, trainings)


def build_report(
    campaign: Campaign,
    rounds: Iterable[CampaignRound],
    trainings: Mapping[str, tuple[TrainingRun, ModelVersion | None]],
) -> CampaignReport:
    return CampaignReport(
        id=campaign.id,
        name=campaign.name,
        kind=campaign.kind,
        status=campaign.status,
        rounds=[round_report(campaign.kind, row, trainings) for row in rounds],
    )


def round_report(
    kind: str,
    row: CampaignRound,
    trainings: Mapping[str, tuple[TrainingRun, ModelVersion | None]],
) -> RoundReport:
    metrics = row.metrics or {}
    report = RoundReport(round=row.round, headline=headline(kind, metrics.get("eval")))
    games = metrics.get("games")
    if isinstance(games, dict) and games:
        _game_figures(kind, games, report)
    for model, entry in (row.training_runs or {}).items():
        if not isinstance(entry, dict):
            continue
        if "skipped" in entry:
            report.skipped[model] = str(entry["skipped"])
        elif isinstance(entry.get("id"), str):
            report.losses[model] = final_loss(*trainings.get(entry["id"], (None, None)))
    return report


def headline(kind: str, evaluation: Any) -> Headline | None:
    """The evaluation's headline, or the one its stored metrics imply (older rounds)."""
    if not isinstance(evaluation, dict) or not evaluation:
        return None
    stored = evaluation.get("headline")
    if isinstance(stored, dict):
        return Headline.model_validate(stored)
    if kind == "spc":
        # ProcessBench F1 is a harmonic mean averaged over subsets: no binomial interval
        return Headline(
            name="critic F1", value=_number(evaluation.get("critic_f1")), n=_count(evaluation)
        )
    solved, problems = evaluation.get("solved"), evaluation.get("problems")
    value = _number(evaluation.get("solve_rate"))
    if isinstance(solved, int) and isinstance(problems, int) and problems > 0:
        low, high = wilson_interval(solved, problems, CONFIDENCE)
        return Headline(name="solve rate", value=value, low=low, high=high, n=problems)
    return Headline(name="solve rate", value=value, n=_count(evaluation))


def _game_figures(kind: str, games: dict[str, Any], report: RoundReport) -> None:
    played = games.get("games")
    report.games = played if isinstance(played, int) else None
    report.failed_games = int(games.get("failed_runs") or 0)
    if kind == "spc":
        if report.games:
            report.valid_share = _ratio(games.get("valid"), report.games)
            # the summary stores sums over the round's games; a mean per game reads across
            # rounds of different sizes
            for player in REWARD_NAMES["spc"]:
                report.rewards[player] = _ratio(games.get(f"{player}_reward"), report.games)
        return
    abstractions = games.get("abstractions")
    if isinstance(abstractions, int) and abstractions > 0:
        report.valid_share = _ratio(abstractions - int(games.get("leaked") or 0), abstractions)
    report.rewards["abstraction"] = _number(games.get("mean_reward"))
    report.improvement = _number(games.get("mean_improvement"))


def final_loss(run: TrainingRun | None, version: ModelVersion | None) -> float | None:
    """The loss of a training's last step. The registered version's metrics hold it exactly;
    the run's progress holds the last step it reported (throttled to one write a second), which
    is all there is while it trains or when it failed."""
    if version is not None:
        loss = _number((version.metrics or {}).get("train_loss_last"))
        if loss is not None:
            return loss
    if run is None:
        return None
    return _number((run.progress or {}).get("loss"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _ratio(part: Any, whole: int) -> float | None:
    value = _number(part)
    return None if value is None or whole <= 0 else value / whole


def _count(evaluation: dict[str, Any]) -> int:
    for key in ("judged", "problems"):
        if isinstance(evaluation.get(key), int):
            return int(evaluation[key])
    return 0


# --- the table -----------------------------------------------------------------------------


def loss_models(report: CampaignReport) -> list[str]:
    """Every model some round trained, in the order they first appear."""
    seen: dict[str, None] = {}
    for row in report.rounds:
        for model in [*row.losses, *row.skipped]:
            seen.setdefault(model, None)
    return list(seen)


def headline_name(report: CampaignReport) -> str:
    names = list(dict.fromkeys(r.headline.name for r in report.rounds if r.headline))
    if len(names) == 1:
        return names[0]
    if not names:
        return "step accuracy" if report.kind == "spc" else "solve rate"
    return "metric"  # rounds measured before and after the headline changed: each cell says


def _fixed(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(h: Headline | None) -> str:
    if h is None or h.low is None or h.high is None:
        return "-"
    return f"{h.low:.3f}-{h.high:.3f}"


def table_rows(report: CampaignReport) -> list[list[str]]:
    """Header and one row per round, every cell text."""
    name = headline_name(report)
    players = REWARD_NAMES.get(report.kind, ())
    models = loss_models(report)
    header = [
        "round",
        name,
        f"{100 * CONFIDENCE:g}% CI",
        "n",
        "games",
        "valid",
        *[f"{p} reward" for p in players],
        *(["gain"] if report.kind == "rlad" else []),
        *[f"loss {m}" for m in models],
    ]
    rows = [header]
    for r in report.rounds:
        h = r.headline
        value = _fixed(h.value if h else None)
        if h is not None and name == "metric":
            value = f"{h.name} {value}"
        games = "-" if r.games is None else str(r.games)
        if r.failed_games:
            games += f" (+{r.failed_games} failed)"
        losses = []
        for model in models:
            if model in r.skipped:
                losses.append("skipped")
            else:
                losses.append(_fixed(r.losses.get(model), 4))
        rows.append(
            [
                "base" if r.round == 0 else str(r.round),
                value,
                _interval(h),
                str(h.n) if h and h.n else "-",
                games,
                "-" if r.valid_share is None else f"{100 * r.valid_share:.0f}%",
                *[_fixed(r.rewards.get(p)) for p in players],
                *([_fixed(r.improvement)] if report.kind == "rlad" else []),
                *losses,
            ]
        )
    return rows


def render_table(report: CampaignReport) -> str:
    """The learning curve as plain text, a title line and one line per round."""
    rows = table_rows(report)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    title = f"campaign {report.name} ({report.id}) · {report.kind} · {report.status}"
    return "\n".join([title, *lines])


def skipped_notes(report: CampaignReport) -> list[str]:
    """Why a round trained nothing for a model, one line each (the table says 'skipped')."""
    return [
        f"round {r.round}: {model} not trained: {reason}"
        for r in report.rounds
        for model, reason in r.skipped.items()
    ]


# --- the picture ---------------------------------------------------------------------------


def _label(round_: int) -> str:
    return "base" if round_ == 0 else f"r{round_}"


def write_curve_png(report: CampaignReport, path: Path) -> Path:
    """The headline per round with its interval as error bars on top; below it, small panels
    of the valid-game share, the mean rewards and the final training losses."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit to import
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure = plt.figure(figsize=(9, 6.5), dpi=110)
    grid = figure.add_gridspec(2, 3, height_ratios=[2.2, 1], hspace=0.45, wspace=0.35)
    top = figure.add_subplot(grid[0, :])
    panels = [figure.add_subplot(grid[1, i]) for i in range(3)]
    rounds = [r.round for r in report.rounds]

    measured = [r for r in report.rounds if r.headline and r.headline.value is not None]
    name = headline_name(report)
    if measured:
        xs = [r.round for r in measured]
        ys = [r.headline.value for r in measured if r.headline]
        # clamped: an interval's end can sit a rounding error inside the value
        below = [
            max(0.0, r.headline.value - r.headline.low)
            if r.headline and r.headline.value is not None and r.headline.low is not None
            else 0.0
            for r in measured
        ]
        above = [
            max(0.0, r.headline.high - r.headline.value)
            if r.headline and r.headline.value is not None and r.headline.high is not None
            else 0.0
            for r in measured
        ]
        top.errorbar(xs, ys, yerr=[below, above], fmt="o-", capsize=5, color="#4e79a7")
        for x, y, r in zip(xs, ys, measured, strict=True):
            assert r.headline is not None
            n = f" (n={r.headline.n})" if r.headline.n else ""
            # rounds measured by different metrics: each point says which
            which = f"{r.headline.name} " if name == "metric" else ""
            top.annotate(
                f"{which}{y:.2f}{n}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8
            )
    else:
        top.text(0.5, 0.5, "not evaluated yet", ha="center", va="center", transform=top.transAxes)
    top.set_ylabel(f"{name} ({100 * CONFIDENCE:g}% interval)")
    top.set_ylim(-0.05, 1.05)
    top.set_title(f"campaign {report.name}: {report.kind}, {name} per round", fontsize=10)

    _small_panel(
        panels[0],
        "valid-game share",
        {"valid": [(r.round, r.valid_share) for r in report.rounds]},
        ylim=(-0.05, 1.05),
    )
    players = REWARD_NAMES.get(report.kind, ())
    rewards = {p: [(r.round, r.rewards.get(p)) for r in report.rounds] for p in players}
    if report.kind == "rlad":
        rewards["gain"] = [(r.round, r.improvement) for r in report.rounds]
    _small_panel(panels[1], "mean reward", rewards)
    trained = any(r.losses for r in report.rounds)
    _small_panel(
        panels[2],
        "training loss (final step)",
        {m: [(r.round, r.losses.get(m)) for r in report.rounds] for m in loss_models(report)},
        empty="none yet" if trained or not any(r.skipped for r in report.rounds) else "not trained",
    )
    for axes in [top, *panels]:
        axes.set_xticks(rounds, [_label(x) for x in rounds])
        if rounds:
            axes.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
        axes.grid(alpha=0.3)
    figure.savefig(path)
    plt.close(figure)
    return path


def _small_panel(
    axes: Any,
    title: str,
    series: dict[str, list[tuple[int, float | None]]],
    ylim: tuple[float, float] | None = None,
    empty: str = "none yet",
) -> None:
    drawn = False
    for label, points in series.items():
        known = [(x, y) for x, y in points if y is not None]
        if not known:
            continue
        axes.plot([x for x, _ in known], [y for _, y in known], "o-", label=label, markersize=4)
        drawn = True
    if not drawn:
        axes.text(0.5, 0.5, empty, ha="center", va="center", transform=axes.transAxes)
    elif len(series) > 1:
        axes.legend(fontsize=7)
    if ylim is not None:
        axes.set_ylim(*ylim)
    axes.set_title(title, fontsize=9)
    axes.tick_params(labelsize=8)
