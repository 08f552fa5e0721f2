"""The SPC critic probed step by step in its own format, as SPC's step-level evaluation does.

Labelled solutions from ``gen:step-errors`` become single-step probes; scripted critics (one
that checks each step's arithmetic, one that approves everything, one that never answers in
the format) show what a researcher reads: the accuracy on erroneous and on correct steps,
their mean and harmonic mean with intervals, and every probe's transcript.
"""

from __future__ import annotations

import re
from pathlib import Path

from agents.backends.scripted import ScriptedBackend
from agents.model import ModelRequest
from agents.model_map import ModelRouter
from roles.spc import CRITIC_REASK
from training.critic_eval import labelled_problems
from training.problem import Problem
from training.step_probe_eval import (
    StepProbeConfig,
    evaluate_step_probes,
    read_step_probe_results,
    step_probes,
    write_step_probe_results,
)

SOURCE = "gen:step-errors?n=12&seed=7"
COMPUTATION = re.compile(r"\(?(-?\d+)\)? ([-+*/]) \(?(-?\d+)\)? = (-?\d+)")


def last_step(request: ModelRequest) -> str:
    return request.messages[1].content.split("# Last Step", 1)[1]


def arithmetic_critic(request: ModelRequest) -> str:
    """Checks the one computation of the step it is shown: a perfect critic here."""
    a, op, b, stated = COMPUTATION.search(last_step(request)).groups()  # type: ignore[union-attr]
    x, y = int(a), int(b)
    right = {"+": x + y, "-": x - y, "*": x * y, "/": x // y if y else None}[op]
    verdict = "Correct" if right == int(stated) else "Incorrect"
    return f"The solution computes step by step. I checked the step. <Answer>{verdict}</Answer>"


def config(**fields: object) -> StepProbeConfig:
    return StepProbeConfig.model_validate({"source": SOURCE, "concurrency": 3, **fields})


def test_probes_are_the_first_wrong_step_and_the_correct_steps_before_it() -> None:
    problems = labelled_problems(SOURCE, limit=None)
    probes = step_probes(problems, correct_per_problem=2)
    by_problem: dict[str, list] = {}
    for probe in probes:
        by_problem.setdefault(probe.problem_id, []).append(probe)
    assert any(p.first_error_step == -1 for p in problems)
    assert any(p.first_error_step not in (-1, None) for p in problems)
    for problem in problems:
        mine = by_problem.get(problem.id, [])
        label = problem.first_error_step
        assert label is not None
        if label >= 0:
            wrong = [p for p in mine if p.expected == "incorrect"]
            assert [p.step_index for p in wrong] == [label]
            assert wrong[0].step == problem.solution_steps[label]
            assert wrong[0].prefix == problem.solution_steps[:label]
            # the steps nearest the error, never one after it
            right = [p.step_index for p in mine if p.expected == "correct"]
            assert right == list(range(max(0, label - 2), label))
        else:
            assert len(mine) == min(2, len(problem.solution_steps))
            assert all(p.expected == "correct" for p in mine)
            assert len({p.step_index for p in mine}) == len(mine)
        for probe in mine:
            assert probe.prefix == problem.solution_steps[: probe.step_index]
    # the same source gives the same probes
    assert step_probes(labelled_problems(SOURCE, limit=None), 2) == probes


def test_an_error_at_the_first_step_has_no_correct_step_before_it() -> None:
    problem = Problem(
        id="p",
        problem="2 + 2?",
        source="test",
        solution_steps=["2 + 2 = 5.", "So 5."],
        first_error_step=0,
    )
    probes = step_probes([problem], correct_per_problem=3)
    assert [(p.step_index, p.expected, p.prefix) for p in probes] == [(0, "incorrect", [])]


async def test_a_critic_that_checks_every_step_scores_full_marks_and_keeps_transcripts(
    tmp_path: Path,
) -> None:
    model = ScriptedBackend({"critic": [arithmetic_critic]})
    seen: list[tuple[int, int]] = []
    result = await evaluate_step_probes(
        ModelRouter.single(model),
        config(adapter="critic-r1"),
        on_progress=lambda done, total: seen.append((done, total)),
    )

    overall = result.overall
    assert overall.erroneous.n > 0 and overall.correct.n > 0
    assert overall.probes == overall.erroneous.n + overall.correct.n == len(result.probes)
    assert (overall.erroneous.value, overall.correct.value, overall.mean) == (1.0, 1.0, 1.0)
    assert overall.harmonic_mean == 1.0
    assert overall.erroneous.high == 1.0 and overall.erroneous.low < 1.0  # type: ignore[operator]
    assert overall.mean_high == 1.0 and overall.mean_low < 1.0  # type: ignore[operator]
    assert (overall.unparsed, overall.reasked) == (0, 0)
    assert result.headline() == {
        "name": "step accuracy",
        "value": 1.0,
        "low": overall.mean_low,
        "high": overall.mean_high,
        "n": overall.probes,
    }
    assert seen[-1] == (overall.probes, overall.probes)
    # every call was the critic's own prompt, greedy, with the critic's adapter
    calls = model.calls("critic")
    assert len(calls) == overall.probes
    assert all(c.params.temperature == 0.0 and c.adapter == "critic-r1" for c in calls)
    assert all("# Partial Solution" in c.messages[1].content for c in calls)
    probe = result.probes[0]
    assert probe.adapter == "critic-r1" and probe.replies[0].endswith("</Answer>")
    assert probe.messages[1].content.endswith(probe.probe.step)

    path = write_step_probe_results(result, tmp_path / "probes.json")
    assert read_step_probe_results(path, config(adapter="critic-r1")) == result
    assert read_step_probe_results(path, config(adapter="critic-r2")) is None


async def test_a_critic_that_approves_everything_catches_no_error() -> None:
    model = ScriptedBackend({"critic": ["Looks fine. <Answer>Correct</Answer>"]})
    result = await evaluate_step_probes(ModelRouter.single(model), config())
    overall = result.overall
    assert (overall.erroneous.value, overall.correct.value) == (0.0, 1.0)
    assert overall.mean == 0.5
    assert overall.harmonic_mean == 0.0
    assert overall.mean_low < 0.5 < overall.mean_high  # type: ignore[operator]
    assert overall.erroneous.low == 0.0


async def test_an_unreadable_verdict_is_asked_again_once_then_counted_wrong() -> None:
    model = ScriptedBackend({"critic": ["I am not sure about this one."]})
    result = await evaluate_step_probes(ModelRouter.single(model), config(limit=4))
    overall = result.overall
    assert overall.unparsed == overall.reasked == overall.probes > 0
    assert overall.erroneous.hits == overall.correct.hits == 0
    assert len(model.calls("critic")) == 2 * overall.probes
    assert all(p.verdict == "unparsed" and len(p.replies) == 2 for p in result.probes)
    assert model.calls("critic")[-1].messages[-1].content == CRITIC_REASK

    once = ScriptedBackend({"critic": ["I am not sure about this one."]})
    result = await evaluate_step_probes(ModelRouter.single(once), config(limit=4, reask=False))
    assert len(once.calls("critic")) == result.overall.probes == result.overall.unparsed
