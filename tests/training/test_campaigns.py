"""Self-play campaigns end to end on the CPU: scripted players, real LoRA training of SmolLM2.

A two-round SPC campaign plays its games with a scripted world (so every game is valid and the
critic always wins), trains the critic and the sneaky generator for real on what they played,
serves the new versions by name and evaluates the critic after every round. The tests read what
a researcher would: the rounds, their games, datasets, versions and metrics, and the adapters
that the second round's turns were answered with.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agents.backends.scripted import ScriptedBackend
from agents.model import ModelRequest
from agents.model_map import ModelRouter
from roles.spc import SpcGame
from store import campaigns as repo
from store import model_versions
from store.runs import Store
from tests.graphs.test_spc_game import DETECTS, PROBLEM, RIGHT, SNEAKY, SOLUTION, WRONG
from training.campaigns import (
    CampaignConfig,
    CampaignEnv,
    CampaignError,
    create_campaign,
    drive,
    resume_campaign,
    run_step,
)

TINY_TRAINING = {
    "max_steps": 1,
    "batch_size": 2,
    "lora_r": 4,
    "max_length": 256,
    "eval_fraction": 0.0,
    "threads": 1,
    "checkpoint_every": 100,
}


def problems_file(path: Path, count: int = 4) -> Path:
    rows = [
        {"id": f"apples-{i}", "problem": PROBLEM, "answer": "10", "solution": SOLUTION}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def labelled_file(path: Path) -> Path:
    steps = ["3 * 4 = 12 apples.", "12 - 2 = 10 apples are left.", "The answer is 10."]
    rows = [
        {"id": "right", "problem": PROBLEM, "steps": steps, "label": -1},
        {
            "id": "wrong",
            "problem": PROBLEM,
            "steps": ["3 * 4 = 14 apples.", *steps[1:]],
            "label": 0,
        },
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def spc_world() -> ScriptedBackend:
    """Roll-outs from the original step solve it, from the planted step they do not; the
    critic flags the planted product; the judge of the evaluation always says -1."""

    def rollout(request: ModelRequest) -> str:
        return WRONG if "= 14" in request.messages[-1].content else RIGHT

    def critic(request: ModelRequest) -> str:
        last = request.messages[1].content.split("# Last Step", 1)[1]
        return DETECTS if "= 14" in last else DETECTS.replace("Incorrect", "Correct")

    return ScriptedBackend(
        {
            "solver": [rollout],
            "sneaky_generator": [SNEAKY],
            "critic": [critic],
            "verifier": ["No step is wrong. \\boxed{-1}"],
        }
    )


def spc_config(tmp_path: Path, **overrides: Any) -> CampaignConfig:
    settings: dict[str, Any] = {
        "kind": "spc",
        "rounds": 2,
        "games_per_round": 2,
        "problems": str(problems_file(tmp_path / "problems.jsonl")),
        "eval_problems": str(labelled_file(tmp_path / "labelled.jsonl")),
        "concurrency": 2,
        "game": {"rollouts": 2, "step_index": 0},
        "train": TINY_TRAINING,
        **overrides,
    }
    return CampaignConfig.model_validate(settings)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Campaign files, adapters and the training jobs' work dirs under a fresh data dir."""
    monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.local_model
async def test_a_two_round_spc_campaign_trains_serves_and_evaluates(
    store: Store, sqlite_url: str, tmp_path: Path, home: Path
) -> None:
    model = spc_world()
    env = CampaignEnv(store, ModelRouter.single(model), sqlite_url, poll_s=0.5)
    config = spc_config(tmp_path)
    campaign = await create_campaign(store, config, name="apples", driver="embedded")
    assert campaign.driver_token is not None
    ended = await asyncio.wait_for(drive(env, campaign.id, campaign.driver_token), 600)

    assert (ended.status, ended.error, ended.step) == ("succeeded", None, None)
    assert ended.versions == {"critic": "apples-critic-r2", "sneaky": "apples-sneaky-r2"}
    rounds = await repo.rounds_of(store, campaign.id)
    assert [r.round for r in rounds] == [0, 1, 2]
    baseline, first, second = rounds
    assert list(baseline.steps) == ["evaluate"]
    assert baseline.metrics["eval"]["versions"] == {}
    assert baseline.metrics["eval"]["judged"] == 2

    for row, number in ((first, 1), (second, 2)):
        assert list(row.steps) == ["play", "export", "train", "serve", "evaluate"]
        assert all(step["status"] == "done" for step in row.steps.values())
        assert len(row.run_ids) == 2
        games = row.metrics["games"]
        assert (games["games"], games["valid"], games["critic_wins"]) == (2, 2, 2)
        assert row.datasets["critic"]["records"] == 4  # the planted and the original step
        assert row.datasets["sneaky"]["records"] == 2
        assert row.versions == {
            "critic": f"apples-critic-r{number}",
            "sneaky": f"apples-sneaky-r{number}",
        }
        assert row.metrics["served"]["critic"]["adapter"] == f"apples-critic-r{number}"
        assert row.metrics["eval"]["versions"] == row.versions
        assert row.metrics["eval"]["critic_version"] == f"apples-critic-r{number}"

    # the second round continues from the first round's versions and plays with them
    critic_2 = await model_versions.get_model_version(store, "apples-critic-r2")
    assert critic_2.parent == "apples-critic-r1"
    assert Path(critic_2.adapter_path, "adapter_config.json").is_file()
    assert (await model_versions.get_model_version(store, "apples-critic-r1")).parent is None
    for run_id in second.run_ids:
        turns = await store.turns(run_id)
        by_role = {t.role: t.adapter for t in turns}
        assert by_role["critic"] == "apples-critic-r1"
        assert by_role["sneaky_generator"] == "apples-sneaky-r1"
        (game,) = await store.outcomes(run_id, SpcGame)
        assert (game.round, game.critic_adapter) == (2, "apples-critic-r1")
    for run_id in first.run_ids:
        assert {t.adapter for t in await store.turns(run_id)} == {None}


async def test_a_campaign_resumes_the_step_it_was_in_and_a_replaced_driver_stops(
    store: Store, sqlite_url: str, tmp_path: Path, home: Path
) -> None:
    model = ScriptedBackend(
        {"sneaky_generator": [SNEAKY], "solver": [RIGHT], "verifier": ["\\boxed{-1}"]}
    )
    env = CampaignEnv(store, ModelRouter.single(model), sqlite_url, poll_s=0.1)
    config = spc_config(tmp_path, rounds=1, games_per_round=3, baseline=False)
    campaign = await create_campaign(store, config, name="resumed", driver="embedded")
    first_token = campaign.driver_token
    assert first_token is not None

    # the first driver dies in the middle of its games
    model._latency_s = 0.3  # slow enough to be caught mid-game
    driving = asyncio.ensure_future(drive(env, campaign.id, first_token))
    await asyncio.sleep(0.5)
    driving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await driving
    stuck = await repo.get_campaign(store, campaign.id)
    assert (stuck.status, stuck.round, stuck.step) == ("running", 1, "play")

    model._latency_s = 0.0
    token = await resume_campaign(store, campaign.id, driver="embedded")
    assert await run_step(env, campaign.id, first_token, 1, "play") is False  # replaced
    # stop before training: this test is about the driver, not the trainer
    assert await run_step(env, campaign.id, token, 1, "play") is True
    assert await run_step(env, campaign.id, token, 1, "export") is True
    assert await run_step(env, campaign.id, token, 1, "play") is True  # done before: no-op
    row = await repo.get_round(store, campaign.id, 1)
    assert len(row.run_ids) == 3
    assert len(set(row.run_ids)) == 3
    assert len(await store.list_runs(limit=100)) == 3  # no game was played twice
    # every rewrite is invalid here (roll-outs from it still solve the problem)
    assert row.metrics["games"]["invalid"] == 3
    assert row.datasets["critic"]["records"] == 0
    assert row.datasets["sneaky"]["records"] == 3
    with pytest.raises(CampaignError, match="is at"):
        await run_step(env, campaign.id, token, 1, "serve")


def test_campaign_options_are_checked_before_anything_runs(tmp_path: Path) -> None:
    base = {"kind": "spc", "problems": "gen:arithmetic", "eval_problems": "gen:arithmetic"}
    with pytest.raises(ValueError, match="game options: rollouts"):
        CampaignConfig.model_validate({**base, "game": {"rollouts": 0}})
    with pytest.raises(ValueError, match=r"filled in by the campaign"):
        CampaignConfig.model_validate({**base, "game": {"reference_answer": "1"}})
    with pytest.raises(ValueError, match=r"train options: .*max_steps"):
        CampaignConfig.model_validate({**base, "train": {"max_steps": -1}})
    with pytest.raises(ValueError, match=r"filled in by the campaign"):
        CampaignConfig.model_validate({**base, "train": {"base": "x"}})
    with pytest.raises(ValueError, match="kind"):
        CampaignConfig.model_validate({**base, "kind": "chess"})


async def test_a_critic_campaign_needs_step_labelled_evaluation_problems(
    store: Store, tmp_path: Path
) -> None:
    config = CampaignConfig.model_validate(
        {
            "kind": "spc",
            "problems": str(problems_file(tmp_path / "p.jsonl")),
            "eval_problems": str(problems_file(tmp_path / "e.jsonl")),
        }
    )
    with pytest.raises(CampaignError, match="no step-labelled solutions"):
        await create_campaign(store, config, driver="embedded")
    assert await repo.list_campaigns(store) == []
