"""Self-play campaigns end to end on the CPU: scripted players, real LoRA training of SmolLM2.

A two-round SPC campaign plays its games with a scripted world (so every game is valid and the
critic always wins), trains the critic and the sneaky generator for real on what they played,
serves the new versions by name and evaluates the critic after every round. The tests read what
a researcher would: the rounds, their games, datasets, versions and metrics, and the adapters
that the second round's turns were answered with.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agents.backends.scripted import ScriptedBackend
from agents.model import ModelRequest
from agents.model_map import ModelRouter
from roles.spc import SpcGame
from store import campaigns as repo
from store import model_versions
from store.runs import Store
from tests.conftest import run_cli
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


def spc_world(*, fooled_every: int | None = None) -> ScriptedBackend:
    """Roll-outs from the original step solve it, from the planted step they do not; the
    critic flags the planted product (in its games, all but the first of every
    ``fooled_every`` planted steps); the judge of the evaluation always says -1."""
    planted = itertools.count()

    def rollout(request: ModelRequest) -> str:
        return WRONG if "= 14" in request.messages[-1].content else RIGHT

    def critic(request: ModelRequest) -> str:
        last = request.messages[1].content.split("# Last Step", 1)[1]
        if "= 14" not in last:
            return DETECTS.replace("Incorrect", "Correct")
        in_game = "run" in request.tags  # the evaluation's probes are no game's
        fooled = in_game and fooled_every is not None and next(planted) % fooled_every == 0
        return DETECTS.replace("Incorrect", "Correct") if fooled else DETECTS

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
        "base": "smollm2",
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
    # one game of each round's two fools the critic: both sides' rewards differ, a signal
    model = spc_world(fooled_every=2)
    env = CampaignEnv(store, ModelRouter.single(model), sqlite_url, poll_s=0.5)
    config = spc_config(tmp_path, train_roles={"sneaky": {"lora_r": 2}})
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
        assert (games["games"], games["valid"], games["critic_wins"], games["sneaky_wins"]) == (
            2,
            2,
            1,
            1,
        )
        assert row.datasets["critic"]["records"] == 4  # the planted and the original step
        assert row.datasets["critic"]["rewards"]["distinct"] == 2
        assert row.datasets["sneaky"]["records"] == 2
        # the sneaky generator trains with its own options over the shared ones
        for model_name, lora_r in (("critic", 4), ("sneaky", 2)):
            run = await model_versions.get_training_run(store, row.training_runs[model_name]["id"])
            assert run.config["lora_r"] == lora_r
        assert row.versions == {
            "critic": f"apples-critic-r{number}",
            "sneaky": f"apples-sneaky-r{number}",
        }
        assert row.metrics["served"]["critic"]["adapter"] == f"apples-critic-r{number}"
        assert row.metrics["eval"]["versions"] == row.versions
        assert row.metrics["eval"]["critic_version"] == f"apples-critic-r{number}"
        headline = row.metrics["eval"]["headline"]
        assert (headline["name"], headline["value"], headline["n"]) == ("step accuracy", 1.0, 2)
        assert row.metrics["eval"]["critic_f1"] == 0.0  # the judge always says -1

    # the second round continues from the first round's versions; its games pit the first
    # round's sneaky generator against the starting critic (the balancing game)
    critic_2 = await model_versions.get_model_version(store, "apples-critic-r2")
    assert critic_2.parent == "apples-critic-r1"
    assert Path(critic_2.adapter_path, "adapter_config.json").is_file()
    assert (await model_versions.get_model_version(store, "apples-critic-r1")).parent is None
    assert second.metrics["played_with"] == {"sneaky": "apples-sneaky-r1"}
    for run_id in second.run_ids:
        turns = await store.turns(run_id)
        by_role = {t.role: t.adapter for t in turns}
        assert by_role["critic"] is None
        assert by_role["sneaky_generator"] == "apples-sneaky-r1"
        (game,) = await store.outcomes(run_id, SpcGame)
        assert (game.round, game.critic_adapter) == (2, None)
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


async def at_round(store: Store, config: CampaignConfig, name: str, round_: int) -> tuple[str, str]:
    """A campaign standing at ``round_``'s play step, its earlier rounds having trained both
    players (``{name}-critic-r{k}``, ``{name}-sneaky-r{k}``) and served them."""
    campaign = await create_campaign(store, config, name=name, driver="embedded")
    token = campaign.driver_token
    assert token is not None
    current: dict[str, str] = {}
    for k in range(1, round_):
        trained = {"critic": f"{name}-critic-r{k}", "sneaky": f"{name}-sneaky-r{k}"}
        await repo.get_round(store, campaign.id, k)
        await repo.update_round(store, campaign.id, k, token, versions=trained)
        current |= trained
    await repo.update_campaign(
        store, campaign.id, token, round=round_, step="play", versions=current
    )
    return campaign.id, token


@pytest.mark.parametrize(
    ("round_", "balance", "critic", "sneaky"),
    [
        (1, True, None, None),  # both at their start
        (2, True, None, "b-sneaky-r1"),  # Sneaky-1 plays Critic-0
        (3, True, "b-critic-r1", "b-sneaky-r2"),  # Sneaky-2 plays Critic-1
        (3, False, "b-critic-r2", "b-sneaky-r2"),  # switched off: both current
    ],
)
async def test_the_sneaky_generator_of_round_k_plays_the_critic_of_round_k_minus_1(
    store: Store,
    sqlite_url: str,
    tmp_path: Path,
    home: Path,
    round_: int,
    balance: bool,
    critic: str | None,
    sneaky: str | None,
) -> None:
    env = CampaignEnv(store, ModelRouter.single(spc_world()), sqlite_url)
    config = spc_config(tmp_path, rounds=3, baseline=False, balance=balance)
    campaign_id, token = await at_round(store, config, "b", round_)

    assert await run_step(env, campaign_id, token, round_, "play") is True

    row = await repo.get_round(store, campaign_id, round_)
    expected = {m: v for m, v in {"critic": critic, "sneaky": sneaky}.items() if v}
    assert row.metrics["played_with"] == expected
    assert row.metrics["games"]["valid"] == 2
    for run_id in row.run_ids:
        adapters = {t.role: t.adapter for t in await store.turns(run_id)}
        assert (adapters["critic"], adapters["sneaky_generator"]) == (critic, sneaky)
        assert adapters["solver"] is None
        (game,) = await store.outcomes(run_id, SpcGame)
        assert (game.critic_adapter, game.sneaky_adapter) == (critic, sneaky)
    # the campaign still serves (and evaluates) its newest versions
    assert (await repo.get_campaign(store, campaign_id)).versions == {
        m: f"b-{m}-r{round_ - 1}" for m in ("critic", "sneaky") if round_ > 1
    }


def test_per_role_trainer_options_go_over_the_shared_ones_and_are_checked(
    tmp_path: Path,
) -> None:
    config = spc_config(tmp_path, train_roles={"critic": {"learning_rate": 1e-5, "lora_r": 8}})
    assert config.train_options("critic") == {**TINY_TRAINING, "learning_rate": 1e-5, "lora_r": 8}
    assert config.train_options("sneaky") == TINY_TRAINING
    with pytest.raises(ValueError, match=r"train_roles: 'policy' is not a model this campaign"):
        spc_config(tmp_path, train_roles={"policy": {}})
    with pytest.raises(ValueError, match=r"train_roles.critic: .*max_steps"):
        spc_config(tmp_path, train_roles={"critic": {"max_steps": 0}})
    with pytest.raises(ValueError, match=r"train_roles.sneaky: max_steps must be at most"):
        spc_config(tmp_path, train_roles={"sneaky": {"max_steps": 10**6}})
    with pytest.raises(ValueError, match=r"train_roles.critic \['base'\] are filled in"):
        spc_config(tmp_path, train_roles={"critic": {"base": "x"}})
    with pytest.raises(ValueError, match=r"eval options: probe_max_tokens"):
        spc_config(tmp_path, eval={"probe_max_tokens": 0})


def show(env_vars: dict[str, str], name: str) -> str:
    shown = run_cli(env_vars, "campaign", "show", name)
    assert shown.returncode == 0, shown.stderr
    return " ".join(shown.stdout.split())  # the table's wrapping aside


@pytest.fixture
def cli_env(sqlite_url: str, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "THINKTANK_HOME": str(home),
        "THINKTANK_DATABASE_URL": sqlite_url,
        "COLUMNS": "200",
    }


async def test_a_round_without_a_valid_game_trains_nothing_and_says_so(
    store: Store, sqlite_url: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # roll-outs from the planted step still solve the problem: every rewrite is invalid
    model = ScriptedBackend({"sneaky_generator": [SNEAKY], "solver": [RIGHT], "critic": [DETECTS]})
    env = CampaignEnv(store, ModelRouter.single(model), sqlite_url, poll_s=0.1)
    config = spc_config(tmp_path, rounds=1, baseline=False, eval={"processbench": False})
    campaign = await create_campaign(store, config, name="invalid", driver="embedded")
    assert campaign.driver_token is not None
    ended = await asyncio.wait_for(drive(env, campaign.id, campaign.driver_token), 120)

    assert (ended.status, ended.error, ended.versions) == ("succeeded", None, {})
    row = await repo.get_round(store, campaign.id, 1)
    assert (row.metrics["games"]["games"], row.metrics["games"]["valid"]) == (2, 0)
    assert row.datasets["sneaky"]["records"] == 2  # its -1s are there, but nothing to learn
    reason = (
        "no valid game in the round's 2 game runs: 2 games played, 2 with an invalid sneaky "
        "rewrite, 0 runs failed"
    )
    assert row.training_runs == {"critic": {"skipped": reason}, "sneaky": {"skipped": reason}}
    assert row.versions == {}
    assert await model_versions.list_training_runs(store) == []
    # evaluated all the same, in the critic's own format only (ProcessBench switched off)
    evaluation = row.metrics["eval"]
    assert evaluation["headline"] == {
        "name": "step accuracy",
        "value": 0.5,  # it calls every step Incorrect
        "low": evaluation["step_accuracy_low"],
        "high": evaluation["step_accuracy_high"],
        "n": 2,
    }
    assert "critic_f1" not in evaluation
    assert model.calls("verifier") == []

    out = show(cli_env, "invalid")
    assert f"round 1: critic not trained: {reason}" in out
    assert f"round 1: sneaky not trained: {reason}" in out
    assert "2 games (0 valid)" in out
    assert "step accuracy 0.500 [" in out and "n=2" in out


async def test_a_dataset_whose_records_all_earn_one_reward_is_not_trained_on(
    store: Store, sqlite_url: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # every game valid, the critic always right: it earns +1 everywhere, the sneaky -1
    env = CampaignEnv(store, ModelRouter.single(spc_world()), sqlite_url, poll_s=0.1)
    config = spc_config(tmp_path, rounds=1, baseline=False)
    campaign = await create_campaign(store, config, name="one-reward", driver="embedded")
    assert campaign.driver_token is not None
    ended = await asyncio.wait_for(drive(env, campaign.id, campaign.driver_token), 120)

    assert (ended.status, ended.error, ended.versions) == ("succeeded", None, {})
    row = await repo.get_round(store, campaign.id, 1)
    assert row.metrics["games"]["valid"] == 2
    assert row.datasets["critic"]["rewards"] == {"distinct": 1, "mean": 1.0, "min": 1.0, "max": 1.0}
    assert row.training_runs == {
        "critic": {
            "skipped": "no signal: all 4 records have one reward (1); nothing to tell better "
            "replies from worse"
        },
        "sneaky": {
            "skipped": "no signal: all 2 records have one reward (-1); nothing to tell better "
            "replies from worse"
        },
    }
    assert await model_versions.list_training_runs(store) == []
    # the step probes head the evaluation, ProcessBench's F1 stands beside them
    evaluation = row.metrics["eval"]
    assert evaluation["headline"]["name"] == "step accuracy"
    assert evaluation["headline"]["value"] == 1.0  # the scripted critic catches "= 14" only
    assert (evaluation["step_probes"], evaluation["step_unparsed"]) == (2, 0)
    assert evaluation["critic_f1"] is not None and evaluation["judged"] == 2
    probes = json.loads(Path(evaluation["step_probe_results"]).read_text())
    assert [p["verdict"] for p in probes["probes"]] == ["correct", "incorrect"]

    out = show(cli_env, "one-reward")
    assert "round 1: critic not trained: no signal: all 4 records have one reward (1)" in out
    assert "step accuracy 1.000 [" in out and "critic F1 0.000" in out


async def test_an_rlad_round_is_headed_by_its_solve_rate_with_an_interval(
    store: Store, sqlite_url: str, tmp_path: Path, home: Path
) -> None:
    model = ScriptedBackend(
        {
            "abstraction_player": ["Count the boxes first, then take away what is eaten."],
            "solution_player": ["3 * 4 - 2 = 10. \\boxed{10}"],
        }
    )
    env = CampaignEnv(store, ModelRouter.single(model), sqlite_url)
    problems = str(problems_file(tmp_path / "problems.jsonl", count=3))
    config = CampaignConfig.model_validate(
        {
            "kind": "rlad",
            "base": "smollm2",
            "problems": problems,
            "eval_problems": problems,
            "eval_limit": 3,
        }
    )
    campaign = await create_campaign(store, config, name="hints", driver="embedded")
    assert campaign.driver_token is not None

    assert await run_step(env, campaign.id, campaign.driver_token, 0, "evaluate") is True

    evaluation = (await repo.get_round(store, campaign.id, 0)).metrics["eval"]
    headline = evaluation["headline"]
    assert (headline["name"], headline["value"], headline["n"]) == ("solve rate", 1.0, 3)
    assert headline["high"] == 1.0 and 0.0 < headline["low"] < 1.0
    assert evaluation["solve_rate"] == 1.0


@pytest.mark.local_model
async def test_a_warm_started_spc_campaign_trains_round_0_by_sft_and_mixes_it_into_rl(
    store: Store, sqlite_url: str, tmp_path: Path, home: Path
) -> None:
    model = spc_world(fooled_every=2)
    env = CampaignEnv(store, ModelRouter.single(model), sqlite_url, poll_s=0.5)
    config = spc_config(tmp_path, rounds=1, warm_start={"n": 3}, warm_start_train=TINY_TRAINING)
    campaign = await create_campaign(store, config, name="warm", driver="embedded")
    assert (campaign.round, campaign.step) == (0, "warm_start")
    assert campaign.driver_token is not None
    ended = await asyncio.wait_for(drive(env, campaign.id, campaign.driver_token), 600)

    assert (ended.status, ended.error) == ("succeeded", None)
    start, first = await repo.rounds_of(store, campaign.id)
    assert list(start.steps) == ["warm_start", "evaluate"]
    assert start.versions == {"critic": "warm-critic-r0", "sneaky": "warm-sneaky-r0"}
    for role in ("critic", "sneaky"):
        dataset = start.datasets[role]
        assert dataset["warm_start"] and dataset["records"] > 0
        assert Path(dataset["path"]).is_file()
        run = await model_versions.get_training_run(store, start.training_runs[role]["id"])
        assert run.kind == "sft"
    # the baseline evaluates the warm-started critic, and the first games play both
    assert start.metrics["eval"]["critic_version"] == "warm-critic-r0"
    assert first.metrics["played_with"] == start.versions
    # SPC's RL mixes the round-0 SFT set into every step
    critic_rl = await model_versions.get_training_run(store, first.training_runs["critic"]["id"])
    assert critic_rl.config["sft_data"] == start.datasets["critic"]["path"]
    assert (await model_versions.get_model_version(store, "warm-critic-r1")).parent == (
        "warm-critic-r0"
    )


def test_warm_start_options_are_checked_when_the_campaign_starts(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="warm_start: bogus is not an option"):
        spc_config(tmp_path, warm_start={"bogus": 1})
    with pytest.raises(ValidationError, match="there is no warm start"):
        spc_config(tmp_path, warm_start_train={"epochs": 2})
    with pytest.raises(ValidationError, match="filled in by the campaign"):
        spc_config(tmp_path, warm_start={"recipe": "rlad"})


async def test_a_campaign_from_a_registered_version_plays_and_evaluates_with_it(
    store: Store, sqlite_url: str, tmp_path: Path, home: Path
) -> None:
    await model_versions.register_model_version(
        store,
        name="start-v1",
        kind="sft",
        role="critic",
        base_model="smollm2",
        adapter_path=model_versions.adapter_dir("start-v1"),
        dataset_hash="ab" * 32,
        metrics={},
        config={},
    )
    # the critic always finds the planted step: no side has a signal, nothing trains
    env = CampaignEnv(store, ModelRouter.single(spc_world()), sqlite_url, poll_s=0.1)
    config = spc_config(tmp_path, rounds=1, base="start-v1")
    campaign = await create_campaign(store, config, name="from-v1", driver="embedded")
    assert campaign.driver_token is not None
    ended = await asyncio.wait_for(drive(env, campaign.id, campaign.driver_token), 120)

    assert (ended.status, ended.error) == ("succeeded", None)
    baseline, first = await repo.rounds_of(store, campaign.id)
    start = {"critic": "start-v1", "sneaky": "start-v1"}
    assert baseline.metrics["eval"]["versions"] == start
    assert first.metrics["played_with"] == start
    for run_id in first.run_ids:
        by_role = {t.role: t.adapter for t in await store.turns(run_id)}
        assert by_role["critic"] == by_role["sneaky_generator"] == "start-v1"
        assert by_role["solver"] is None  # the roll-outs' solver is not a trained model
