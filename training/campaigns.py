"""Self-play campaigns: play games, turn them into datasets, train, serve, evaluate, again.

A campaign of R rounds starts with round 0, which only evaluates the starting models (the
baseline, unless switched off); then each round 1..R takes five steps:

``play``
    G games (``spc_game`` or ``rlad`` runs) on the round's problems, every logical model
    answering with the campaign's current model version (a run's ``adapters``).
``export``
    the round's games become one dataset per trained role (:mod:`training.export`).
``train``
    one RL training per role that has data, continuing from the role's current version,
    launched as a job of its own (:mod:`training.jobs`) and waited for.
``serve``
    each new version answers a probe through the backend that serves its role, which loads
    the adapter by name (hot-load, no restart); from then on the campaign plays with it.
``evaluate``
    SPC: the critic's ProcessBench accuracy on held-out step-labelled solutions; RLAD: the
    solve rate on held-out problems. Stored with the round's game statistics.

Where a campaign is, and everything each round made, is in the store
(:mod:`store.campaigns`), and every step is idempotent: games are runs with
idempotency keys, trainings have keys, evaluations have names. So whatever drives a campaign
(a Celery chain per round, or :func:`drive` in one process) can die at any point, and the next
driver continues the step it was in. A driver advances the campaign only while it holds the
campaign's driver token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents.model import ModelError, ModelRequest, SamplingParams
from agents.model_map import ModelRouter
from agents.paths import data_dir
from execution.batches import execute_runs
from execution.cancelling import cancel_and_wait
from execution.runner import create_run
from graphs.options import explain
from graphs.patterns import get_pattern
from roles import rlad as rlad_roles
from roles import spc as spc_roles
from roles.messages import ChatMessage
from store import campaigns as repo
from store import model_versions
from store.db import is_transient
from store.runs import Store
from store.tables.campaigns import Campaign, CampaignRound
from training import jobs
from training.config import DEFAULT_BASE, RLConfig
from training.critic_eval import CriticEvalConfig, evaluate_critic
from training.evaluation import EvalConfig, evaluate_patterns
from training.export import ExportFilters, export_dataset
from training.games import FILLED_FROM_PROBLEM, game_config
from training.problems import Problem, load_problems

log = logging.getLogger(__name__)

CampaignKind = Literal["spc", "rlad"]
ROUND_STEPS = ("play", "export", "train", "serve", "evaluate")
BASELINE_STEPS = ("evaluate",)
HEARTBEAT_S = 10.0
TRAIN_ATTEMPTS = 2
"""A failed training is launched again once (it resumes from its checkpoint); then the
campaign fails with the trainer's reason."""


@dataclass(frozen=True)
class KindSpec:
    pattern: str
    recipe: str
    eval_default: str
    exports: dict[str, str]
    """export kind -> the game config field naming the logical model it trains (or a name)."""


KINDS: dict[str, KindSpec] = {
    "spc": KindSpec(
        pattern="spc_game",
        recipe="spc",
        eval_default="gen:step-errors?n=16&seed=1000",
        exports={"spc-critic": "critic_model", "spc-sneaky": "sneaky_model"},
    ),
    "rlad": KindSpec(
        pattern="rlad",
        recipe="rlad",
        eval_default="gen:mixed?difficulty=1&n=16&seed=1000",
        exports={"rlad-abstraction": "abstraction", "rlad-solution": "policy"},
    ),
}

TRAIN_FILLED = frozenset({"data", "base", "name", "role", "recipe", "base_adapter", "parent"})


class CampaignError(ValueError):
    """A campaign that cannot be started as asked, or a step that cannot go on."""


class StepPending(Exception):
    """The step waits on something outside this process (a training job); ask again."""

    def __init__(self, reason: str, retry_in_s: float = 5.0) -> None:
        super().__init__(reason)
        self.retry_in_s = retry_in_s


class CampaignConfig(BaseModel):
    """What a campaign plays, trains and evaluates. Every field is a flag of
    ``thinktank campaign start`` and a field of ``POST /v1/campaigns``."""

    model_config = ConfigDict(extra="forbid")

    kind: CampaignKind = Field(description="spc (critic vs sneaky generator) or rlad")
    rounds: int = Field(2, ge=1, le=1000, description="play-train-evaluate rounds")
    games_per_round: int = Field(8, ge=1, le=100_000, description="games played each round")
    problems: str = Field(
        "gen:mixed?difficulty=1&n=1000",
        description="the games' problems: a file of problems with answers, or a gen: spec; "
        "each round takes the next games_per_round of them",
    )
    eval_problems: str | None = Field(
        None,
        description="held-out problems to evaluate on (default: step-labelled "
        "gen:step-errors for spc, gen:mixed for rlad, seeded apart from the games)",
    )
    eval_limit: int = Field(16, ge=1, le=100_000, description="evaluation problems per round")
    baseline: bool = Field(True, description="evaluate the starting models first (round 0)")
    concurrency: int = Field(4, ge=1, le=256, description="games and evaluation runs at once")
    base: str = Field(
        DEFAULT_BASE,
        description="the base model of roles that have no version yet ('smollm2', a model "
        "directory, or a registered model version to start from)",
    )
    game: dict[str, Any] = Field(
        default_factory=dict, description="options of every game run (spc_game or rlad)"
    )
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="RL trainer options for every training (max_steps, lora_r, batch_size...)",
    )
    eval: dict[str, Any] = Field(
        default_factory=dict,
        description="options of the evaluation runs (max_tokens, mode, samples for spc; "
        "rlad run options for rlad)",
    )
    launcher: jobs.LaunchOptions = Field(
        default_factory=jobs.LaunchOptions, description="where training jobs run"
    )
    seed: int = Field(0, description="seed of generated problem sources")

    @model_validator(mode="after")
    def _options_are_valid(self) -> CampaignConfig:
        spec = KINDS[self.kind]
        filled = sorted({*FILLED_FROM_PROBLEM, "adapters", "round"} & self.game.keys())
        if filled:
            raise ValueError(f"game options {filled} are filled in by the campaign")
        try:
            get_pattern(spec.pattern).config_model.model_validate(
                {**self.game, "reference_answer": "0"}
            )
        except ValidationError as exc:
            raise ValueError(f"game options: {explain(exc, flags=False)}") from None
        filled = sorted(TRAIN_FILLED & self.train.keys())
        if filled:
            raise ValueError(f"train options {filled} are filled in by the campaign")
        try:
            RLConfig.model_validate({**self.train, "data": "data.jsonl", "recipe": spec.recipe})
        except ValidationError as exc:
            raise ValueError(f"train options: {explain(exc, flags=False)}") from None
        return self

    def eval_source(self) -> str:
        return self.eval_problems or KINDS[self.kind].eval_default

    def trained_models(self) -> dict[str, str]:
        """export kind -> the logical model its records train."""
        spec = KINDS[self.kind]
        game = get_pattern(spec.pattern).config_model.model_validate(
            {**self.game, "reference_answer": "0"}
        )
        return {
            export: getattr(game, field) if hasattr(game, field) else field
            for export, field in spec.exports.items()
        }


def steps_of(config: CampaignConfig, round_: int) -> tuple[str, ...]:
    return BASELINE_STEPS if round_ == 0 else ROUND_STEPS


def first_position(config: CampaignConfig) -> tuple[int, str]:
    return (0, "evaluate") if config.baseline else (1, "play")


def next_position(config: CampaignConfig, round_: int, step: str) -> tuple[int, str] | None:
    """Where the campaign goes after ``step`` of ``round_``; None when it is done."""
    steps = steps_of(config, round_)
    index = steps.index(step)
    if index + 1 < len(steps):
        return round_, steps[index + 1]
    if round_ >= config.rounds:
        return None
    return round_ + 1, ROUND_STEPS[0]


def campaign_dir(campaign_id: str) -> Path:
    return data_dir() / "campaigns" / campaign_id


def version_name(campaign: Campaign, model: str, round_: int) -> str:
    """Versions are named after their campaign, role and round: never reused, and a
    retried training finds the name it reserved."""
    return model_versions.check_model_name(f"{campaign.name}-{model}-r{round_}")


@dataclass
class CampaignEnv:
    """What steps need from the process that drives them."""

    store: Store
    models: ModelRouter
    database_url: str
    on_progress: Callable[[str], None] | None = None
    poll_s: float = 2.0
    heartbeat_s: float = HEARTBEAT_S

    def say(self, message: str) -> None:
        log.info(message)
        if self.on_progress is not None:
            self.on_progress(message)


# --- starting, resuming, cancelling ----------------------------------------------------------


async def create_campaign(
    store: Store,
    config: CampaignConfig,
    *,
    name: str | None = None,
    driver: str,
    api_key_id: str | None = None,
) -> Campaign:
    """Store a queued campaign after checking its problem sources can be read."""
    _round_problems(config, 1)  # a bad source fails here, not rounds later
    _eval_problems_readable(config)
    campaign_name = name or f"{config.kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    try:
        model_versions.check_model_name(f"{campaign_name}-abstraction-r{config.rounds}")
    except ValueError:
        raise CampaignError(
            f"bad campaign name {campaign_name!r}: letters, digits, '.', '_' or '-', at most "
            "70 characters (model versions are named after it)"
        ) from None
    round_, step = first_position(config)
    campaign = await repo.create_campaign(
        store,
        name=campaign_name,
        kind=config.kind,
        config=config.model_dump(mode="json"),
        driver=driver,
        api_key_id=api_key_id,
    )
    await repo.update_campaign(store, campaign.id, None, round=round_, step=step)
    return await repo.get_campaign(store, campaign.id)


def _eval_problems_readable(config: CampaignConfig) -> None:
    source = config.eval_source()
    problems = load_problems(source, limit=config.eval_limit, seed=config.seed)
    if config.kind == "spc" and not any(p.first_error_step is not None for p in problems):
        raise CampaignError(
            f"{source}: no step-labelled solutions to evaluate the critic on (ProcessBench, "
            "PRM800K, or gen:step-errors)"
        )
    if config.kind == "rlad" and not any(p.answer for p in problems):
        raise CampaignError(f"{source}: no problem has an answer to measure a solve rate")


async def resume_campaign(store: Store, campaign_id: str, *, driver: str) -> str:
    """Take a failed, cancelled or stalled campaign over; returns the new driver token.
    Trainings that failed in the current round get their attempts back."""
    campaign = await repo.get_campaign(store, campaign_id)
    if campaign.status == "succeeded":
        raise CampaignError(f"campaign {campaign.name} has finished; nothing to resume")
    token = await repo.take_over(store, campaign.id, driver=driver)
    current = await repo.get_round(store, campaign.id, campaign.round)
    if current.training_runs:
        reset = {model: {**entry, "attempts": 0} for model, entry in current.training_runs.items()}
        await repo.update_round(store, campaign.id, campaign.round, token, training_runs=reset)
    return token


async def cancel_campaign(store: Store, campaign_id: str) -> Campaign:
    """Stop a campaign: its driver stops at its next write; a training it launched here is
    asked to stop at its next step (it keeps its checkpoint)."""
    campaign = await repo.get_campaign(store, campaign_id)
    if campaign.status in ("succeeded", "failed", "cancelled"):
        return campaign
    await repo.update_campaign(
        store,
        campaign.id,
        None,
        status="cancelled",
        driver_token=None,
        finished_at=datetime.now(UTC),
        error="cancelled by its owner",
    )
    current = await repo.get_round(store, campaign.id, campaign.round)
    for entry in current.training_runs.values():
        with contextlib.suppress(Exception):
            run = await model_versions.get_training_run(store, entry["id"])
            if run.status in ("queued", "running"):
                jobs.signal_local(run)
    return await repo.get_campaign(store, campaign.id)


async def fail_campaign(store: Store, campaign_id: str, token: str, error: str) -> None:
    with contextlib.suppress(repo.DriverReplaced):
        await repo.update_campaign(
            store,
            campaign_id,
            token,
            status="failed",
            error=error,
            finished_at=datetime.now(UTC),
        )


# --- driving -----------------------------------------------------------------------------------


async def run_step(env: CampaignEnv, campaign_id: str, token: str, round_: int, step: str) -> bool:
    """Do ``step`` of ``round_`` if that is where the campaign is; True when the campaign
    has moved past it (now or earlier), False when this driver may not move it (replaced,
    cancelled, failed). Raises :class:`StepPending` while the step waits on a job, and
    :class:`CampaignError` when it cannot go on."""
    campaign = await repo.get_campaign(env.store, campaign_id)
    if campaign.driver_token != token or campaign.status not in ("queued", "running"):
        return False
    config = CampaignConfig.model_validate(campaign.config)
    at = (campaign.round, campaign.step or "")
    if _order(config, at) > _order(config, (round_, step)):
        return True  # done before (a redelivered task)
    if at != (round_, step):
        raise CampaignError(f"campaign {campaign.name} is at {at}, not at {(round_, step)}")
    await repo.update_campaign(
        env.store, campaign_id, token, status="running", heartbeat_at=datetime.now(UTC)
    )
    row = await repo.get_round(env.store, campaign_id, round_)
    if row.steps.get(step, {}).get("status") != "running":
        await _mark_step(env, campaign, row, token, step, status="running")
    await _with_heartbeat(env, campaign_id, token, STEPS[step](env, campaign, config, row, token))
    row = await repo.get_round(env.store, campaign_id, round_)
    await _mark_step(env, campaign, row, token, step, status="done")
    following = next_position(config, round_, step)
    if following is None:
        await repo.update_campaign(
            env.store,
            campaign_id,
            token,
            status="succeeded",
            step=None,
            finished_at=datetime.now(UTC),
        )
        await repo.update_round(
            env.store, campaign_id, round_, token, finished_at=datetime.now(UTC)
        )
        env.say(f"campaign {campaign.name} finished")
        return True
    if following[0] != round_:
        await repo.update_round(
            env.store, campaign_id, round_, token, finished_at=datetime.now(UTC)
        )
    await repo.update_campaign(env.store, campaign_id, token, round=following[0], step=following[1])
    return True


def _order(config: CampaignConfig, position: tuple[int, str]) -> tuple[int, int]:
    round_, step = position
    if not step:  # finished
        return (config.rounds + 1, 0)
    return (round_, steps_of(config, round_).index(step))


async def _mark_step(
    env: CampaignEnv,
    campaign: Campaign,
    row: CampaignRound,
    token: str,
    step: str,
    *,
    status: str,
) -> None:
    now = datetime.now(UTC).isoformat()
    entry = dict(row.steps.get(step, {}))
    entry["status"] = status
    entry["finished_at" if status == "done" else "started_at"] = now
    await repo.update_round(
        env.store, campaign.id, row.round, token, steps={**row.steps, step: entry}
    )
    if status == "running":
        env.say(f"round {row.round}: {step}")


async def _with_heartbeat(env: CampaignEnv, campaign_id: str, token: str, work: Any) -> None:
    """Run a step while telling the store every few seconds that its driver is alive; a
    driver that was replaced stops its step at once."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=env.heartbeat_s)
            if done:
                return task.result()
            try:
                await repo.heartbeat(env.store, campaign_id, token)
            except repo.DriverReplaced:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise
            except Exception as exc:  # the database is away; the step's own writes wait
                log.warning("could not record campaign %s's heartbeat: %s", campaign_id, exc)
    finally:
        await cancel_and_wait([task])


async def advance(env: CampaignEnv, campaign_id: str, token: str) -> bool:
    """Do the campaign's current step; False once it is finished or no longer ours."""
    campaign = await repo.get_campaign(env.store, campaign_id)
    if campaign.step is None or campaign.driver_token != token:
        return False
    if campaign.status not in ("queued", "running"):
        return False
    moved = await run_step(env, campaign_id, token, campaign.round, campaign.step)
    campaign = await repo.get_campaign(env.store, campaign_id)
    return moved and campaign.status == "running"


async def drive(env: CampaignEnv, campaign_id: str, token: str) -> Campaign:
    """Drive the campaign in this process to its end (or until it is taken over or
    cancelled); a step that fails fails the campaign with its reason."""
    while True:
        try:
            if not await advance(env, campaign_id, token):
                break
        except StepPending as pending:
            await asyncio.sleep(min(pending.retry_in_s, env.poll_s))
        except repo.DriverReplaced:
            break
        except CampaignError as exc:
            await fail_campaign(env.store, campaign_id, token, str(exc))
            break
        except ModelError as exc:
            await fail_campaign(env.store, campaign_id, token, f"model call failed: {exc}")
            break
        except Exception as exc:
            if is_transient(exc):  # the database is away: wait for it, the step is idempotent
                log.warning("campaign %s waits for the database: %s", campaign_id, exc)
                await asyncio.sleep(env.poll_s)
                continue
            log.exception("campaign %s failed", campaign_id)
            await fail_campaign(env.store, campaign_id, token, f"{type(exc).__name__}: {exc}")
            break
    return await repo.get_campaign(env.store, campaign_id)


# --- the steps -------------------------------------------------------------------------------


def _round_problems(config: CampaignConfig, round_: int) -> list[Problem]:
    """Round r plays the r-th slice of games_per_round answerable problems (cycling)."""
    playable = [p for p in load_problems(config.problems, seed=config.seed) if p.answer is not None]
    if not playable:
        raise CampaignError(f"{config.problems}: no problem has a reference answer to play on")
    start = (round_ - 1) * config.games_per_round
    return [playable[(start + i) % len(playable)] for i in range(config.games_per_round)]


async def _play(
    env: CampaignEnv, campaign: Campaign, config: CampaignConfig, row: CampaignRound, token: str
) -> None:
    spec = KINDS[config.kind]
    fresh = await repo.get_campaign(env.store, campaign.id)
    run_ids: list[str] = []
    problems = _round_problems(config, row.round)
    for index, problem in enumerate(problems):
        options = game_config(
            spec.pattern, problem, config.game, adapters=fresh.versions, round_=row.round
        )
        run, _ = await create_run(
            env.store,
            spec.pattern,
            problem.problem,
            options,
            idempotency_key=f"campaign:{campaign.id}:r{row.round}:g{index}",
            api_key_id=campaign.api_key_id,
        )
        run_ids.append(run.id)
    await repo.update_round(env.store, campaign.id, row.round, token, run_ids=run_ids)
    ended = 0

    def counted(_run_id: str, outcome: dict[str, Any]) -> None:
        nonlocal ended
        ended += 1
        env.say(f"round {row.round}: game {ended}/{len(run_ids)} {outcome['status']}")

    outcomes = await execute_runs(
        run_ids,
        store=env.store,
        models=env.models,
        database_url=env.database_url,
        concurrency=config.concurrency,
        on_end=counted,
    )
    statuses = [str(o["status"]) for o in outcomes]
    if any(status in ("queued", "running") for status in statuses):
        raise StepPending("games still being played elsewhere", retry_in_s=env.poll_s)
    succeeded = [
        rid for rid, status in zip(run_ids, statuses, strict=True) if status == "succeeded"
    ]
    if not succeeded:
        first = next((o["error"] for o in outcomes if o.get("error")), "no reason recorded")
        raise CampaignError(
            f"round {row.round}: all {len(run_ids)} games failed; the first: {first}"
        )
    games = await _game_metrics(env.store, config, succeeded)
    games["failed_runs"] = len(run_ids) - len(succeeded)
    await repo.update_round(
        env.store, campaign.id, row.round, token, metrics={**row.metrics, "games": games}
    )


async def _game_metrics(store: Store, config: CampaignConfig, run_ids: list[str]) -> dict[str, Any]:
    if config.kind == "spc":
        played = [g for run_id in run_ids for g in await store.outcomes(run_id, spc_roles.SpcGame)]
        return spc_roles.summarize_games(played).model_dump()
    rows = [
        a for run_id in run_ids for a in await store.outcomes(run_id, rlad_roles.RladAbstraction)
    ]
    rewards = [a.reward for a in rows if a.reward is not None]
    gains = [a.improvement for a in rows if a.improvement is not None]
    return {
        "games": len(run_ids),
        "abstractions": len(rows),
        "leaked": sum(bool(a.leaked) for a in rows),
        "mean_reward": sum(rewards) / len(rewards) if rewards else None,
        "mean_improvement": sum(gains) / len(gains) if gains else None,
    }


async def _export(
    env: CampaignEnv, campaign: Campaign, config: CampaignConfig, row: CampaignRound, token: str
) -> None:
    spec = KINDS[config.kind]
    datasets: dict[str, Any] = {}
    for kind, model in config.trained_models().items():
        out = campaign_dir(campaign.id) / f"round-{row.round}" / kind
        filters = ExportFilters(pattern=spec.pattern, run_ids=list(row.run_ids))
        manifest = await export_dataset(env.store, kind, filters, out)
        datasets[model] = {
            "kind": kind,
            "path": str(out / "data.jsonl"),
            "records": manifest.records,
            "sha256": manifest.data_sha256,
            "skipped": manifest.skipped,
        }
        env.say(f"round {row.round}: {kind} dataset, {manifest.records} records")
    await repo.update_round(env.store, campaign.id, row.round, token, datasets=datasets)


_children: list[subprocess.Popen[bytes]] = []
"""Training processes this process launched, reaped as they end."""


async def _train(
    env: CampaignEnv, campaign: Campaign, config: CampaignConfig, row: CampaignRound, token: str
) -> None:
    """Train each role with data, one after another (one machine's cores or GPU at a time);
    pending while a training runs."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)
    fresh = await repo.get_campaign(env.store, campaign.id)
    trainings = dict(row.training_runs)
    versions = dict(row.versions)
    for model, dataset in row.datasets.items():
        if model in versions:
            continue
        if not dataset["records"]:
            trainings[model] = {"skipped": "the round's games gave no training records"}
            continue
        rl = RLConfig.model_validate(
            {
                **config.train,
                "data": dataset["path"],
                "base": fresh.versions.get(model, config.base),
                "name": version_name(campaign, model, row.round),
                "role": model,
                "recipe": KINDS[config.kind].recipe,
            }
        )
        key = f"campaign:{campaign.id}:r{row.round}:{model}"
        entry = dict(trainings.get(model, {}))
        if "id" in entry:
            # Polled every few seconds while it trains: read the run, not the dataset, which
            # submit_training would read and hash again each time.
            launched = await jobs.refresh_status(
                env.store,
                await model_versions.get_training_run(env.store, entry["id"]),
                config.launcher,
            )
            if _is_live(launched):
                raise StepPending(f"training {launched.model_name}", retry_in_s=env.poll_s)
        try:
            sub = await jobs.submit_training(
                env.store, "rl", rl, key=key, resume=None, options=config.launcher
            )
        except (jobs.JobConflict, model_versions.ModelVersionExists) as exc:
            raise CampaignError(f"round {row.round}: cannot train {model}: {exc}") from None
        entry["id"] = sub.run.id
        if sub.action == "done":
            versions[model] = sub.run.model_name
            entry["status"] = "succeeded"
            trainings[model] = entry
            env.say(f"round {row.round}: trained {sub.run.model_name}")
            continue
        if sub.action in ("start", "resume"):
            attempts = int(entry.get("attempts", 0))
            if sub.action == "resume" and sub.run.status == "failed" and attempts >= TRAIN_ATTEMPTS:
                await repo.update_round(
                    env.store, campaign.id, row.round, token, training_runs=trainings
                )
                raise CampaignError(
                    f"round {row.round}: training {model} failed {attempts} times: "
                    f"{sub.run.error}; `thinktank campaign resume {campaign.name}` tries again"
                )
            await _launch(env, sub.run, config)
            entry["attempts"] = attempts + 1
            env.say(f"round {row.round}: training {model} → {sub.run.model_name} ({sub.run.id})")
        entry["status"] = "running"
        trainings[model] = entry
        await repo.update_round(
            env.store, campaign.id, row.round, token, training_runs=trainings, versions=versions
        )
        raise StepPending(f"training {sub.run.model_name}", retry_in_s=env.poll_s)
    await repo.update_round(
        env.store, campaign.id, row.round, token, training_runs=trainings, versions=versions
    )


def _is_live(run: Any) -> bool:
    """Launched and not ended, once refresh_status has settled a dead job: a local job by its
    process, a Ray job by the campaign's Ray job server. A Ray job has no pid until it starts,
    so it counts by its stored status, which is still queued or running only while its newest
    attempt runs (or while the job server cannot be reached)."""
    if run.status not in ("queued", "running"):
        return False
    return run.pid is not None or run.launcher == "ray"


async def _launch(env: CampaignEnv, run: Any, config: CampaignConfig) -> None:
    try:
        job = await jobs.launch_run(
            env.store, run, database_url=env.database_url, options=config.launcher, detach=True
        )
    except jobs.JobConflict as exc:
        raise CampaignError(str(exc)) from None
    if not isinstance(job, str):  # a Ray job is the cluster's to reap
        _children.append(job)


async def _serve(
    env: CampaignEnv, campaign: Campaign, config: CampaignConfig, row: CampaignRound, token: str
) -> None:
    """Each new version answers a one-token probe from the backend of its role, which loads
    the adapter by name; then the campaign's current versions include it."""
    served: dict[str, Any] = {}
    for model, version in row.versions.items():
        backend = env.models.get(model)
        request = ModelRequest(
            messages=[ChatMessage(role="user", content="Reply with OK.")],
            params=SamplingParams(max_tokens=1, temperature=0.0),
            adapter=version,
            tags={"campaign": campaign.id, "agent": "campaign", "role": "probe", "for": model},
        )
        started = time.perf_counter()
        try:
            response = await backend.generate(request)
        except ModelError as exc:
            raise CampaignError(
                f"round {row.round}: the backend of {model!r} could not serve {version}: {exc}"
            ) from None
        served[model] = {
            "version": version,
            "backend": backend.name,
            "adapter": response.adapter,
            "latency_s": round(time.perf_counter() - started, 3),
        }
        env.say(f"round {row.round}: {model} now answers with {version}")
    fresh = await repo.get_campaign(env.store, campaign.id)
    await repo.update_campaign(
        env.store, campaign.id, token, versions={**fresh.versions, **row.versions}
    )
    await repo.update_round(
        env.store, campaign.id, row.round, token, metrics={**row.metrics, "served": served}
    )


async def _evaluate(
    env: CampaignEnv, campaign: Campaign, config: CampaignConfig, row: CampaignRound, token: str
) -> None:
    fresh = await repo.get_campaign(env.store, campaign.id)
    adapters = dict(fresh.versions)
    name = f"campaign-{campaign.id}-r{row.round}"
    progress = _eval_progress(env, row.round)
    if config.kind == "spc":
        critic = config.trained_models()["spc-critic"]
        options = {k: v for k, v in config.eval.items() if k not in CriticEvalConfig.model_fields}
        settings = {k: v for k, v in config.eval.items() if k in CriticEvalConfig.model_fields}
        result, _ = await evaluate_critic(
            env.store,
            env.models,
            env.database_url,
            CriticEvalConfig(
                **{"mode": "fast", "max_tokens": 256, **settings},
                source=config.eval_source(),
                limit=config.eval_limit,
                judge_model=critic,
                options={**options, "adapters": adapters},
                name=name,
                concurrency=config.concurrency,
            ),
            on_progress=progress,
        )
        report = result.report
        metrics = {
            "critic_f1": report.average_f1,
            "error_accuracy": report.overall.error_accuracy,
            "correct_accuracy": report.overall.correct_accuracy,
            "judged": report.overall.samples,
            "subsets": [s.model_dump() for s in report.subsets],
            "mean_tokens": result.mean_tokens,
            "evaluation": result.name,
            "critic_version": adapters.get(critic),
        }
    else:
        summary, _ = await evaluate_patterns(
            env.store,
            env.models,
            env.database_url,
            EvalConfig(
                patterns=["rlad"],
                source=config.eval_source(),
                limit=config.eval_limit,
                seed=config.seed,
                options={"rlad": {**config.game, **config.eval, "adapters": adapters}},
                name=name,
                concurrency=config.concurrency,
            ),
            on_progress=progress,
        )
        pattern = summary.patterns[0]
        metrics = {
            "solve_rate": pattern.accuracy,
            "solved": pattern.correct,
            "problems": pattern.problems,
            "mean_tokens": pattern.mean_tokens,
            "evaluation": summary.name,
        }
    metrics["versions"] = adapters
    await repo.update_round(
        env.store, campaign.id, row.round, token, metrics={**row.metrics, "eval": metrics}
    )
    env.say(f"round {row.round}: evaluated {_headline(config.kind, metrics)}")


def _eval_progress(env: CampaignEnv, round_: int) -> Callable[[Any], None]:
    def show(progress: Any) -> None:
        if progress.last is not None:
            env.say(f"round {round_}: evaluated {progress.ended}/{progress.total}")

    return show


def _headline(kind: str, metrics: dict[str, Any]) -> str:
    if kind == "spc":
        f1 = metrics.get("critic_f1")
        return f"critic F1 {f1:.3f}" if f1 is not None else "critic F1 n/a"
    rate = metrics.get("solve_rate")
    return f"solve rate {rate:.3f}" if rate is not None else "solve rate n/a"


STEPS = {
    "play": _play,
    "export": _export,
    "train": _train,
    "serve": _serve,
    "evaluate": _evaluate,
}
