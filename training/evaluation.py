"""Patterns compared on the same problems: accuracy, tokens and time, at equal cost if asked.

An evaluation runs every (problem, pattern) pair as a normal stored run, submitted and executed
by the services ``thinktank solve`` uses, at most ``concurrency`` at once, and keeps one item
per pair that names its run. So:

- every number traces back to transcripts (``thinktank runs show RUN_ID``);
- an evaluation is resumable: it is found again by its name (by default a hash of its
  settings, so rerunning the same command finds it), items whose run succeeded are skipped,
  and a run that was interrupted resumes from its checkpoint (its idempotency key is the pair);
- the reference answer is never given to a pattern: it is only used to score the run's answer,
  with :func:`roles.checking.answers_match`.

Accuracy comes with a Wilson score interval; tokens are generated (completion) tokens, what a
pattern's ``token_budget`` limits. ``budget_tokens`` compares patterns at equal total cost:
every pattern may generate at most that many tokens over the whole problem set, enforced as an
equal share per problem (each run's ``token_budget``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.model_map import ModelRouter
from execution.runner import RunInterrupted, create_run, execute_run
from graphs.patterns import get_pattern
from roles.checking import answers_match
from store import evaluations as repo
from store.runs import Store
from store.tables.evaluations import Evaluation, EvaluationItem
from store.tables.runs import Run
from training.problems import Problem, load_problems

log = logging.getLogger(__name__)

MIN_RUN_BUDGET = 16  # PatternConfig.token_budget's floor
MAX_PROBLEM_ID = 200  # evaluation_items.problem_id


class EvaluationError(ValueError):
    """Settings or problems an evaluation cannot run with; the message says why."""


class EvalConfig(BaseModel):
    """What ``thinktank eval`` runs: which patterns, on which problems, with what budget."""

    model_config = ConfigDict(extra="forbid")

    patterns: list[str] = Field(min_length=1, description="registered pattern names")
    source: str = Field(description="a problem file or a gen: spec (training.problems)")
    limit: int | None = Field(None, ge=1, description="first N problems of the source")
    seed: int = Field(0, description="seed of generated sources")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="pattern -> config fields for its runs"
    )
    budget_tokens: int | None = Field(
        None, ge=1, description="generated tokens each pattern may spend on the whole set"
    )
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="of the accuracy interval")
    name: str | None = Field(None, max_length=200, description="default: a hash of the settings")
    concurrency: int = Field(4, ge=1, le=256, description="runs executed at once")

    @field_validator("patterns")
    @classmethod
    def _known_patterns(cls, names: list[str]) -> list[str]:
        canonical = [get_pattern(name).name for name in names]
        duplicates = sorted({n for n in canonical if canonical.count(n) > 1})
        if duplicates:
            raise ValueError(f"pattern(s) listed twice: {', '.join(duplicates)}")
        return canonical

    def identity(self) -> dict[str, Any]:
        """The settings that decide the results; ``concurrency`` and the name do not."""
        return self.model_dump(mode="json", exclude={"name", "concurrency"})

    def evaluation_name(self) -> str:
        return self.name or default_name("eval", self.identity())


def default_name(prefix: str, identity: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{prefix}-{digest[:12]}"


@dataclass(frozen=True)
class Job:
    """One run an evaluation needs: a problem, a pattern and the pattern's config."""

    problem: Problem
    pattern: str
    config: dict[str, Any]


Scorer = Callable[[Job, Run], tuple[bool, str]]


class ItemResult(BaseModel):
    """How one (problem, pattern) pair came out; ``run_id`` leads to its transcript."""

    problem_id: str
    pattern: str
    run_id: str | None
    status: str = Field(description="pending, or the run's end: succeeded, failed, cancelled")
    correct: bool | None
    answer: str | None
    reference: str | None
    reason: str | None
    prompt_tokens: int
    completion_tokens: int
    wall_s: float | None

    @property
    def ended(self) -> bool:
        return self.status != "pending"

    @classmethod
    def from_row(cls, row: EvaluationItem) -> ItemResult:
        return cls.model_validate(row, from_attributes=True)


class Progress(BaseModel):
    """Where an evaluation stands; sent after each item ends (and once at the start)."""

    name: str
    total: int
    ended: int = 0
    resumed: int = Field(0, description="items already done before this call")
    correct: int = 0
    failed: int = 0
    last: ItemResult | None = None


ProgressCallback = Callable[[Progress], None]


class PatternSummary(BaseModel):
    pattern: str
    problems: int = Field(description="items whose run ended (succeeded, failed or cancelled)")
    pending: int = Field(description="items not finished (an interrupted evaluation)")
    correct: int
    failed: int = Field(description="runs that failed (they count as wrong)")
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    mean_tokens: float | None = Field(description="generated tokens per problem")
    mean_prompt_tokens: float | None
    mean_wall_s: float | None
    accuracy_per_1k_tokens: float | None = Field(
        description="correct answers per 1000 generated tokens"
    )
    total_tokens: int


class EvalSummary(BaseModel):
    name: str
    evaluation_id: str
    source: str
    status: str
    problems: int
    confidence: float
    budget_tokens: int | None
    run_token_budget: int | None = Field(description="each run's token_budget in budget mode")
    patterns: list[PatternSummary]


# --- statistics ------------------------------------------------------------------------------


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: sensible at 0/n and n/n, unlike p ± z·se."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = correct / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if correct == 0 else max(0.0, center - half)
    high = 1.0 if correct == n else min(1.0, center + half)
    return low, high


def summarize_pattern(pattern: str, items: list[ItemResult], confidence: float) -> PatternSummary:
    ended = [item for item in items if item.ended]
    n = len(ended)
    correct = sum(bool(item.correct) for item in ended)
    tokens = sum(item.completion_tokens for item in ended)
    walls = [item.wall_s for item in ended if item.wall_s is not None]
    low, high = wilson_interval(correct, n, confidence) if n else (None, None)
    return PatternSummary(
        pattern=pattern,
        problems=n,
        pending=len(items) - n,
        correct=correct,
        failed=sum(item.status == "failed" for item in ended),
        accuracy=correct / n if n else None,
        ci_low=low,
        ci_high=high,
        mean_tokens=tokens / n if n else None,
        mean_prompt_tokens=sum(item.prompt_tokens for item in ended) / n if n else None,
        mean_wall_s=sum(walls) / len(walls) if walls else None,
        accuracy_per_1k_tokens=1000 * correct / tokens if tokens else None,
        total_tokens=tokens,
    )


# --- running ---------------------------------------------------------------------------------


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


def _run_key(evaluation_id: str, job: Job) -> str:
    key = f"eval:{evaluation_id}:{job.pattern}:{job.problem.id}"
    if len(key) <= 200:
        return key
    digest = hashlib.sha256(job.problem.id.encode()).hexdigest()
    return f"eval:{evaluation_id}:{job.pattern}:{digest}"


async def open_evaluation(
    store: Store, *, name: str, kind: str, source: str, identity: dict[str, Any]
) -> Evaluation:
    """The evaluation called ``name``: created, or found with the same settings to resume."""
    evaluation, created = await repo.create_evaluation(
        store, name=name, kind=kind, source=source, config=identity
    )
    if not created and (evaluation.kind != kind or evaluation.config != identity):
        stored = evaluation.config if evaluation.kind == kind else {"kind": evaluation.kind}
        differs = sorted(
            key
            for key in {*stored, *identity}
            if stored.get(key) != identity.get(key) and key != "kind"
        ) or ["kind"]
        raise EvaluationError(
            f"an evaluation named {name!r} already exists with other settings "
            f"({', '.join(differs)}); rerun it with its own settings to resume it, or choose "
            "another --name"
        )
    return evaluation


class Evaluated(NamedTuple):
    evaluation: Evaluation
    items: list[ItemResult]
    status: str
    """finished, or interrupted while some item stays pending"""


async def evaluate_jobs(
    store: Store,
    models: ModelRouter,
    database_url: str,
    jobs: list[Job],
    *,
    name: str,
    kind: str,
    source: str,
    identity: dict[str, Any],
    score: Scorer,
    concurrency: int,
    on_progress: ProgressCallback | None = None,
) -> Evaluated:
    """Open (or resume) the evaluation ``name`` and run its jobs; the caller scores the items
    and stores the summary with :func:`repo.set_evaluation_status`."""
    evaluation = await open_evaluation(
        store, name=name, kind=kind, source=source, identity=identity
    )
    items = await run_jobs(
        store,
        models,
        database_url,
        evaluation,
        jobs,
        score=score,
        concurrency=concurrency,
        on_progress=on_progress,
    )
    status = "finished" if all(item.ended for item in items) else "interrupted"
    return Evaluated(evaluation, items, status)


async def run_jobs(
    store: Store,
    models: ModelRouter,
    database_url: str,
    evaluation: Evaluation,
    jobs: list[Job],
    *,
    score: Scorer,
    concurrency: int,
    on_progress: ProgressCallback | None = None,
) -> list[ItemResult]:
    """Run the jobs not done yet, ``concurrency`` at a time; the results of all, in order.

    Items whose run succeeded (or was cancelled) are taken as they are; the others run, or
    resume, their run. An interrupted run stays pending, to be resumed by the next call.
    """
    stored = {
        (row.problem_id, row.pattern): row
        for row in await repo.evaluation_items(store, evaluation.id)
    }
    results: dict[tuple[str, str], ItemResult] = {}
    todo: list[Job] = []
    for job in jobs:
        row = stored.get((job.problem.id, job.pattern))
        if row is not None and row.status in ("succeeded", "cancelled"):
            results[(job.problem.id, job.pattern)] = ItemResult.from_row(row)
        else:
            todo.append(job)
    progress = Progress(name=evaluation.name, total=len(jobs), resumed=len(results))
    for result in results.values():
        _count(progress, result)
    if on_progress:
        on_progress(progress)

    slots = asyncio.Semaphore(concurrency)

    async def run_one(job: Job) -> None:
        async with slots:
            try:
                result = await _run_job(store, models, database_url, evaluation, job, stored, score)
            except Exception as exc:  # a bug or an outage: the item stays pending
                log.exception("%s/%s could not be evaluated", job.pattern, job.problem.id)
                result = _pending(job, stored, reason=f"not evaluated: {exc}")
        results[(job.problem.id, job.pattern)] = result
        if result.ended:
            _count(progress, result)
        progress.last = result
        if on_progress:
            on_progress(progress)

    await repo.set_evaluation_status(store, evaluation.id, "running")
    try:
        await asyncio.gather(*(run_one(job) for job in todo))
    except BaseException:
        # Ctrl-C, or a bug: what ended is stored; the rest resumes on the next call.
        await asyncio.shield(repo.set_evaluation_status(store, evaluation.id, "interrupted"))
        raise
    return [results[(job.problem.id, job.pattern)] for job in jobs]


def _count(progress: Progress, result: ItemResult) -> None:
    progress.ended += 1
    progress.correct += bool(result.correct)
    progress.failed += result.status == "failed"


async def _run_job(
    store: Store,
    models: ModelRouter,
    database_url: str,
    evaluation: Evaluation,
    job: Job,
    stored: dict[tuple[str, str], EvaluationItem],
    score: Scorer,
) -> ItemResult:
    row = stored.get((job.problem.id, job.pattern))
    if row is None or row.run_id is None:
        run, _ = await create_run(
            store,
            job.pattern,
            job.problem.problem,
            job.config,
            idempotency_key=_run_key(evaluation.id, job),
        )
        if row is None:
            row = await repo.add_item(
                store,
                evaluation.id,
                problem_id=job.problem.id,
                pattern=job.pattern,
                run_id=run.id,
                reference=_reference(job.problem),
            )
        if row.run_id != run.id:  # its old run was deleted (the key is SET NULL)
            await repo.attach_run(store, row.id, run.id)
            row.run_id = run.id
    run_id = row.run_id
    started = time.monotonic()
    try:
        await execute_run(
            run_id, store=store, models=models, database_url=database_url, stream_tokens=False
        )
    except RunInterrupted as exc:
        log.warning("run %s of %s/%s was interrupted: %s", run_id, job.pattern, job.problem.id, exc)
        return ItemResult.from_row(row).model_copy(update={"reason": f"interrupted: {exc}"})
    wall_s = time.monotonic() - started
    run = await store.get_run(run_id)
    if run.status not in ("succeeded", "failed", "cancelled"):
        # another process holds the run (a second evaluation of the same name): not ours to score
        return ItemResult.from_row(row).model_copy(update={"reason": f"run is {run.status}"})
    # sympy can take a second on a hard answer: off the loop, so concurrent runs go on
    correct, reason = await asyncio.to_thread(score, job, run)
    values = {
        "status": run.status,
        "correct": correct,
        "answer": run.answer,
        "reason": reason,
        "prompt_tokens": run.prompt_tokens,
        "completion_tokens": run.completion_tokens,
        "wall_s": wall_s,
    }
    await repo.finish_item(store, row.id, **values)
    return ItemResult(
        problem_id=job.problem.id,
        pattern=job.pattern,
        run_id=run_id,
        reference=row.reference,
        **values,
    )


def _pending(job: Job, stored: dict[tuple[str, str], EvaluationItem], *, reason: str) -> ItemResult:
    row = stored.get((job.problem.id, job.pattern))
    return ItemResult(
        problem_id=job.problem.id,
        pattern=job.pattern,
        run_id=row.run_id if row else None,
        status="pending",
        correct=None,
        answer=None,
        reference=_reference(job.problem),
        reason=reason,
        prompt_tokens=0,
        completion_tokens=0,
        wall_s=None,
    )


def _reference(problem: Problem) -> str | None:
    if problem.first_error_step is not None:
        return str(problem.first_error_step)
    return problem.answer


async def evaluate_patterns(
    store: Store,
    models: ModelRouter,
    database_url: str,
    config: EvalConfig,
    *,
    on_progress: ProgressCallback | None = None,
) -> tuple[EvalSummary, list[ItemResult]]:
    """Run (or resume) the evaluation ``config`` describes; its summary and every item."""
    source = resolve_source(config.source)
    config = config.model_copy(update={"source": source})
    problems = answerable_problems(source, limit=config.limit, seed=config.seed)
    jobs, run_budget = solve_jobs(config, problems)
    name = config.evaluation_name()
    evaluation, items, status = await evaluate_jobs(
        store,
        models,
        database_url,
        jobs,
        name=name,
        kind="patterns",
        source=source,
        identity=config.identity(),
        score=score_answer,
        concurrency=config.concurrency,
        on_progress=on_progress,
    )
    summary = EvalSummary(
        name=name,
        evaluation_id=evaluation.id,
        source=source,
        status=status,
        problems=len(problems),
        confidence=config.confidence,
        budget_tokens=config.budget_tokens,
        run_token_budget=run_budget,
        patterns=[
            summarize_pattern(
                pattern, [i for i in items if i.pattern == pattern], config.confidence
            )
            for pattern in config.patterns
        ],
    )
    await repo.set_evaluation_status(
        store, evaluation.id, status, summary=summary.model_dump(mode="json")
    )
    return summary, items


def resolve_source(source: str) -> str:
    """A file source as an absolute path, so a rerun from elsewhere finds the same evaluation."""
    if source.startswith("gen:"):
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


# --- reporting -------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(summary: EvalSummary) -> str:
    """The comparison as plain text: one row per pattern."""
    level = f"{100 * summary.confidence:g}% CI"
    header = [
        "pattern",
        "n",
        "accuracy",
        level,
        "tokens/problem",
        "wall s/problem",
        "acc/1k tokens",
        "failed",
    ]
    rows = [header]
    for p in summary.patterns:
        interval = "-" if p.ci_low is None else f"{_percent(p.ci_low)}-{_percent(p.ci_high)}"
        n = str(p.problems) if not p.pending else f"{p.problems} (+{p.pending} pending)"
        rows.append(
            [
                p.pattern,
                n,
                _percent(p.accuracy),
                interval,
                _number(p.mean_tokens),
                _number(p.mean_wall_s, 2),
                _number(p.accuracy_per_1k_tokens, 3),
                str(p.failed),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    budget = ""
    if summary.budget_tokens is not None:
        budget = (
            f"; equal budget: {summary.budget_tokens} generated tokens per pattern "
            f"({summary.run_token_budget} per problem)"
        )
    title = f"{summary.name}: {summary.problems} problems from {summary.source}{budget}"
    return "\n".join([title, *lines])


def write_results(
    summary: EvalSummary, items: list[ItemResult], out_dir: Path
) -> tuple[Path, Path]:
    """``results.json`` (summary and every item with its run id) and the accuracy-vs-tokens
    plot ``accuracy_vs_tokens.png``, in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "results.json"
    payload = {
        "summary": summary.model_dump(mode="json"),
        "items": [item.model_dump(mode="json") for item in items],
    }
    results.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    plot = out_dir / "accuracy_vs_tokens.png"
    plot_accuracy_vs_tokens(summary, plot)
    return results, plot


def plot_accuracy_vs_tokens(summary: EvalSummary, path: Path) -> None:
    """One point per pattern: mean generated tokens per problem against accuracy, with the
    accuracy's interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit to import
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for p in summary.patterns:
        if p.accuracy is None or p.mean_tokens is None:
            continue
        # clamped: an interval's end can sit a rounding error inside 0% or 100%
        below = max(0.0, 100 * (p.accuracy - (p.ci_low or 0.0)))
        above = max(0.0, 100 * ((p.ci_high or 0.0) - p.accuracy))
        axes.errorbar(
            [p.mean_tokens],
            [100 * p.accuracy],
            yerr=[[below], [above]],
            fmt="o",
            capsize=4,
        )
        axes.annotate(
            p.pattern,
            (p.mean_tokens, 100 * p.accuracy),
            textcoords="offset points",
            xytext=(6, 6),
        )
    plotted = [p.mean_tokens for p in summary.patterns if p.mean_tokens is not None]
    # from zero, and room on the right for the last point's label
    axes.set_xlim(0, 1.3 * max(plotted, default=0) or 1)
    axes.set_xlabel("generated tokens per problem (mean)")
    axes.set_ylabel(f"accuracy, % ({100 * summary.confidence:g}% interval)")
    axes.set_ylim(-5, 105)
    axes.set_title(f"{summary.name}: {summary.problems} problems", fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
