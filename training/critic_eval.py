"""A critic or verifier scored the ProcessBench way.

Each step-labelled solution (ProcessBench, PRM800K) becomes a ``process_judge`` run: the judge
model names the earliest wrong step, or -1 when it finds none. A judgment is right when it
names exactly the labelled step (-1 for a correct solution). Per subset, *error accuracy* is
the rate over erroneous solutions, *correct accuracy* the rate over correct ones, and F1 their
harmonic mean; the papers report the mean F1 over subsets, which is here too. Unreadable
judgments count as wrong. Runs, resume and storage are those of :mod:`training.evaluation`.

With ``samples`` > 1 a run's answer is the judgments' majority, so the headline is greedy (one
judgment at temperature 0, the default, as ProcessBench decodes) or the majority of K. The same
runs are verifier training data (``thinktank data export --kind verifier``): every judgment is a
stored turn, the judgments of one run a group. FlexiVe's GRPO samples 14 fast-mode judgments
of one prompt at temperature 0.6; greedy judgments are all alike and give GRPO nothing to
compare, so ``eval-critic --training-groups`` samples :data:`TRAINING_GROUP_SIZE` fast-mode
judgments at :data:`TRAINING_TEMPERATURE` with distinct seeds (judgment i of solution j:
seed + 16 j + i).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.model_map import ModelRouter
from graphs.common import MAX_CALL_TOKENS
from store import evaluations as repo
from store.runs import Store
from store.tables.runs import Run
from training.evaluation import (
    EvaluationError,
    ItemResult,
    Job,
    ProgressCallback,
    check_unique_ids,
    default_name,
    evaluate_jobs,
    resolve_source,
    validate_pattern_config,
)
from training.problems import GENERATOR_PREFIX, Problem, load_problems

JUDGE_PATTERN = "process_judge"

MAX_JUDGMENTS = 16
"""The most judgments per solution (process_judge's ``samples``)."""

TRAINING_GROUP_SIZE = 8
"""Judgments per solution of ``eval-critic --training-groups``: FlexiVe's GRPO groups are 14;
8 costs a CPU little more than half as much, and a judgment the judge gets wrong one time in
eight still shows up in about two groups in three (1 - (7/8)^8)."""

TRAINING_TEMPERATURE = 0.6
"""FlexiVe's sampling temperature for its GRPO groups (and its fast verifications)."""


class CriticEvalConfig(BaseModel):
    """What ``thinktank eval-critic`` runs: which labelled solutions, judged how."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        description="a ProcessBench or PRM800K file (or folder), or gen:step-errors[?...]"
    )
    limit: int | None = Field(None, ge=1, description="first N labelled solutions")
    judge_model: str = Field("verifier", description="logical model name of the judge")
    mode: Literal["fast", "slow"] = Field("slow", description="critique, or answer at once")
    samples: int = Field(
        1,
        ge=1,
        le=MAX_JUDGMENTS,
        description="judgments per solution; the run's answer is their majority",
    )
    max_tokens: int = Field(512, ge=1, le=MAX_CALL_TOKENS, description="budget of each judgment")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="other process_judge fields (temperature, seed: judgment i samples with "
        "seed + i, ...)",
    )
    name: str | None = Field(None, max_length=200, description="default: a hash of the settings")
    concurrency: int = Field(4, ge=1, le=256, description="runs executed at once")

    def identity(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"name", "concurrency"})

    def evaluation_name(self) -> str:
        return self.name or default_name("critic", self.identity())

    def judge_config(self, steps: list[str], index: int = 0) -> dict[str, Any]:
        """The ``process_judge`` config of the ``index``-th solution. A ``seed`` option is
        the first solution's: solution j's judgments draw seeds seed + 16 j + i, so no two
        judgments of an evaluation share a seed (with one seed for all, similar prompts drew
        the same samples)."""
        fields = {
            **self.options,
            "steps": steps,
            "judge_model": self.judge_model,
            "mode": self.mode,
            "samples": self.samples,
            "max_tokens": self.max_tokens,
        }
        if isinstance(self.options.get("seed"), int):
            fields["seed"] = self.options["seed"] + MAX_JUDGMENTS * index
        return validate_pattern_config(JUDGE_PATTERN, fields)

    def temperature(self) -> float:
        """The judges' sampling temperature (an option of process_judge; 0 unless set)."""
        return float(self.judge_config(["a step"])["temperature"])


class Judgment(BaseModel):
    """One labelled solution and what the judge said about it."""

    problem_id: str
    subset: str
    label: int = Field(description="the earliest wrong step, -1 when all are right")
    predicted: int | None = Field(description="the step the judge named; None: no usable index")


class SubsetScore(BaseModel):
    subset: str
    samples: int
    erroneous: int = Field(description="solutions with a wrong step")
    error_hits: int = Field(description="erroneous solutions whose earliest wrong step was named")
    error_accuracy: float | None
    correct: int = Field(description="solutions whose every step is right")
    correct_hits: int = Field(description="correct solutions judged -1")
    correct_accuracy: float | None
    f1: float | None = Field(description="harmonic mean of the two accuracies")
    no_index: int = Field(description="judgments without a usable index (counted wrong)")


class CriticReport(BaseModel):
    subsets: list[SubsetScore]
    overall: SubsetScore = Field(description="all judgments pooled")
    average_f1: float | None = Field(description="the mean of the subsets' F1 (as published)")


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def score_subset(subset: str, judgments: list[Judgment]) -> SubsetScore:
    erroneous = [j for j in judgments if j.label != -1]
    correct = [j for j in judgments if j.label == -1]
    error_hits = sum(j.predicted == j.label for j in erroneous)
    correct_hits = sum(j.predicted == -1 for j in correct)
    error_accuracy = error_hits / len(erroneous) if erroneous else None
    correct_accuracy = correct_hits / len(correct) if correct else None
    return SubsetScore(
        subset=subset,
        samples=len(judgments),
        erroneous=len(erroneous),
        error_hits=error_hits,
        error_accuracy=error_accuracy,
        correct=len(correct),
        correct_hits=correct_hits,
        correct_accuracy=correct_accuracy,
        f1=harmonic_mean(error_accuracy, correct_accuracy),
        no_index=sum(j.predicted is None for j in judgments),
    )


def score_processbench(judgments: Iterable[Judgment]) -> CriticReport:
    """ProcessBench's scores of a set of judgments, per subset and pooled."""
    judgments = list(judgments)
    by_subset: dict[str, list[Judgment]] = {}
    for judgment in judgments:
        by_subset.setdefault(judgment.subset, []).append(judgment)
    subsets = [score_subset(name, items) for name, items in sorted(by_subset.items())]
    f1s = [s.f1 for s in subsets]
    return CriticReport(
        subsets=subsets,
        overall=score_subset("all", judgments),
        average_f1=sum(f1s) / len(f1s) if f1s and None not in f1s else None,
    )


def subset_of(problem: Problem) -> str:
    """ProcessBench ids are ``<subset>-<n>`` (``gsm8k-12``, ``olympiadbench-3``)."""
    if isinstance(problem.meta.get("subset"), str):
        return problem.meta["subset"]
    match = re.fullmatch(r"(.+)-\d+", problem.id)
    return match.group(1) if match else problem.source


def predicted_index(answer: str | None) -> int | None:
    if answer is None or not re.fullmatch(r"-?\d+", answer.strip()):
        return None
    return int(answer)


def score_judgment(job: Job, run: Run) -> tuple[bool, str]:
    label = job.problem.first_error_step
    if run.status != "succeeded":
        return False, f"run {run.status}: {run.error or 'no reason recorded'}"
    predicted = predicted_index(run.answer)
    if predicted is None:
        return False, f"no step index given (stopped: {run.stop_reason})"
    truth = "all steps are right" if label == -1 else f"step {label} is the earliest wrong one"
    said = "found no wrong step" if predicted == -1 else f"named step {predicted}"
    return predicted == label, f"{said}; {truth}"


class CriticEvalResult(BaseModel):
    name: str
    evaluation_id: str
    source: str
    status: str
    judge_model: str
    mode: str
    samples: int = Field(1, description="judgments per solution, their majority scored")
    temperature: float = Field(0.0, description="the judgments' sampling temperature")
    report: CriticReport
    mean_tokens: float | None = Field(description="generated tokens per judged solution")


def labelled_problems(source: str, *, limit: int | None) -> list[Problem]:
    # every generated step-labelled solution is labelled: make no more than are judged
    generated = limit if source.startswith(GENERATOR_PREFIX) else None
    problems = [
        p
        for p in load_problems(source, limit=generated)
        if p.first_error_step is not None and p.solution_steps
    ]
    if not problems:
        raise EvaluationError(
            f"{source}: no step-labelled solution (ProcessBench: problem, steps, label; or "
            "PRM800K; or gen:step-errors) to judge"
        )
    problems = problems[:limit] if limit is not None else problems
    check_unique_ids(problems, source)
    return problems


async def evaluate_critic(
    store: Store,
    models: ModelRouter,
    database_url: str,
    config: CriticEvalConfig,
    *,
    on_progress: ProgressCallback | None = None,
) -> tuple[CriticEvalResult, list[ItemResult]]:
    """Judge every labelled solution of ``config.source`` (or resume doing so) and score it."""
    source = resolve_source(config.source)
    config = config.model_copy(update={"source": source})
    # reading many problems takes seconds: not on the event loop an API may share
    problems = await asyncio.to_thread(labelled_problems, source, limit=config.limit)
    jobs = [
        Job(problem=p, pattern=JUDGE_PATTERN, config=config.judge_config(p.solution_steps, index))
        for index, p in enumerate(problems)
    ]
    name = config.evaluation_name()
    evaluation, items, status = await evaluate_jobs(
        store,
        models,
        database_url,
        jobs,
        name=name,
        kind="critic",
        source=source,
        identity=config.identity(),
        score=score_judgment,
        concurrency=config.concurrency,
        on_progress=on_progress,
    )
    judgments = [
        Judgment(
            problem_id=job.problem.id,
            subset=subset_of(job.problem),
            label=job.problem.first_error_step,
            predicted=predicted_index(item.answer) if item.status == "succeeded" else None,
        )
        for job, item in zip(jobs, items, strict=True)
        if item.ended and job.problem.first_error_step is not None
    ]
    ended = [item for item in items if item.ended]
    result = CriticEvalResult(
        name=name,
        evaluation_id=evaluation.id,
        source=source,
        status=status,
        judge_model=config.judge_model,
        mode=config.mode,
        samples=config.samples,
        temperature=config.temperature(),
        report=score_processbench(judgments),
        mean_tokens=sum(i.completion_tokens for i in ended) / len(ended) if ended else None,
    )
    await repo.set_evaluation_status(
        store, evaluation.id, status, summary=result.model_dump(mode="json")
    )
    return result, items


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def render_critic_table(result: CriticEvalResult) -> str:
    """ProcessBench's table: per subset, error and correct accuracy and their F1 (in %)."""
    header = ["subset", "n", "erroneous", "error acc", "correct", "correct acc", "F1", "no index"]
    table = [header]
    for s in [*result.report.subsets, result.report.overall]:
        table.append(
            [
                s.subset,
                str(s.samples),
                str(s.erroneous),
                _percent(s.error_accuracy),
                str(s.correct),
                _percent(s.correct_accuracy),
                _percent(s.f1),
                str(s.no_index),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    ]
    how = result.mode
    if result.samples > 1 or result.temperature > 0:
        how += f", majority of {result.samples} at temperature {result.temperature:g}"
    title = (
        f"{result.name}: judge {result.judge_model} ({how}) on {result.source}, "
        f"{result.report.overall.samples} labelled solutions"
    )
    footer = f"average F1 over subsets: {_percent(result.report.average_f1)}"
    return "\n".join([title, *lines, footer])


def write_critic_results(result: CriticEvalResult, items: list[ItemResult], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    payload = {
        "summary": result.model_dump(mode="json"),
        "items": [item.model_dump(mode="json") for item in items],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path
