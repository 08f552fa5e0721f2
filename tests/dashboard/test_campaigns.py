"""The campaigns pages as a user sees them: the list, and one campaign with its metric per
round and each round's games, datasets, trained versions and game runs. The campaigns are
written straight into the store, as their drivers write them, so no model is trained here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from store import campaigns as repo
from store.runs import Store
from tests.api.conftest import LiveServer
from tests.api.test_model_versions import register_two
from tests.dashboard.conftest import dashboard_settings, open_page, screenshot
from tests.dashboard.test_dashboard import in_store

GAMES = 25  # more than the page links


def step(status: str) -> dict[str, Any]:
    return {"status": status, "started_at": "2025-01-01T00:00:00Z", "finished_at": None}


async def two_campaigns(store: Store) -> list[str]:
    """An SPC campaign that finished a baseline and two rounds (round 2 without an
    evaluation), and an RLAD campaign that failed in its first round. Returns the SPC
    campaign's game runs of round 1."""
    await register_two(store)
    run_ids = []
    for i in range(GAMES):
        run, _ = await store.create_run("spc", f"game {i}: 2+{i}", {})
        await store.finish_run(run.id, status="succeeded", answer=str(2 + i))
        run_ids.append(run.id)

    # "celery" drivers: the embedded server must not resume these campaigns itself
    spc = await repo.create_campaign(
        store, name="spc-demo", kind="spc", config={"rounds": 2}, driver="celery"
    )
    token = spc.driver_token
    assert token is not None
    rounds: list[dict[str, Any]] = [
        {
            "steps": {"evaluate": step("succeeded")},
            "metrics": {"eval": {"critic_f1": 0.4, "error_accuracy": 0.5, "correct_accuracy": 0.3}},
        },
        {
            "steps": {s: step("succeeded") for s in ("play", "export", "train", "evaluate")},
            "run_ids": run_ids,
            "datasets": {"critic": {"kind": "spc", "records": 40}, "sneaky": {"records": 12}},
            "training_runs": {
                "critic": {"id": "t1", "status": "succeeded", "attempts": 1},
                "sneaky": {"skipped": "no games won"},
            },
            "versions": {"critic": "critic-rl-v1"},
            "metrics": {
                "served": {
                    "critic": {"version": "critic-rl-v1", "backend": "local", "latency_s": 0.12}
                },
                "games": {
                    "games": 25,
                    "valid": 20,
                    "critic_wins": 14,
                    "sneaky_wins": 6,
                    "invalid": 3,
                    "unparsed": 2,
                    "critic_reward": 8,
                    "sneaky_reward": -8,
                },
                "eval": {
                    "critic_f1": 0.65,
                    "error_accuracy": 0.7,
                    "correct_accuracy": 0.6,
                    "headline": {
                        "name": "critic F1",
                        "value": 0.65,
                        "low": 0.45,
                        "high": 0.81,
                        "n": 20,
                    },
                },
            },
        },
        {
            "steps": {"play": step("succeeded"), "evaluate": step("failed")},
            "metrics": {"games": {"games": 8, "valid": 8}},
        },
    ]
    for number, values in enumerate(rounds):
        await repo.get_round(store, spc.id, number)
        await repo.update_round(store, spc.id, number, token, **values)
    await repo.update_campaign(
        store, spc.id, token, status="succeeded", round=2, step=None,
        versions={"critic": "critic-rl-v1", "policy": "policy-sft-v1"},
    )  # fmt: skip

    rlad = await repo.create_campaign(
        store, name="rlad-demo", kind="rlad", config={}, driver="celery"
    )
    assert rlad.driver_token is not None
    await repo.get_round(store, rlad.id, 1)
    await repo.update_round(
        store, rlad.id, 1, rlad.driver_token, steps={"play": step("failed")}, metrics={}
    )
    await repo.update_campaign(
        store, rlad.id, rlad.driver_token, status="failed", round=1, step="play",
        error="every game of round 1 failed",
    )  # fmt: skip
    return run_ids


def field(page: Any, round_: int, name: str) -> Any:
    return page.locator(f"section.round[data-round='{round_}'] tr[data-field='{name}'] td")


def test_the_campaigns_pages_show_each_round_its_metric_and_links(
    tmp_path: Path, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / "home"))
    settings = dashboard_settings(tmp_path)
    run_ids = in_store(settings.database_url, two_campaigns)
    # with its Content-Security-Policy in force
    with LiveServer(settings) as server, open_page(browser, bypass_csp=False) as page:
        page.goto(f"{server.url}/ui/#/runs")
        page.click("nav a[data-nav='campaigns']")
        page.wait_for_selector("#campaigns-body tr[data-name='spc-demo']")
        assert page.locator("nav a.active").inner_text() == "Campaigns"
        rows = {
            row.get_attribute("data-name"): row.locator("td").all_inner_texts()
            for row in page.locator("#campaigns-body tr").all()
        }
        assert rows["spc-demo"][:5] == [
            "spc-demo",
            "spc",
            "succeeded",
            "round 2",
            "critic critic-rl-v1, policy policy-sft-v1",
        ]
        assert rows["rlad-demo"][:4] == ["rlad-demo", "rlad", "failed", "round 1 · play"]
        screenshot(page, "campaigns")

        page.click("#campaigns-body tr[data-name='rlad-demo'] a")
        page.wait_for_selector("#campaign-failure")
        assert page.locator("#campaign-failure").inner_text() == "every game of round 1 failed"
        assert page.locator("#campaign-chart").inner_text() == "No solve rate measured yet."
        page.go_back()

        page.click("#campaigns-body tr[data-name='spc-demo'] a")
        page.wait_for_selector("#campaign-chart svg")
        assert page.locator("#campaign-name").inner_text() == "spc-demo"
        assert page.locator("section.round").count() == 3
        # round 2 measured nothing: the line has the baseline and round 1 only
        points = page.locator("#campaign-chart circle.point")
        assert [(p.get_attribute("data-x"), p.get_attribute("data-y")) for p in points.all()] == [
            ("0", "0.4"),
            ("1", "0.65"),
        ]
        assert "Critic F1 per round" in page.locator("#campaign-chart figcaption").inner_text()
        # round 1's interval as a whisker; the baseline stored no interval
        whiskers = page.locator("#campaign-chart g.interval")
        assert [
            (w.get_attribute("data-low"), w.get_attribute("data-high")) for w in whiskers.all()
        ] == [("0.45", "0.81")]
        curve = {
            row.get_attribute("data-round"): row.locator("td").all_inner_texts()
            for row in page.locator("#campaign-curve tbody tr").all()
        }
        assert page.locator("#campaign-curve thead th").all_text_contents()[:3] == [
            "Round", "Critic F1", "95% CI",
        ]  # fmt: skip
        assert curve["0"] == ["baseline", "0.400", "—", "—", "—", "—", "—", "—"]
        assert curve["1"] == [
            "round 1", "0.650", "0.450–0.810", "20", "25", "80%",
            "critic 0.320, sneaky -0.320", "critic —, sneaky skipped",
        ]  # fmt: skip
        assert curve["2"] == ["round 2", "—", "—", "—", "8", "100%", "—", "—"]
        assert field(page, 0, "eval").inner_text() == (
            "critic f1 0.4, error accuracy 0.5, correct accuracy 0.3"
        )
        assert field(page, 1, "games").inner_text() == (
            "games 25, valid 20, critic wins 14, sneaky wins 6, invalid 3, unparsed 2, "
            "critic reward 8, sneaky reward -8"
        )
        assert field(page, 1, "datasets").inner_text() == "critic 40 records, sneaky 12 records"
        trained = field(page, 1, "versions").inner_text()
        assert "critic critic-rl-v1 (training succeeded)" in trained
        assert "sneaky — (skipped: no games won)" in trained
        assert field(page, 1, "served").inner_text() == "critic critic-rl-v1 on local (0.12 s)"
        assert "evaluate failed" in field(page, 2, "steps").inner_text()
        links = field(page, 1, "runs").locator("a")
        assert links.count() == 20
        assert field(page, 1, "runs").inner_text().startswith(f"{GAMES} runs (first 20): ")
        screenshot(page, "campaign")

        # a game's link opens its run, a trained version's link its model version
        field(page, 1, "runs").locator("a").nth(3).click()
        page.wait_for_selector("#run-summary")
        assert page.url.endswith(f"#/runs/{run_ids[3]}")
        page.go_back()
        field(page, 1, "versions").locator("a").click()
        page.wait_for_selector("#model-fields")
        assert page.locator("#model-name").inner_text() == "critic-rl-v1"

        page.goto(f"{server.url}/ui/#/campaigns/nope")
        page.wait_for_selector("#campaign-error:has-text(\"no campaign with id or name 'nope'\")")
