"""POST /v1/campaigns on the embedded server: a campaign runs in the background, its rounds
can be read while and after it runs, bad requests get a 4xx with a reason, starting one is a
permission of the API key with a limit of running campaigns, and the server answers while a
large campaign is prepared."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.backends.scripted import ScriptedModelConfig
from agents.model_map import ModelMap
from services.settings import Settings
from tests.api.conftest import LiveServer
from tests.conftest import run_cli
from tests.graphs.test_spc_game import PROBLEM, SOLUTION

# The sneaky generator always rewrites the last step to answer 12, and roll-outs add no answer
# of their own. On the apples problem that rewrite is a real error (the original answers 10):
# a valid game, whose critic (unscripted) gives no verdict, so the sneaky generator earns 0.
# On the dozen problem the rewrite is the step itself, so the game is invalid (sneaky -1). The
# critic's records all earn -1 (no signal, not trained); the sneaky generator's differ, so
# only it trains.
PLANTS_12 = (
    "### Error Type: 2. Calculation error\n### Plan: make the answer 12.\n"
    "### Incorrect Step: The answer is \\boxed{12}."
)
REPLIES = {
    "sneaky_generator": [PLANTS_12],
    "solver": ["That completes the solution."],
    "verifier": ["All fine. \\boxed{-1}"],
}
DOZEN = "Tom has 3 boxes with 4 apples each. How many apples does he have?"
DOZEN_SOLUTION = "3 * 4 = 12 apples.\n\nThe answer is \\boxed{12}."


def game_problems() -> list[dict[str, str]]:
    """The apples problem, then the dozen problem, then apples again."""
    apples = {"problem": PROBLEM, "answer": "10", "solution": SOLUTION}
    dozen = {"problem": DOZEN, "answer": "12", "solution": DOZEN_SOLUTION}
    return [{"id": f"p{i}", **row} for i, row in enumerate((apples, dozen, apples))]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("THINKTANK_HOME", str(home))
    problems = home / "problems"
    problems.mkdir(parents=True)
    rows = game_problems()
    (problems / "apples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    labelled = [
        {"id": "ok", "problem": PROBLEM, "steps": SOLUTION.split("\n\n"), "label": -1},
        {"id": "bad", "problem": PROBLEM, "steps": ["3 * 4 = 14.", "14 - 2 = 12."], "label": 0},
    ]
    (problems / "labelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labelled))
    return home


@pytest.fixture
def client(tmp_path: Path, home: Path) -> Any:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        models=ModelMap(default=ScriptedModelConfig(replies=REPLIES)),
    )
    with LiveServer(settings) as api, httpx.Client(base_url=api.url, timeout=30) as http:
        yield http


# The campaign trains a real LoRA adapter in a subprocess: importing torch, transformers and
# peft and loading the model take most of a minute on a 2-core machine before the one step.
def wait_for_campaign(client: httpx.Client, campaign_id: str, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        campaign = client.get(f"/v1/campaigns/{campaign_id}").json()
        if campaign["status"] in ("succeeded", "failed", "cancelled"):
            return campaign
        time.sleep(0.1)
    raise AssertionError(f"campaign {campaign_id} did not end: {campaign}")


BODY = {
    "kind": "spc",
    "base": "smollm2",
    "name": "api-apples",
    "rounds": 1,
    "games_per_round": 2,
    "problems": "apples.jsonl",
    "eval_problems": "labelled.jsonl",
    "game": {"rollouts": 2, "step_index": 2},
    "train": {"max_steps": 1, "batch_size": 2, "lora_r": 4, "max_length": 256, "threads": 1},
}


@pytest.mark.local_model
def test_a_campaign_runs_in_the_background_and_its_rounds_can_be_read(client) -> None:
    response = client.post("/v1/campaigns", json=BODY)
    assert response.status_code == 202, response.text
    started = response.json()
    assert response.headers["location"] == f"/v1/campaigns/{started['id']}"
    assert (started["name"], started["kind"], started["driver"]) == (
        "api-apples",
        "spc",
        "embedded",
    )

    ended = wait_for_campaign(client, started["id"])
    assert (ended["status"], ended["error"]) == ("succeeded", None)
    assert [r["round"] for r in ended["rounds"]] == [0, 1]
    played = ended["rounds"][1]
    assert len(played["run_ids"]) == 2
    for run_id in played["run_ids"]:
        assert client.get(f"/v1/runs/{run_id}").json()["pattern"] == "spc_game"
    assert played["metrics"]["games"]["valid"] == 1
    assert played["training_runs"]["critic"] == {
        "skipped": "no signal: all 2 records have one reward (-1); nothing to tell better "
        "replies from worse"
    }
    assert played["versions"] == {"sneaky": "api-apples-sneaky-r1"}
    assert ended["versions"] == {"sneaky": "api-apples-sneaky-r1"}
    version = client.get("/v1/model-versions/api-apples-sneaky-r1").json()
    assert version["training_run_id"] == played["training_runs"]["sneaky"]["id"]
    assert ended["rounds"][0]["metrics"]["eval"]["judged"] == 2
    assert played["metrics"]["eval"]["correct_accuracy"] == 1.0  # it always says -1
    assert played["metrics"]["eval"]["error_accuracy"] == 0.0

    by_name = client.get("/v1/campaigns/api-apples").json()
    assert by_name["id"] == started["id"]
    listed = client.get("/v1/campaigns", params={"kind": "spc"}).json()["items"]
    assert [c["id"] for c in listed] == [started["id"]]
    assert client.post("/v1/campaigns", json=BODY).status_code == 409  # the name is taken


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"problems": "../../etc/passwd"}, "problems folder"),
        ({"problems": "/etc/passwd"}, "problems folder"),
        ({"problems": "missing.jsonl"}, "no problem file"),
        ({"eval_problems": "apples.jsonl"}, "no step-labelled solutions"),
        ({"game": {"rollouts": 0}}, "rollouts"),
        ({"game": {"reference_answer": "1"}}, "filled in by the campaign"),
        ({"train": {"learning_rate": -1}}, "learning_rate"),
        ({"kind": "chess"}, "kind"),
        ({"rounds": 0}, "rounds"),
        ({"name": "a/b"}, "bad campaign name"),
        ({"problems": "gen:nonsense"}, "nonsense"),
    ],
)
def test_bad_campaigns_are_refused_with_a_reason(client, change: dict, reason: str) -> None:
    response = client.post("/v1/campaigns", json={**BODY, **change})
    assert 400 <= response.status_code < 500, response.text
    assert reason in response.text
    assert client.get("/v1/campaigns").json()["items"] == []


def test_unknown_campaigns_are_404_and_a_cancel_stops_one(client) -> None:
    assert client.get("/v1/campaigns/nope").status_code == 404
    assert client.post("/v1/campaigns/nope/cancel").status_code == 404
    started = client.post(
        "/v1/campaigns", json={**BODY, "name": "long", "rounds": 50, "games_per_round": 3}
    ).json()
    cancelled = client.post(f"/v1/campaigns/{started['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    time.sleep(1.0)  # its driver stops at its next write
    assert client.get(f"/v1/campaigns/{started['id']}").json()["status"] == "cancelled"


LONG = {**BODY, "rounds": 50, "games_per_round": 3}
"""A campaign that is still running when the test cancels it."""


def test_campaigns_without_a_key_are_limited_to_the_servers_keyless_campaigns(client) -> None:
    first = client.post("/v1/campaigns", json={**LONG, "name": "first"})
    assert first.status_code == 202, first.text
    refused = client.post("/v1/campaigns", json={**LONG, "name": "second"})
    assert refused.status_code == 429, refused.text
    assert "1 campaign(s) started without an API key are queued or running" in refused.text
    assert "keyless_campaigns is 1" in refused.text
    assert [c["name"] for c in client.get("/v1/campaigns").json()["items"]] == ["first"]

    client.post(f"/v1/campaigns/{first.json()['id']}/cancel")
    again = client.post("/v1/campaigns", json={**LONG, "name": "second"})
    assert again.status_code == 202, again.text
    client.post(f"/v1/campaigns/{again.json()['id']}/cancel")


def test_healthz_answers_while_a_large_campaign_is_accepted_and_prepared(client) -> None:
    # 10,000 problems, the most one gen: spec makes, take seconds to generate: the request
    # reads only the first ones, the driver makes the round's in a thread
    body = {
        **BODY,
        "name": "large",
        "problems": "gen:mixed?n=10000",
        "eval_problems": "gen:step-errors?n=10000",
        "eval_limit": 10_000,
        "baseline": False,
    }
    started: list[httpx.Response] = []
    poster = threading.Thread(
        target=lambda: started.append(client.post("/v1/campaigns", json=body))
    )
    waits = []
    began = time.monotonic()
    poster.start()

    def prepared() -> bool:
        """The driver has made the round's problems into games. (Later steps are other
        work: with these scripted games nothing trains, and the 10,000-problem evaluation
        that follows at once is not what this test measures.)"""
        if not started:
            return False
        found = client.get(f"/v1/campaigns/{started[0].json()['id']}").json()
        return any(row["run_ids"] for row in found["rounds"])

    # while the POST is handled, and after, while its driver prepares the problems
    while poster.is_alive() or (time.monotonic() - began < 4.0 and not prepared()):
        sent = time.monotonic()
        assert client.get("/healthz", timeout=5).json() == {"status": "ok"}
        waits.append(time.monotonic() - sent)
        time.sleep(0.05)
    poster.join()
    assert started[0].status_code == 202, started[0].text
    assert max(waits) < 1.0, f"/healthz took {max(waits):.2f}s"
    campaign = started[0].json()
    assert campaign["config"]["problems"] == "gen:mixed?n=10000"
    assert client.post(f"/v1/campaigns/{campaign['id']}/cancel").json()["status"] == "cancelled"


@pytest.fixture
def keyed(tmp_path: Path, home: Path) -> Any:
    """Keys on; the real `thinktank keys` CLI on the server's database."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    settings = Settings(
        database_url=url, models=ModelMap(default=ScriptedModelConfig(replies=REPLIES)), auth="on"
    )
    env = {
        **os.environ,
        "THINKTANK_HOME": str(home),
        "THINKTANK_DATABASE_URL": url,
        "COLUMNS": "200",
    }

    def thinktank(*args: str, status: int = 0) -> str:
        result = run_cli(env, *args)
        assert result.returncode == status, result.stdout + result.stderr
        return result.stdout

    with LiveServer(settings) as api:
        yield api, thinktank


def test_a_campaign_is_a_permission_of_the_key_with_a_limit_of_its_own(keyed) -> None:
    api, thinktank = keyed
    created = thinktank("keys", "create", "lab")
    assert "campaigns no" in created
    key = next(line.strip() for line in created.splitlines() if line.startswith("tt_"))
    prefix = key[:11]
    with httpx.Client(
        base_url=api.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        denied = client.post("/v1/campaigns", json={**LONG, "name": "one"})
        assert denied.status_code == 403, denied.text
        assert "this API key may not start campaigns" in denied.text
        assert "thinktank keys grant KEY campaigns" in denied.text

        unknown = thinktank("keys", "grant", prefix, "trainings", status=2)
        assert "unknown permission 'trainings'; known: campaigns" in unknown
        assert "Traceback" not in unknown
        assert "no API key with id or prefix" in thinktank(
            "keys", "grant", "tt_nope", "campaigns", status=2
        )
        granted = thinktank("keys", "grant", prefix, "campaigns", "--max-campaigns", "1")
        assert "campaigns yes, 1 at once" in granted
        one = client.post("/v1/campaigns", json={**LONG, "name": "one"})
        assert one.status_code == 202, one.text
        over = client.post("/v1/campaigns", json={**LONG, "name": "two"})
        assert over.status_code == 429, over.text
        assert "this API key has 1 campaign(s) queued or running" in over.text
        assert "max_running_campaigns is 1" in over.text
        # a refused start stores nothing
        assert [c["name"] for c in client.get("/v1/campaigns").json()["items"]] == ["one"]

        client.post(f"/v1/campaigns/{one.json()['id']}/cancel")
        two = client.post("/v1/campaigns", json={**LONG, "name": "two"})
        assert two.status_code == 202, two.text
        client.post(f"/v1/campaigns/{two.json()['id']}/cancel")

        assert "campaigns no" in thinktank("keys", "deny", prefix, "campaigns")
        again = client.post("/v1/campaigns", json={**LONG, "name": "three"})
        assert again.status_code == 403, again.text
        # runs are no campaign: the key still submits them
        run = client.post("/v1/runs", json={"pattern": "single", "problem": "2+3?"})
        assert run.status_code == 202, run.text
    listed = thinktank("keys", "list")
    assert "lab" in listed and "campaigns" in listed
