"""A campaign's learning curve as a researcher reads it: the table of rounds, the PNG, and
``thinktank campaign report`` with its one-line refusals. Rounds and training runs are written
into the store as the campaign's steps and trainers write them, so nothing is trained here."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from store import campaigns as repo
from store import model_versions
from store.runs import Store
from store.tables.campaigns import Campaign
from tests.conftest import run_cli
from training.campaigns import campaign_dir
from training.campaigns.report import load_report, render_table, table_rows, write_curve_png
from training.evaluation.stats import wilson_interval

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


async def training(
    store: Store, name: str, *, loss: float, registered_loss: float | None = None
) -> str:
    """A training run that reported ``loss`` at its last progress write and, with
    ``registered_loss``, registered its version with that last-step loss (as the trainer
    does: its progress writes are throttled, so the version's figure is the exact one)."""
    run, _ = await model_versions.create_training_run(
        store, kind="rl", config={}, model_name=name, name_prefix=name
    )
    await model_versions.record_progress(
        store, run.id, {"status": "running", "step": 3, "total_steps": 4, "loss": loss}
    )
    if registered_loss is not None:
        await model_versions.register_model_version(
            store,
            name=name,
            kind="rl",
            role=name.split("-")[1],
            base_model="smollm2",
            adapter_path=model_versions.adapter_dir(name),
            dataset_hash="ab" * 32,
            metrics={"train_loss_last": registered_loss},
            config={},
            training_run_id=run.id,
        )
        await model_versions.finish_training_run(store, run.id, "succeeded")
    return run.id


async def stored_campaign(
    store: Store, name: str, kind: str, rounds: list[dict[str, Any]]
) -> Campaign:
    campaign = await repo.create_campaign(
        store, name=name, kind=kind, config={"kind": kind}, driver="celery"
    )
    token = campaign.driver_token
    assert token is not None
    for number, values in enumerate(rounds):
        await repo.get_round(store, campaign.id, number)
        await repo.update_round(store, campaign.id, number, token, **values)
    await repo.update_campaign(store, campaign.id, token, status="succeeded", step=None)
    return await repo.get_campaign(store, campaign.id)


async def spc_campaign(store: Store) -> Campaign:
    """A baseline evaluated before evaluations had a headline (ProcessBench F1 only), a round
    that trained both players, and a round whose critic is still training and whose sneaky
    generator had nothing to learn from."""
    critic_1 = await training(store, "apples-critic-r1", loss=0.9, registered_loss=0.42)
    sneaky_1 = await training(store, "apples-sneaky-r1", loss=0.7, registered_loss=0.31)
    critic_2 = await training(store, "apples-critic-r2", loss=0.25)
    games = {"games": 8, "valid": 6, "critic_wins": 4, "sneaky_wins": 2, "invalid": 2}
    return await stored_campaign(
        store,
        "apples",
        "spc",
        [
            {"metrics": {"eval": {"critic_f1": 0.4, "judged": 16}}},
            {
                "training_runs": {
                    "critic": {"id": critic_1, "status": "succeeded"},
                    "sneaky": {"id": sneaky_1, "status": "succeeded"},
                },
                "metrics": {
                    "games": {**games, "critic_reward": 2, "sneaky_reward": -2, "failed_runs": 1},
                    "eval": {
                        "critic_f1": 0.5,
                        "headline": {
                            "name": "step accuracy",
                            "value": 0.625,
                            "low": 0.386,
                            "high": 0.815,
                            "n": 16,
                        },
                    },
                },
            },
            {
                "training_runs": {
                    "critic": {"id": critic_2, "status": "running"},
                    "sneaky": {"skipped": "every reward was the same: no signal"},
                },
                "metrics": {"games": {"games": 4, "valid": 4, "critic_reward": 4}},
            },
        ],
    )


async def test_an_spc_campaigns_table_has_each_rounds_metric_games_rewards_and_loss(
    store: Store, home: Path
) -> None:
    campaign = await spc_campaign(store)
    report = await load_report(store, campaign)

    assert [r.round for r in report.rounds] == [0, 1, 2]
    baseline, first, second = report.rounds
    assert (baseline.headline.name, baseline.headline.value, baseline.headline.low) == (
        "critic F1",
        0.4,
        None,
    )
    assert first.headline.model_dump() == {
        "name": "step accuracy",
        "value": 0.625,
        "low": 0.386,
        "high": 0.815,
        "n": 16,
    }
    assert second.headline is None  # not evaluated yet
    assert (first.games, first.failed_games, first.valid_share) == (8, 1, 0.75)
    assert first.rewards == {"critic": 0.25, "sneaky": -0.25}
    # the registered version's exact loss, not the throttled last progress write
    assert first.losses == {"critic": 0.42, "sneaky": 0.31}
    assert second.losses == {"critic": 0.25}  # still training: its last progress
    assert second.skipped == {"sneaky": "every reward was the same: no signal"}

    rows = table_rows(report)
    assert rows[0] == [
        "round",
        "metric",  # the baseline was measured before evaluations named a headline
        "95% CI",
        "n",
        "games",
        "valid",
        "critic reward",
        "sneaky reward",
        "loss critic",
        "loss sneaky",
    ]
    assert rows[1] == ["base", "critic F1 0.400", "-", "16", "-", "-", "-", "-", "-", "-"]
    assert rows[2] == [
        "1",
        "step accuracy 0.625",
        "0.386-0.815",
        "16",
        "8 (+1 failed)",
        "75%",
        "0.250",
        "-0.250",
        "0.4200",
        "0.3100",
    ]
    assert rows[3][4:] == ["4", "100%", "1.000", "-", "0.2500", "skipped"]
    assert render_table(report).splitlines()[0] == (
        f"campaign apples ({campaign.id}) · spc · succeeded"
    )

    png = write_curve_png(report, home / "curves" / "apples.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 10_000  # four panels drawn, not an empty canvas


async def test_an_rlad_campaigns_solve_rate_gets_its_wilson_interval_and_leaks_count_invalid(
    store: Store, home: Path
) -> None:
    games = {"games": 4, "abstractions": 10, "leaked": 3, "mean_reward": 0.4}
    campaign = await stored_campaign(
        store,
        "hints",
        "rlad",
        [
            {"metrics": {"eval": {"solve_rate": 0.25, "solved": 4, "problems": 16}}},
            {
                "training_runs": {"abstraction": {"id": "lost-run", "status": "succeeded"}},
                "metrics": {
                    "games": {**games, "mean_improvement": 0.1},
                    "eval": {"solve_rate": 0.5, "solved": 8, "problems": 16},
                },
            },
        ],
    )
    report = await load_report(store, campaign)
    baseline, first = report.rounds
    low, high = wilson_interval(4, 16)
    assert baseline.headline.model_dump() == {
        "name": "solve rate",
        "value": 0.25,
        "low": low,
        "high": high,
        "n": 16,
    }
    assert (first.valid_share, first.rewards, first.improvement) == (0.7, {"abstraction": 0.4}, 0.1)
    assert first.losses == {"abstraction": None}  # its training run is not in the store
    rows = table_rows(report)
    assert rows[0][:2] == ["round", "solve rate"]
    assert rows[0][6:] == ["abstraction reward", "gain", "loss abstraction"]
    assert rows[2] == ["1", "0.500", "0.280-0.720", "16", "4", "70%", "0.400", "0.100", "-"]
    png = write_curve_png(report, home / "hints.png")
    assert png.read_bytes()[:8] == PNG_MAGIC


def cli_env(home: Path, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "THINKTANK_HOME": str(home),
        "THINKTANK_DATABASE_URL": database_url,
        "COLUMNS": "160",
    }


async def test_campaign_report_prints_the_table_and_writes_the_png(
    store: Store, sqlite_url: str, home: Path, tmp_path: Path
) -> None:
    campaign = await spc_campaign(store)
    env = cli_env(home, sqlite_url)

    shown = await asyncio.to_thread(run_cli, env, "campaign", "report", "apples")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"campaign apples ({campaign.id}) · spc · succeeded"
    assert lines[1].split() == [
        "round", "metric", "95%", "CI", "n", "games", "valid", "critic", "reward", "sneaky",
        "reward", "loss", "critic", "loss", "sneaky",
    ]  # fmt: skip
    assert re.split(r"\s{2,}", lines[3].strip())[:6] == [
        "1",
        "step accuracy 0.625",
        "0.386-0.815",
        "16",
        "8 (+1 failed)",
        "75%",
    ]
    assert "round 2: sneaky not trained: every reward was the same: no signal" in shown.stdout
    default = campaign_dir(campaign.id) / "learning-curve.png"
    assert f"learning curve: {default}" in shown.stdout
    assert default.read_bytes()[:8] == PNG_MAGIC

    out = tmp_path / "figures" / "apples.png"
    dumped = await asyncio.to_thread(
        run_cli, env, "campaign", "report", campaign.id, "--out", str(out), "--json"
    )
    assert dumped.returncode == 0, dumped.stdout + dumped.stderr
    report = json.loads(dumped.stdout)
    assert report["png"] == str(out) and out.read_bytes()[:8] == PNG_MAGIC
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    assert report["rounds"][1]["losses"] == {"critic": 0.42, "sneaky": 0.31}


async def test_campaign_report_refuses_bad_input_in_one_line(
    store: Store, sqlite_url: str, home: Path, tmp_path: Path
) -> None:
    await repo.create_campaign(
        store, name="fresh", kind="spc", config={"kind": "spc"}, driver="celery"
    )
    env = cli_env(home, sqlite_url)
    cases = [
        (("nope",), "error: no campaign with id or name 'nope' (see `thinktank campaign list`)"),
        (("fresh",), "error: campaign fresh has no rounds yet (queued); its report has nothing"),
        (
            ("fresh", "--out", str(tmp_path / "curve.svg")),
            f"error: --out {tmp_path / 'curve.svg'}: the learning curve is a PNG; name a .png",
        ),
    ]
    for args, message in cases:
        result = await asyncio.to_thread(run_cli, env, "campaign", "report", *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stdout.startswith(message), result.stdout
        assert len(result.stdout.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
