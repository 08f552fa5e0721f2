"""The SPC critic scored the SPC way: single-step probes in the critic's own format.

SPC's Table 1 is not ProcessBench's F1: each labelled solution becomes single-step judgments
(the problem, the steps before one step, and that step), the critic answers in its own format
(``roles.spc.critic_messages``, ``<Answer>Correct|Incorrect</Answer>``) at temperature 0, and
the paper reports the accuracy on erroneous steps, the accuracy on correct steps, and their
mean (with the harmonic mean beside it on PRM800K and DeltaBench).

Probes, from step-labelled solutions (``gen:step-errors``, ProcessBench, PRM800K):

- an *erroneous* probe per erroneous solution: the labelled first wrong step after the steps
  before it; the critic must say ``Incorrect``;
- at most ``correct_per_problem`` *correct* probes per solution, which must be judged
  ``Correct``: on an erroneous solution, the steps just before the first wrong one (the last
  correct steps, nearest the error, as SPC pairs a step with the untouched step at its place);
  on a correct solution, steps drawn by a generator seeded with the problem's id. Steps after
  the first error are never probed: ProcessBench labels only the first error, so whether a
  later step is "correct" given a wrong prefix is not labelled.

An unreadable verdict is asked for once more, as the game's critic is (``reask``); one that
stays unreadable counts as wrong and is counted apart. Each accuracy has its Wilson score
interval; the mean's interval combines the two Wilson intervals by MOVER (Zou & Donner 2008:
``mean ± sqrt(sum of squared distances to each bound) / 2``), since the two accuracies are
rates over different probes and no single binomial interval fits their mean.

Probes are model calls made here, not stored runs: a probe is one critic call (two when it
is asked again), and the evaluation runner's items each name a run of a registered pattern,
which no pattern is. Every probe keeps its transcript (messages, replies, verdict, tokens) in
the result, which callers write next to what they evaluated (:func:`write_step_probe_results`).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.model import ModelRequest, SamplingParams
from agents.model_map import ModelRouter
from execution.batches import bounded
from graphs.common import MAX_CALL_TOKENS, MAX_STEPS
from roles import spc as roles
from roles.messages import ChatMessage
from training.critic_eval import harmonic_mean, labelled_problems, subset_of
from training.evaluation import resolve_source, wilson_interval
from training.problems import Problem

Expected = Literal["correct", "incorrect"]


class StepProbeConfig(BaseModel):
    """Which labelled solutions become probes, and how the critic is asked."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        description="a ProcessBench or PRM800K file (or folder), or gen:step-errors[?...]"
    )
    limit: int | None = Field(None, ge=1, description="first N labelled solutions")
    critic_model: str = Field("critic", description="logical model name of the critic")
    adapter: str | None = Field(None, description="the critic's LoRA adapter (a model version)")
    max_tokens: int = Field(512, ge=8, le=MAX_CALL_TOKENS, description="budget of each verdict")
    correct_per_problem: int = Field(
        1, ge=0, le=MAX_STEPS, description="correct steps probed per solution, at most"
    )
    reask: bool = Field(True, description="ask once more for an unreadable verdict")
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="of every interval")
    concurrency: int = Field(4, ge=1, le=256, description="critic calls at once")

    def identity(self) -> dict[str, Any]:
        """The settings that decide the results; concurrency does not."""
        return self.model_dump(mode="json", exclude={"concurrency"})


class StepProbe(BaseModel):
    """One step to judge: the problem, the steps before it, the step, and the right verdict."""

    problem_id: str
    subset: str
    problem: str
    prefix: list[str]
    step: str
    step_index: int
    expected: Expected


class ProbeResult(BaseModel):
    """A probe as it was judged, with its transcript."""

    probe: StepProbe
    adapter: str | None = Field(description="the adapter that answered, as the backend said")
    messages: list[ChatMessage]
    replies: list[str] = Field(description="the critic's reply, and its reply when asked again")
    verdict: roles.JudgedAs
    reasked: bool
    hit: bool
    prompt_tokens: int
    completion_tokens: int


class Accuracy(BaseModel):
    hits: int
    n: int
    value: float | None
    low: float | None
    high: float | None


class StepScores(BaseModel):
    """What SPC reports for one set of probes."""

    subset: str
    erroneous: Accuracy = Field(description="erroneous steps judged Incorrect")
    correct: Accuracy = Field(description="correct steps judged Correct")
    mean: float | None = Field(description="the mean of the two accuracies (SPC's headline)")
    mean_low: float | None
    mean_high: float | None
    harmonic_mean: float | None
    probes: int
    unparsed: int = Field(description="verdicts still unreadable (counted wrong)")
    reasked: int = Field(description="probes whose first reply had no readable verdict")


class StepProbeResult(BaseModel):
    source: str
    critic_model: str
    adapter: str | None
    identity: dict[str, Any]
    problems: int
    overall: StepScores
    subsets: list[StepScores]
    mean_tokens: float | None = Field(description="generated tokens per probe")
    probes: list[ProbeResult]

    def headline(self) -> dict[str, Any]:
        """The campaign's headline metric: the mean step accuracy with its interval."""
        o = self.overall
        return {
            "name": "step accuracy",
            "value": o.mean,
            "low": o.mean_low,
            "high": o.mean_high,
            "n": o.probes,
        }

    def metrics(self) -> dict[str, Any]:
        """The numbers a campaign round keeps (no transcripts)."""
        o = self.overall
        return {
            "step_accuracy": o.mean,
            "step_accuracy_low": o.mean_low,
            "step_accuracy_high": o.mean_high,
            "step_harmonic_mean": o.harmonic_mean,
            "error_step_accuracy": o.erroneous.model_dump(),
            "correct_step_accuracy": o.correct.model_dump(),
            "step_probes": o.probes,
            "step_unparsed": o.unparsed,
            "step_reasked": o.reasked,
            "step_problems": self.problems,
            "step_subsets": [s.model_dump() for s in self.subsets],
            "step_mean_tokens": self.mean_tokens,
        }


# --- probes ------------------------------------------------------------------------------


def _probe(problem: Problem, index: int, expected: Expected) -> StepProbe:
    steps = problem.solution_steps
    return StepProbe(
        problem_id=problem.id,
        subset=subset_of(problem),
        problem=problem.problem,
        prefix=list(steps[:index]),
        step=steps[index],
        step_index=index,
        expected=expected,
    )


def step_probes(problems: Iterable[Problem], correct_per_problem: int) -> list[StepProbe]:
    """The probes of labelled solutions, by the rule in the module's docstring."""
    probes: list[StepProbe] = []
    for problem in problems:
        steps, first_error = problem.solution_steps, problem.first_error_step
        if not steps or first_error is None or first_error >= len(steps):
            continue
        if first_error >= 0:
            start = max(0, first_error - correct_per_problem)
            probes.extend(_probe(problem, i, "correct") for i in range(start, first_error))
            probes.append(_probe(problem, first_error, "incorrect"))
        else:
            count = min(correct_per_problem, len(steps))
            chosen = random.Random(f"step-probe:{problem.id}").sample(range(len(steps)), count)
            probes.extend(_probe(problem, i, "correct") for i in sorted(chosen))
    return probes


# --- scores ------------------------------------------------------------------------------


def accuracy(hits: int, n: int, confidence: float) -> Accuracy:
    if n == 0:
        return Accuracy(hits=0, n=0, value=None, low=None, high=None)
    low, high = wilson_interval(hits, n, confidence)
    return Accuracy(hits=hits, n=n, value=hits / n, low=low, high=high)


def mean_interval(a: Accuracy, b: Accuracy) -> tuple[float | None, float | None]:
    """MOVER's interval of (a + b) / 2 from the Wilson intervals of a and b."""
    if a.value is None or b.value is None:
        return None, None
    assert a.low is not None and a.high is not None and b.low is not None and b.high is not None
    mean = (a.value + b.value) / 2
    below = math.sqrt((a.value - a.low) ** 2 + (b.value - b.low) ** 2) / 2
    above = math.sqrt((a.high - a.value) ** 2 + (b.high - b.value) ** 2) / 2
    return max(0.0, mean - below), min(1.0, mean + above)


def score_probes(subset: str, results: Sequence[ProbeResult], confidence: float) -> StepScores:
    erroneous = [r for r in results if r.probe.expected == "incorrect"]
    correct = [r for r in results if r.probe.expected == "correct"]
    error_acc = accuracy(sum(r.hit for r in erroneous), len(erroneous), confidence)
    correct_acc = accuracy(sum(r.hit for r in correct), len(correct), confidence)
    low, high = mean_interval(error_acc, correct_acc)
    both = error_acc.value is not None and correct_acc.value is not None
    return StepScores(
        subset=subset,
        erroneous=error_acc,
        correct=correct_acc,
        mean=(error_acc.value + correct_acc.value) / 2 if both else None,  # type: ignore[operator]
        mean_low=low,
        mean_high=high,
        harmonic_mean=harmonic_mean(error_acc.value, correct_acc.value),
        probes=len(results),
        unparsed=sum(r.verdict == "unparsed" for r in results),
        reasked=sum(r.reasked for r in results),
    )


# --- the evaluation ----------------------------------------------------------------------


async def judge_probe(
    models: ModelRouter, config: StepProbeConfig, probe: StepProbe
) -> ProbeResult:
    """The critic's verdict on one probe at temperature 0, asked again once if unreadable."""
    backend = models.get(config.critic_model)
    params = SamplingParams(max_tokens=config.max_tokens, temperature=0.0)
    tags = {"agent": "step-probe", "role": "critic", "problem": probe.problem_id}
    messages = roles.critic_messages(probe.problem, probe.prefix, probe.step)
    asked = messages
    replies: list[str] = []
    prompt_tokens = completion_tokens = 0
    adapter: str | None = None
    verdict = roles.CriticVerdict(verdict=None)
    for attempt in range(2 if config.reask else 1):
        if attempt:
            asked = roles.critic_reask_messages(messages, replies[-1])
        response = await backend.generate(
            ModelRequest(messages=asked, params=params, adapter=config.adapter, tags=tags)
        )
        replies.append(response.completions[0].text)
        prompt_tokens += response.prompt_tokens
        completion_tokens += response.completion_tokens
        adapter = response.adapter
        verdict = roles.parse_critic_verdict(replies[-1])
        if verdict.parse_ok:
            break
    judged = verdict.judged_as
    return ProbeResult(
        probe=probe,
        adapter=adapter,
        messages=messages,
        replies=replies,
        verdict=judged,
        reasked=len(replies) > 1,
        hit=judged == probe.expected,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


async def evaluate_step_probes(
    models: ModelRouter,
    config: StepProbeConfig,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> StepProbeResult:
    """Judge every probe of ``config.source`` with the critic and score them as SPC does.

    ``on_progress(done, total)`` hears of each probe as it ends. A model error ends the
    evaluation (a verdict that was never given is not a wrong verdict)."""
    source = resolve_source(config.source)
    config = config.model_copy(update={"source": source})

    # reading many problems and cutting them into probes takes seconds: not on the event loop
    # an API may share
    def prepare() -> tuple[list[Problem], list[StepProbe]]:
        problems = labelled_problems(source, limit=config.limit)
        return problems, step_probes(problems, config.correct_per_problem)

    problems, probes = await asyncio.to_thread(prepare)
    done = 0

    async def one(probe: StepProbe) -> ProbeResult:
        nonlocal done
        result = await judge_probe(models, config, probe)
        done += 1
        if on_progress is not None:
            on_progress(done, len(probes))
        return result

    results = await bounded(probes, one, concurrency=config.concurrency)
    by_subset: dict[str, list[ProbeResult]] = {}
    for result in results:
        by_subset.setdefault(result.probe.subset, []).append(result)
    return StepProbeResult(
        source=source,
        critic_model=config.critic_model,
        adapter=config.adapter,
        identity=config.identity(),
        problems=len(problems),
        overall=score_probes("all", results, config.confidence),
        subsets=[
            score_probes(name, items, config.confidence)
            for name, items in sorted(by_subset.items())
        ],
        mean_tokens=(sum(r.completion_tokens for r in results) / len(results) if results else None),
        probes=results,
    )


def write_step_probe_results(result: StepProbeResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.model_dump(mode="json"), indent=1) + "\n", encoding="utf-8")
    return path


def read_step_probe_results(path: Path, config: StepProbeConfig) -> StepProbeResult | None:
    """The results stored at ``path`` when they were made with ``config``'s settings (so a
    step that runs again does not judge again), else None."""
    try:
        stored = StepProbeResult.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    resolved = config.model_copy(update={"source": resolve_source(config.source)})
    return stored if stored.identity == resolved.identity() else None
