"""``thinktank eval-critic``: a judge's ProcessBench scores, on fixed judgments and end to end."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from agents.backends.scripted import ScriptedBackend
from agents.model import ModelRequest
from agents.model_map import ModelRouter
from store import evaluations as repo
from store.runs import Store
from tests.conftest import run_cli
from tests.training.test_generators import first_wrong_step
from training.critic_eval import (
    CriticEvalConfig,
    Judgment,
    evaluate_critic,
    render_critic_table,
    score_processbench,
)
from training.evaluation import EvaluationError
from training.problems import load_problems


def test_scores_follow_processbench_on_a_fixed_set_of_judgments() -> None:
    def j(subset: str, label: int, predicted: int | None) -> Judgment:
        return Judgment(
            problem_id=f"{subset}-{label}", subset=subset, label=label, predicted=predicted
        )

    report = score_processbench(
        [
            j("gsm8k", -1, -1),  # right: no error found
            j("gsm8k", 2, 2),  # right: the earliest wrong step
            j("gsm8k", 0, 1),  # wrong: an error, but a later step
            j("gsm8k", -1, 0),  # wrong: a correct solution flagged
            j("math", 1, None),  # wrong: no usable index
            j("math", -1, -1),
        ]
    )
    gsm8k, math = report.subsets
    assert (gsm8k.subset, gsm8k.error_accuracy, gsm8k.correct_accuracy, gsm8k.f1) == (
        "gsm8k",
        0.5,
        0.5,
        0.5,
    )
    assert (math.error_accuracy, math.correct_accuracy, math.f1, math.no_index) == (
        0.0,
        1.0,
        0.0,
        1,
    )
    assert report.average_f1 == 0.25
    overall = report.overall
    assert (overall.erroneous, overall.error_hits, overall.correct, overall.correct_hits) == (
        3,
        1,
        3,
        2,
    )
    assert overall.f1 == pytest.approx(4 / 9)


def test_a_subset_without_erroneous_solutions_has_no_f1() -> None:
    report = score_processbench([Judgment(problem_id="a-0", subset="a", label=-1, predicted=-1)])
    assert report.subsets[0].correct_accuracy == 1.0
    assert report.subsets[0].f1 is None and report.average_f1 is None


RECORDS = [
    {
        "id": "gsm8k-0",
        "problem": "Tom has 3 apples and buys 4 more. How many apples does he have?",
        "steps": ["Tom starts with 3 apples.", "He buys 4, so 3 + 4 = 7.", "The answer is 7."],
        "final_answer_correct": True,
        "label": -1,
    },
    {
        "id": "gsm8k-1",
        "problem": "A box holds 6 eggs. How many eggs are in 5 boxes?",
        "steps": ["Each box holds 6 eggs.", "5 boxes hold 6 + 5 = 11 eggs.", "The answer is 11."],
        "final_answer_correct": False,
        "label": 1,
    },
    {
        "id": "math-0",
        "problem": "What is 2^5?",
        "steps": ["2^5 = 2 * 2 * 2 * 2 = 16.", "So the answer is 16."],
        "final_answer_correct": False,
        "label": 0,
    },
    {
        "id": "math-1",
        "problem": "What is 3^2?",
        "steps": ["3^2 = 3 * 3 = 9.", "So the answer is 9."],
        "final_answer_correct": True,
        "label": -1,
    },
]


def judge(request: ModelRequest) -> str:
    """Finds the egg error, misses the power error, and accepts the right solution."""
    prompt = request.messages[-1].content
    if "6 + 5 = 11" in prompt:
        return "Paragraph 1 adds instead of multiplying. \\boxed{1}"
    return "Every paragraph checks out. \\boxed{-1}"


async def test_a_judge_is_scored_per_subset_and_every_judgment_is_a_stored_run(
    store: Store, sqlite_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "processbench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    backend = ScriptedBackend({"verifier": [judge]})
    result, items = await evaluate_critic(
        store,
        ModelRouter.single(backend),
        sqlite_url,
        CriticEvalConfig(source=str(path), name="pb"),
    )

    assert render_critic_table(result).splitlines() == [
        f"pb: judge verifier (slow) on {path}, 4 labelled solutions",
        "subset  n  erroneous  error acc  correct  correct acc     F1  no index",
        "gsm8k   2          1      100.0        1        100.0  100.0         0",
        "math    2          1        0.0        1        100.0    0.0         0",
        "all     4          2       50.0        2        100.0   66.7         0",
        "average F1 over subsets: 50.0",
    ]
    assert [(i.problem_id, i.correct, i.answer, i.reference) for i in items] == [
        ("gsm8k-0", True, "-1", "-1"),
        ("gsm8k-1", True, "1", "1"),
        ("math-0", False, "-1", "0"),
        ("math-1", True, "-1", "-1"),
    ]
    assert items[2].reason == "found no wrong step; step 0 is the earliest wrong one"
    run = await store.get_run(items[1].run_id)
    assert run.pattern == "process_judge" and run.config["steps"] == RECORDS[1]["steps"]
    [turn] = await store.turns(run.id)
    assert turn.role == "verifier" and turn.model == "scripted"
    assert (
        "<paragraph_1>\n5 boxes hold 6 + 5 = 11 eggs.\n</paragraph_1>"
        in turn.messages[-1]["content"]
    )
    evaluation = await repo.get_evaluation(store, "pb")
    assert evaluation.kind == "critic" and evaluation.status == "finished"

    # Run again: every judgment is done, so the judge is not asked again.
    again, _ = await evaluate_critic(
        store,
        ModelRouter.single(backend),
        sqlite_url,
        CriticEvalConfig(source=str(path), name="pb"),
    )
    assert len(backend.requests) == 4 and again.report == result.report


async def test_a_file_without_step_labels_is_refused(
    store: Store, sqlite_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    with pytest.raises(EvaluationError, match="no step-labelled solution"):
        await evaluate_critic(
            store,
            ModelRouter.single(ScriptedBackend()),
            sqlite_url,
            CriticEvalConfig(source=str(path)),
        )


def perfect_judge(request: ModelRequest) -> str:
    """Recomputes every paragraph's arithmetic and names the first one that is off."""
    prompt = request.messages[-1].content
    paragraphs = re.findall(r"<paragraph_(\d+)>\n(.*?)\n</paragraph_\1>", prompt, re.S)
    assert [int(i) for i, _ in paragraphs] == list(range(len(paragraphs)))
    return f"\\boxed{{{first_wrong_step([text for _, text in paragraphs])}}}"


async def test_generated_step_errors_are_judged_without_a_file(
    store: Store, sqlite_url: str
) -> None:
    source = "gen:step-errors?n=8&seed=3&difficulty=4"
    result, items = await evaluate_critic(
        store,
        ModelRouter.single(ScriptedBackend({"verifier": [perfect_judge]})),
        sqlite_url,
        CriticEvalConfig(source=source, name="gen"),
    )
    labels = [p.first_error_step for p in load_problems(source)]
    assert [i.reference for i in items] == [str(label) for label in labels]
    assert all(i.correct for i in items)
    [subset] = result.report.subsets
    assert (subset.subset, subset.samples, subset.erroneous, subset.f1) == (
        "step-errors-d4",
        8,
        sum(label >= 0 for label in labels),
        1.0,
    )
    assert result.source == source  # a generator, not a path


def test_eval_critic_takes_a_generator_on_the_command_line(tmp_path: Path) -> None:
    scripted = {"backend": "scripted", "replies": {"verifier": ["Step 1 is off. \\boxed{1}"]}}
    env = {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path),
        "THINKTANK_MODELS__DEFAULT": json.dumps(scripted),
        "COLUMNS": "200",
    }
    result = run_cli(env, "eval-critic", "--source", "gen:step-errors?n=4", "--name", "gen")
    assert result.returncode == 0, result.stdout + result.stderr
    labels = [p.first_error_step for p in load_problems("gen:step-errors?n=4")]
    erroneous = sum(label >= 0 for label in labels)
    hits = sum(label == 1 for label in labels)
    lines = result.stdout.splitlines()
    assert lines[0] == "gen: judge verifier (slow) on gen:step-errors?n=4, 4 labelled solutions"
    assert lines[2].split()[:3] == ["step-errors-d2", "4", str(erroneous)]
    assert lines[2].split()[4:6] == [str(4 - erroneous), "0.0"]  # every correct one flagged
    assert lines[2].split()[3] == (f"{100 * hits / erroneous:.1f}" if erroneous else "-")


async def test_sampled_judgments_draw_distinct_seeds_and_the_majority_is_scored(
    store: Store, sqlite_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "processbench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))

    def votes_1_twice(request: ModelRequest) -> str:
        """Judges 0 and 2 blame paragraph 1, judge 1 finds nothing wrong."""
        return "\\boxed{-1}" if request.tags["agent"] == "Judge 1" else "\\boxed{1}"

    result, items = await evaluate_critic(
        store,
        ModelRouter.single(ScriptedBackend({"verifier": [votes_1_twice]})),
        sqlite_url,
        CriticEvalConfig(
            source=str(path),
            name="sampled",
            mode="fast",
            samples=3,
            options={"temperature": 0.6, "seed": 7},
        ),
    )
    assert render_critic_table(result).splitlines()[0] == (
        f"sampled: judge verifier (fast, majority of 3 at temperature 0.6) on {path}, "
        "4 labelled solutions"
    )
    assert [i.answer for i in items] == ["1"] * 4  # two votes of three
    assert (result.samples, result.temperature) == (3, 0.6)
    turns = await store.turns(items[0].run_id)
    assert sorted((t.key, t.params["seed"], t.params["temperature"]) for t in turns) == [
        ("judge/0", 7, 0.6),
        ("judge/1", 8, 0.6),
        ("judge/2", 9, 0.6),
    ]
    # the next solution's judgments draw other seeds: no two judgments share one
    seeds = [t.params["seed"] for i in items for t in await store.turns(i.run_id)]
    assert sorted(seeds) == [7 + 16 * j + i for j in range(4) for i in range(3)]


def test_eval_critic_makes_flexive_training_groups_on_the_command_line(tmp_path: Path) -> None:
    scripted = {"backend": "scripted", "replies": {"verifier": ["\\boxed{1}"]}}
    env = {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path),
        "THINKTANK_MODELS__DEFAULT": json.dumps(scripted),
        "COLUMNS": "200",
    }
    args = ["eval-critic", "--source", "gen:step-errors?n=2", "--training-groups"]
    result = run_cli(env, *args, "--name", "groups", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == (
        "groups: judge verifier (fast, majority of 8 at temperature 0.6) on "
        "gen:step-errors?n=2, 2 labelled solutions"
    )
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (saved["summary"]["mode"], saved["summary"]["samples"]) == ("fast", 8)

    refused = run_cli(env, *args, "--mode", "slow")
    assert refused.returncode != 0 and "fast mode" in refused.stdout
    greedy = run_cli(env, *args, "--temperature", "0")
    assert greedy.returncode != 0 and "temperature above 0" in greedy.stdout
