"""Patterns compared on the same problems: their jobs, options, problems and scores."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agents.model_map import ModelRouter
from graphs.patterns import get_pattern
from roles.checking import answers_match
from store import evaluations as repo
from store.runs import Store
from store.tables.runs import Run
from training.evaluation.records import (
    MAX_PROBLEM_ID,
    MIN_RUN_BUDGET,
    EvalConfig,
    EvalSummary,
    EvaluationError,
    ItemResult,
    Job,
    ProgressCallback,
)
from training.evaluation.runner import evaluate_jobs, stored_jobs
from training.evaluation.stats import compare_paired, summarize_pattern
from training.problems import Problem, load_problems


def solve_jobs(config: EvalConfig, problems: list[Problem]) -> tuple[list[Job], int | None]:
    """Every (problem, pattern) pair, problem by problem, each pattern's config validated;
    with the run token budget of budget mode."""
    unknown = set(config.options) - set(config.patterns)
    if unknown:
        raise EvaluationError(
            f"options given for pattern(s) not evaluated: {', '.join(sorted(unknown))}"
        )
    run_budget = None
    if config.budget_tokens is not None:
        run_budget = config.budget_tokens // len(problems)
        if run_budget < MIN_RUN_BUDGET:
            raise EvaluationError(
                f"--budget-tokens {config.budget_tokens} over {len(problems)} problems is "
                f"{run_budget} tokens per run; a run needs at least {MIN_RUN_BUDGET}"
            )
    configs = {}
    for pattern in config.patterns:
        options = dict(config.options.get(pattern, {}))
        if run_budget is not None:
            if "token_budget" in options:
                raise EvaluationError(
                    f"{pattern}: token_budget is set by --budget-tokens; give one or the other"
                )
            options["token_budget"] = run_budget
        configs[pattern] = validate_pattern_config(pattern, options)
    jobs = [
        Job(problem=problem, pattern=pattern, config=configs[pattern])
        for problem in problems
        for pattern in config.patterns
    ]
    return jobs, run_budget


def pattern_options(patterns: list[str], assignments: list[str]) -> dict[str, dict[str, Any]]:
    """``PATTERN.FIELD=VALUE`` for one pattern, ``FIELD=VALUE`` for every listed pattern that
    has the field; values are JSON when they parse (numbers, booleans, lists), else text."""
    options: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise EvaluationError(
                f"option {assignment!r} is not PATTERN.FIELD=VALUE or FIELD=VALUE"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target, dot, field = key.strip().rpartition(".")
        field = field.replace("-", "_")
        if dot:
            pattern = get_pattern(target).name
            if pattern not in patterns:
                raise EvaluationError(f"option {assignment!r} names {pattern}, not evaluated here")
            options.setdefault(pattern, {})[field] = value
            continue
        takers = [p for p in patterns if field in get_pattern(p).config_model.model_fields]
        if not takers:
            raise EvaluationError(f"no evaluated pattern has an option {field!r}")
        for pattern in takers:
            options.setdefault(pattern, {})[field] = value
    return options


def validate_pattern_config(pattern: str, options: dict[str, Any]) -> dict[str, Any]:
    spec = get_pattern(pattern)
    try:
        return spec.config_model.model_validate(options).model_dump(mode="json")
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "config"
            if error["type"] == "extra_forbidden":
                problems.append(f"{pattern} has no option {where!r}")
            elif error["type"] == "missing":
                problems.append(f"{pattern} needs {where!r}, which an evaluation cannot give")
            else:
                problems.append(f"{pattern}.{where}: {error['msg']}")
        raise EvaluationError("; ".join(problems)) from None


def answerable_problems(source: str, *, limit: int | None, seed: int) -> list[Problem]:
    """The source's problems that have a reference answer, ids checked unique."""
    problems = [p for p in load_problems(source, limit=limit, seed=seed) if p.answer]
    if not problems:
        raise EvaluationError(f"{source}: no problem with a reference answer to score against")
    check_unique_ids(problems, source)
    return problems


def check_unique_ids(problems: list[Problem], source: str) -> None:
    seen: set[str] = set()
    for problem in problems:
        if len(problem.id) > MAX_PROBLEM_ID:
            raise EvaluationError(
                f"{source}: problem id {problem.id[:40]!r}... is longer than {MAX_PROBLEM_ID} "
                "characters, more than an evaluation stores"
            )
        if problem.id in seen:
            raise EvaluationError(
                f"{source}: problem id {problem.id!r} appears twice; an evaluation resumes by "
                "problem id, so ids must be unique"
            )
        seen.add(problem.id)


def score_answer(job: Job, run: Run) -> tuple[bool, str]:
    """A run's answer against the problem's reference; failures and non-answers say why."""
    if run.status == "failed":
        return False, f"run failed: {run.error or 'no reason recorded'}"
    if run.status == "cancelled":
        return False, "run cancelled"
    check = answers_match(run.answer, job.problem.answer or "")
    if run.answer is None and run.stop_reason:
        return False, f"{check.reason} (stopped: {run.stop_reason})"
    return check.correct, check.reason


async def evaluate_patterns(
    store: Store,
    models: ModelRouter,
    database_url: str,
    config: EvalConfig,
    *,
    on_progress: ProgressCallback | None = None,
) -> tuple[EvalSummary, list[ItemResult]]:
    """Run (or resume) the evaluation ``config`` describes; its summary and every item."""
    config, problems, jobs, run_budget = await _planned(config)
    evaluation, items, status = await evaluate_jobs(
        store,
        models,
        database_url,
        jobs,
        name=config.evaluation_name(),
        kind="patterns",
        source=config.source,
        identity=config.identity(),
        score=score_answer,
        concurrency=config.concurrency,
        on_progress=on_progress,
    )
    summary = _summary(config, evaluation.id, status, len(problems), run_budget, items)
    await repo.set_evaluation_status(
        store, evaluation.id, status, summary=summary.model_dump(mode="json")
    )
    return summary, items


async def stored_summary(store: Store, config: EvalConfig) -> tuple[EvalSummary, list[ItemResult]]:
    """The evaluation ``config`` describes as far as it has run, running nothing: what an
    interrupted evaluation holds so far (items it never reached are pending)."""
    config, problems, jobs, run_budget = await _planned(config)
    evaluation, items, status = await stored_jobs(
        store, jobs, name=config.evaluation_name(), kind="patterns", identity=config.identity()
    )
    return _summary(config, evaluation.id, status, len(problems), run_budget, items), items


async def _planned(
    config: EvalConfig,
) -> tuple[EvalConfig, list[Problem], list[Job], int | None]:
    """The config with its source resolved, its problems, its jobs and budget mode's run
    budget."""
    source = resolve_source(config.source)
    config = config.model_copy(update={"source": source})
    # reading many problems takes seconds: not on the event loop an API may share
    problems = await asyncio.to_thread(
        answerable_problems, source, limit=config.limit, seed=config.seed
    )
    jobs, run_budget = solve_jobs(config, problems)
    return config, problems, jobs, run_budget


def _summary(
    config: EvalConfig,
    evaluation_id: str,
    status: str,
    problems: int,
    run_budget: int | None,
    items: list[ItemResult],
) -> EvalSummary:
    by_pattern = {p: [i for i in items if i.pattern == p] for p in config.patterns}
    baseline, *others = config.patterns
    return EvalSummary(
        name=config.evaluation_name(),
        evaluation_id=evaluation_id,
        source=config.source,
        status=status,
        problems=problems,
        confidence=config.confidence,
        budget_tokens=config.budget_tokens,
        run_token_budget=run_budget,
        patterns=[
            summarize_pattern(pattern, by_pattern[pattern], config.confidence)
            for pattern in config.patterns
        ],
        paired=[
            compare_paired(
                pattern, baseline, by_pattern[pattern], by_pattern[baseline], config.confidence
            )
            for pattern in others
        ],
    )


def resolve_source(source: str) -> str:
    """A file source as an absolute path, so a rerun from elsewhere finds the same evaluation."""
    if source.startswith("gen:"):
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source
