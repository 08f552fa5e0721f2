"""A round's five steps: play, export, train, serve, evaluate."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.model import ModelError, ModelRequest, SamplingParams
from execution.batches import execute_runs
from execution.runner import create_run
from roles import rlad as rlad_roles
from roles import spc as spc_roles
from roles.messages import ChatMessage
from store import campaigns as repo
from store import model_versions
from store.runs import Store
from store.tables.campaigns import Campaign, CampaignRound
from training import jobs
from training.campaigns.config import (
    KINDS,
    TRAIN_ATTEMPTS,
    WARM_START_EXPORTS,
    CampaignConfig,
    CampaignEnv,
    CampaignError,
    StepPending,
    campaign_dir,
    version_name,
)
from training.config import RLConfig, SFTConfig, TrainConfig
from training.critic_eval import evaluate_critic
from training.evaluation import EvalConfig, evaluate_patterns
from training.export import ExportFilters, export_dataset
from training.games import game_config
from training.problems import Problem, load_problems
from training.step_probe_eval import (
    evaluate_step_probes,
    read_step_probe_results,
    write_step_probe_results,
)
from training.warm_start import WarmStartError, WarmStartManifest, build_warm_start


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
    current = {**await starting_versions(env.store, config), **fresh.versions}
    adapters = await game_adapters(env.store, campaign.id, config, row.round, current)
    # a file or generator of many problems takes seconds to read: not on the event loop
    problems = await asyncio.to_thread(_round_problems, config, row.round)
    for index, problem in enumerate(problems):
        options = game_config(
            spec.pattern, problem, config.game, adapters=adapters, round_=row.round
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
    metrics = {**row.metrics, "games": games, "played_with": adapters}
    await repo.update_round(env.store, campaign.id, row.round, token, metrics=metrics)


async def starting_versions(store: Store, config: CampaignConfig) -> dict[str, str]:
    """Trained model -> the registered version ``base`` names, for a campaign that starts from
    one: until a model has a version of the campaign's own, it plays and is evaluated with
    that version's adapter, not the bare weights beneath it (it trains from it too)."""
    try:
        await model_versions.get_model_version(store, config.base)
    except (model_versions.ModelVersionNotFound, ValueError):
        return {}
    return dict.fromkeys(set(config.trained_models().values()), config.base)


async def game_adapters(
    store: Store, campaign_id: str, config: CampaignConfig, round_: int, current: dict[str, str]
) -> dict[str, str]:
    """The versions a round's games play with: the campaign's current ones, except that with
    ``balance`` an SPC round's critic is the version it had a round earlier (the paper's
    balancing game, Sneaky-k against Critic-(k-1): against its own round's critic the game
    is too easy for the critic). Round 1 plays both at their start, round 2 the first
    round's sneaky generator against the starting critic, round 3 the second round's
    sneaky generator against the first round's critic. With a warm start the start is
    round 0's SFT versions (SPC's Sneaky-0 and Critic-0)."""
    adapters = dict(current)
    if config.kind != "spc" or not config.balance:
        return adapters
    critic = config.trained_models()["spc-critic"]
    behind: str | None = None
    for row in await repo.rounds_of(store, campaign_id):  # in round order: the newest wins
        if (row.round == 0 or row.round < round_ - 1) and critic in row.versions:
            behind = row.versions[critic]
    if behind is None:
        start = await starting_versions(store, config)
        if critic in start:
            adapters[critic] = start[critic]
        else:
            adapters.pop(critic, None)
    else:
        adapters[critic] = behind
    return adapters


async def _game_metrics(store: Store, config: CampaignConfig, run_ids: list[str]) -> dict[str, Any]:
    if config.kind == "spc":
        played = [g for run_id in run_ids for g in await store.outcomes(run_id, spc_roles.SpcGame)]
        return spc_roles.summarize_games(played).model_dump()
    # the no-abstraction baseline (abstraction None) is the games' yardstick, not a player's
    rows = [
        a
        for run_id in run_ids
        for a in await store.outcomes(run_id, rlad_roles.RladAbstraction)
        if a.abstraction is not None
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
            "rewards": await asyncio.to_thread(reward_stats, out / "data.jsonl"),
        }
        env.say(f"round {row.round}: {kind} dataset, {manifest.records} records")
    await repo.update_round(env.store, campaign.id, row.round, token, datasets=datasets)


def reward_stats(path: Path) -> dict[str, Any]:
    """How the records' rewards spread: their count of distinct values, mean, min and max."""
    rewards: list[float] = []
    if path.is_file():
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    reward = json.loads(line).get("reward")
                    if isinstance(reward, int | float):
                        rewards.append(float(reward))
    if not rewards:
        return {"distinct": 0, "mean": None, "min": None, "max": None}
    return {
        "distinct": len(set(rewards)),
        "mean": sum(rewards) / len(rewards),
        "min": min(rewards),
        "max": max(rewards),
    }


def untrainable(config: CampaignConfig, row: CampaignRound, dataset: dict[str, Any]) -> str | None:
    """Why a round's dataset must not be trained on, or None. A round without one valid SPC
    game taught neither side anything (every rewrite failed the validity check), and records
    that all earn one reward give no signal: a group-relative advantage is 0 everywhere, and
    SPC's raw +-1 would push every reply the same way whatever it said."""
    games = row.metrics.get("games", {})
    if config.kind == "spc" and games and not games.get("valid"):
        return (
            f"no valid game in the round's {len(row.run_ids)} game runs: "
            f"{games.get('games', 0)} games played, {games.get('invalid', 0)} with an invalid "
            f"sneaky rewrite, {games.get('failed_runs', 0)} runs failed"
        )
    if not dataset["records"]:
        return "the round's games gave no training records"
    rewards = dataset.get("rewards") or {}
    if rewards.get("distinct") == 1:
        return (
            f"no signal: all {dataset['records']} records have one reward "
            f"({rewards['min']:g}); nothing to tell better replies from worse"
        )
    return None


_children: list[subprocess.Popen[bytes]] = []
"""Training processes this process launched, reaped as they end."""


async def _train(
    env: CampaignEnv, campaign: Campaign, config: CampaignConfig, row: CampaignRound, token: str
) -> None:
    """Train each role with data, one after another (one machine's cores or GPU at a time);
    pending while a training runs."""
    fresh = await repo.get_campaign(env.store, campaign.id)
    warm_data = await _warm_start_data(env, campaign.id)
    trainings = dict(row.training_runs)
    versions = dict(row.versions)
    for model, dataset in row.datasets.items():
        if model in versions:
            continue
        reason = untrainable(config, row, dataset)
        if reason is not None:
            if trainings.get(model, {}).get("skipped") != reason:
                env.say(f"round {row.round}: {model} not trained: {reason}")
            trainings[model] = {"skipped": reason}
            continue
        options = config.train_options(model)
        if KINDS[config.kind].recipe == "spc" and model in warm_data:
            # SPC mixes its round-0 SFT set into every RL step (0.15 x NLL)
            options = {"sft_data": warm_data[model], **options}
        rl = RLConfig.model_validate(
            {
                **options,
                "data": dataset["path"],
                "base": fresh.versions.get(model, config.base),
                "name": version_name(campaign, model, row.round),
                "role": model,
                "recipe": KINDS[config.kind].recipe,
            }
        )
        await _train_one(env, campaign, config, row, token, model, "rl", rl, trainings, versions)
    await repo.update_round(
        env.store, campaign.id, row.round, token, training_runs=trainings, versions=versions
    )


async def _train_one(
    env: CampaignEnv,
    campaign: Campaign,
    config: CampaignConfig,
    row: CampaignRound,
    token: str,
    model: str,
    kind: str,
    train_config: TrainConfig,
    trainings: dict[str, Any],
    versions: dict[str, str],
) -> None:
    """Bring ``model``'s training of this round to its end: launch it (once more after a
    failure), or find it done and put its version in ``versions``; pending while it runs."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)
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
            env.store, kind, train_config, key=key, resume=None, options=config.launcher
        )
    except (jobs.JobConflict, model_versions.ModelVersionExists) as exc:
        raise CampaignError(f"round {row.round}: cannot train {model}: {exc}") from None
    entry["id"] = sub.run.id
    if sub.action == "done":
        versions[model] = sub.run.model_name
        entry["status"] = "succeeded"
        trainings[model] = entry
        env.say(f"round {row.round}: trained {sub.run.model_name}")
        return
    if sub.action in ("start", "resume"):
        attempts = int(entry.get("attempts", 0))
        if sub.action == "resume" and sub.run.status == "failed" and attempts >= TRAIN_ATTEMPTS:
            trainings[model] = entry
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


async def _warm_start_data(env: CampaignEnv, campaign_id: str) -> dict[str, str]:
    """Trained model -> its round-0 SFT file, for a campaign that warm-started."""
    for row in await repo.rounds_of(env.store, campaign_id):
        if row.round == 0:
            return {model: d["path"] for model, d in row.datasets.items() if d.get("warm_start")}
    return {}


async def _warm_start(
    env: CampaignEnv, campaign: Campaign, config: CampaignConfig, row: CampaignRound, token: str
) -> None:
    """Round 0 before the baseline: build each trained role's SFT set (``thinktank data
    warm-start``), train each role's first version on it, and serve those versions, so round
    1 plays models that have seen their format (SPC's round-0 SFT, RLAD's warm start)."""
    out = campaign_dir(campaign.id) / "round-0" / "warm-start"
    datasets = dict(row.datasets)
    if not datasets:
        manifest_path = out / "manifest.json"
        if manifest_path.is_file():  # built before the step ran again: not built twice
            manifest = WarmStartManifest.model_validate_json(manifest_path.read_text())
        else:
            warm = config.warm_start_config()
            env.say(f"round 0: building {warm.method} warm-start data from {warm.n} problems")
            try:
                manifest = await build_warm_start(warm, out, models=env.models)
            except WarmStartError as exc:
                raise CampaignError(f"round 0: warm start: {exc}") from None
        models = config.trained_models()
        for file in manifest.datasets:
            model = models[WARM_START_EXPORTS[config.kind][file.role]]
            datasets[model] = {
                "kind": f"warm-start-{file.role}",
                "warm_start": True,
                "path": str(out / file.file),
                "records": file.records,
                "sha256": file.data_sha256,
                "skipped": manifest.skipped,
            }
            env.say(f"round 0: {file.role} warm-start set, {file.records} records")
        await repo.update_round(env.store, campaign.id, 0, token, datasets=datasets)
    trainings = dict(row.training_runs)
    versions = dict(row.versions)
    for model, dataset in datasets.items():
        if model in versions:
            continue
        if not dataset["records"]:
            trainings[model] = {"skipped": "the warm start built no records for it"}
            continue
        sft = SFTConfig.model_validate(
            {
                **config.warm_start_train,
                "data": dataset["path"],
                "base": config.base,
                "name": version_name(campaign, model, 0),
                "role": model,
            }
        )
        await _train_one(env, campaign, config, row, token, model, "sft", sft, trainings, versions)
    await repo.update_round(
        env.store, campaign.id, 0, token, training_runs=trainings, versions=versions
    )
    if versions:
        await _serve(env, campaign, config, await repo.get_round(env.store, campaign.id, 0), token)


def _is_live(run: Any) -> bool:
    """Launched and not ended, once refresh_status has settled a dead job: a local job by its
    process, a Ray job by the campaign's Ray job server. A Ray job has no pid until it starts,
    so it counts by its stored status, which is still queued or running only while its newest
    attempt runs (or while the job server cannot be reached)."""
    if run.status not in ("queued", "running"):
        return False
    return run.pid is not None or run.launcher == "ray"


async def _launch(env: CampaignEnv, run: Any, config: CampaignConfig) -> None:
    tied = env.tied_trainings is not None
    try:
        job = await jobs.launch_run(
            env.store,
            run,
            database_url=env.database_url,
            options=config.launcher,
            detach=True,
            tied=tied,
        )
    except jobs.JobConflict as exc:
        raise CampaignError(str(exc)) from None
    if not isinstance(job, str):  # a Ray job is the cluster's to reap
        _children.append(job)
        if env.tied_trainings is not None:
            env.tied_trainings.append((job, run.id))


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
    adapters = {**await starting_versions(env.store, config), **fresh.versions}
    name = f"campaign-{campaign.id}-r{row.round}"
    if config.kind == "spc":
        metrics = await _evaluate_critic(env, campaign, config, row, adapters, name)
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
            on_progress=_eval_progress(env, row.round),
        )
        pattern = summary.patterns[0]
        metrics = {
            "headline": {
                "name": "solve rate",
                "value": pattern.accuracy,
                "low": pattern.ci_low,
                "high": pattern.ci_high,
                "n": pattern.problems,
            },
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
    env.say(f"round {row.round}: evaluated {headline_text(config.kind, metrics)}")


async def _evaluate_critic(
    env: CampaignEnv,
    campaign: Campaign,
    config: CampaignConfig,
    row: CampaignRound,
    adapters: dict[str, str],
    name: str,
) -> dict[str, Any]:
    """The critic's step accuracy in its own format (the headline, as SPC reports it), and
    ProcessBench's F1 through process_judge beside it unless ``eval.processbench`` is off."""
    critic = config.trained_models()["spc-critic"]
    probe_config = config.step_probe_config(adapter=adapters.get(critic))
    path = campaign_dir(campaign.id) / f"round-{row.round}" / "step-probes.json"
    # judged before (the step runs again after a crash): the verdicts are kept, not redone
    probes = await asyncio.to_thread(read_step_probe_results, path, probe_config)
    if probes is None:

        def probed(done: int, total: int) -> None:
            env.say(f"round {row.round}: step probes {done}/{total}")

        probes = await evaluate_step_probes(env.models, probe_config, on_progress=probed)
        await asyncio.to_thread(write_step_probe_results, probes, path)
    metrics: dict[str, Any] = {
        "headline": probes.headline(),
        **probes.metrics(),
        "step_probe_results": str(path),
        "critic_version": adapters.get(critic),
    }
    if config.processbench():
        result, _ = await evaluate_critic(
            env.store,
            env.models,
            env.database_url,
            config.critic_eval_config(adapters=adapters, name=name),
            on_progress=_eval_progress(env, row.round),
        )
        report = result.report
        metrics |= {
            "critic_f1": report.average_f1,
            "error_accuracy": report.overall.error_accuracy,
            "correct_accuracy": report.overall.correct_accuracy,
            "judged": report.overall.samples,
            "subsets": [s.model_dump() for s in report.subsets],
            "mean_tokens": result.mean_tokens,
            "evaluation": result.name,
        }
    return metrics


def _eval_progress(env: CampaignEnv, round_: int) -> Callable[[Any], None]:
    def show(progress: Any) -> None:
        if progress.last is not None:
            env.say(f"round {round_}: evaluated {progress.ended}/{progress.total}")

    return show


def _interval(headline: dict[str, Any]) -> str:
    value, low, high = headline.get("value"), headline.get("low"), headline.get("high")
    if value is None:
        return f"{headline.get('name', 'score')} n/a"
    text = f"{headline['name'].replace('_', ' ')} {value:.3f}"
    if low is not None and high is not None:
        text += f" [{low:.3f}, {high:.3f}]"
    return f"{text} (n={headline.get('n', 0)})"


def headline_text(kind: str, metrics: dict[str, Any]) -> str:
    """A round's evaluation in one line: its headline with the interval (and, for an SPC
    campaign, ProcessBench's F1 beside it). Rounds stored before headlines read as before."""
    headline = metrics.get("headline")
    if kind == "spc":
        f1 = metrics.get("critic_f1")
        f1_text = f"critic F1 {f1:.3f}" if f1 is not None else "critic F1 n/a"
        if headline is None:
            return f1_text
        return _interval(headline) + (f", {f1_text}" if "critic_f1" in metrics else "")
    if headline is not None:
        return _interval(headline)
    rate = metrics.get("solve_rate")
    return f"solve rate {rate:.3f}" if rate is not None else "solve rate n/a"


STEPS = {
    "play": _play,
    "export": _export,
    "warm_start": _warm_start,
    "train": _train,
    "serve": _serve,
    "evaluate": _evaluate,
}
