"""``thinktank eval``'s engine on a scripted model: the table a user reads, stored and resumable."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from agents.backends.scripted import ScriptedBackend
from agents.model import ModelError, ModelRequest
from agents.model_map import ModelRouter
from store import evaluations as repo
from store.runs import Store
from training.evaluation import (
    EvalConfig,
    EvalSummary,
    EvaluationError,
    ItemResult,
    PatternSummary,
    compare_paired,
    evaluate_patterns,
    mcnemar_exact_p,
    paired_difference_interval,
    pattern_options,
    plot_accuracy_vs_tokens,
    render_paired,
    render_table,
    stored_summary,
    wilson_interval,
    write_results,
)

PROBLEMS = [
    {"id": "add", "problem": "What is 2 + 3?", "answer": "5"},
    {"id": "mul", "problem": "What is 6 * 7?", "answer": "42"},
    {"id": "sub", "problem": "What is 10 - 4?", "answer": "6"},
]
RIGHT = {"add": "5", "mul": "42", "sub": "6"}


def solver(request: ModelRequest) -> str:
    """Right everywhere, except that the lone solver and the first sampler get 10 - 4 wrong:
    so one chain of thought scores 2/3 and a vote of three samples 3/3. Every reply is 5
    words (the scripted backend counts words as tokens)."""
    text = request.messages[-1].content
    problem = next(p["id"] for p in PROBLEMS if p["problem"] in text)
    answer = RIGHT[problem]
    if problem == "sub" and request.tags["agent"] in ("Solver", "Sampler 0"):
        answer = "7"
    return f"I get the answer \\boxed{{{answer}}}"


@pytest.fixture
def problem_file(tmp_path: Path) -> str:
    path = tmp_path / "arith.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return str(path)


def config(source: str, options: dict | None = None, **fields) -> EvalConfig:
    return EvalConfig(
        patterns=["single", "self-consistency"],
        source=source,
        options={"self_consistency": {"samples": 3, "early_stop": False}, **(options or {})},
        **fields,
    )


def rows(table: str) -> list[list[str]]:
    """The table's rows as cells (the title line left out), the wall-time column dropped:
    it is the one number a scripted model cannot fix."""
    cells = [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()[1:]]
    return [row[:5] + row[6:] for row in cells]


async def test_two_patterns_on_the_same_problems_give_the_expected_table(
    store: Store, sqlite_url: str, problem_file: str, tmp_path: Path
) -> None:
    backend = ScriptedBackend({"solver": [solver]})
    updates = []
    summary, items = await evaluate_patterns(
        store,
        ModelRouter.single(backend),
        sqlite_url,
        config(problem_file, concurrency=4, name="arith"),
        on_progress=lambda p: updates.append((p.ended, p.total)),
    )

    table = render_table(summary)
    assert table.splitlines()[0] == f"arith: 3 problems from {problem_file}"
    assert rows(table) == [
        ["pattern", "n", "accuracy", "95% CI", "tokens/problem", "acc/1k tokens", "failed"],
        ["single", "3", "66.7%", "20.8%-93.9%", "5.0", "133.333", "0"],
        ["self_consistency", "3", "100.0%", "43.9%-100.0%", "15.0", "66.667", "0"],
    ]
    assert all(p.mean_wall_s is not None and p.mean_wall_s < 5 for p in summary.patterns)
    assert updates[0] == (0, 6) and updates[-1] == (6, 6)
    # the vote was right where the lone solver was wrong once, and never the other way round
    paired = render_paired(summary).splitlines()
    assert paired[0] == "against single, on the problems both finished:"
    assert [re.split(r"\s{2,}", line.strip()) for line in paired[1:]] == [
        [
            "pattern",
            "n",
            "right where single was wrong",
            "wrong where single was right",
            "difference",
            "95% CI",
            "McNemar p",
        ],
        ["self_consistency", "3", "1", "0", "+33.3 pts", "-29.1 to +79.2", "1.000"],
    ]

    # Every item is a stored run of its pattern on its problem, with its own transcript.
    assert len(items) == 6
    wrong = next(i for i in items if i.pattern == "single" and i.problem_id == "sub")
    assert (wrong.correct, wrong.answer, wrong.reason) == (False, "7", "different numbers (7 != 6)")
    for item in items:
        run = await store.get_run(item.run_id)
        assert run.pattern == item.pattern and run.answer == item.answer
        assert run.problem == next(p["problem"] for p in PROBLEMS if p["id"] == item.problem_id)
        assert len(await store.turns(run.id)) == (1 if item.pattern == "single" else 3)
        assert run.completion_tokens == item.completion_tokens
        # every pattern takes a reference answer now; the evaluation never gives it one
        assert run.config.get("reference_answer") is None

    evaluation = await repo.get_evaluation(store, "arith")
    assert evaluation.status == "finished" and evaluation.kind == "patterns"
    assert evaluation.summary["patterns"][1]["accuracy"] == 1.0
    stored = await repo.evaluation_items(store, evaluation.id)
    assert {(i.problem_id, i.pattern, i.run_id) for i in stored} == {
        (i.problem_id, i.pattern, i.run_id) for i in items
    }

    results, plot = write_results(summary, items, tmp_path / "out")
    written = json.loads(results.read_text())
    assert written["summary"]["patterns"][0]["correct"] == 2
    assert {i["run_id"] for i in written["items"]} == {i.run_id for i in items}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_a_rerun_skips_what_is_done_and_finishes_what_is_not(
    store: Store, sqlite_url: str, problem_file: str
) -> None:
    # First attempt: the model fails on one problem, so that run fails and counts as wrong.
    def flaky(request: ModelRequest) -> str:
        if "6 * 7" in request.messages[-1].content:
            raise ModelError("backend unavailable")
        return solver(request)

    first = ScriptedBackend({"solver": [flaky]})
    summary, _ = await evaluate_patterns(
        store, ModelRouter.single(first), sqlite_url, config(problem_file)
    )
    assert [(p.problems, p.correct, p.failed) for p in summary.patterns] == [(3, 1, 1), (3, 2, 1)]
    failed = [r for r in rows(render_table(summary))[1:]]
    assert [row[-1] for row in failed] == ["1", "1"]

    # The same command again: only the two failed runs execute, and the table is complete.
    second = ScriptedBackend({"solver": [solver]})
    summary, _ = await evaluate_patterns(
        store, ModelRouter.single(second), sqlite_url, config(problem_file)
    )
    assert len(second.requests) == 1 + 3
    assert [(p.problems, p.correct, p.failed) for p in summary.patterns] == [(3, 2, 0), (3, 3, 0)]
    assert summary.status == "finished"
    assert len(await store.list_runs(limit=100)) == 6  # the failed runs were resumed, not redone


async def test_an_interrupted_evaluation_resumes_where_it_stopped(
    store: Store, sqlite_url: str, problem_file: str
) -> None:
    one_at_a_time = config(problem_file, concurrency=1)
    backend = ScriptedBackend({"solver": [solver]})
    task: asyncio.Task | None = None

    def stop_after_two(progress) -> None:
        if progress.ended == 2 and task is not None:
            task.cancel()

    task = asyncio.ensure_future(
        evaluate_patterns(
            store,
            ModelRouter.single(backend),
            sqlite_url,
            one_at_a_time,
            on_progress=stop_after_two,
        )
    )
    with pytest.raises(asyncio.CancelledError):
        await task
    evaluation = await repo.get_evaluation(store, one_at_a_time.evaluation_name())
    assert evaluation.status == "interrupted"
    done_before = len(backend.requests)
    assert done_before == 1 + 3  # the first problem, for both patterns

    summary, _ = await evaluate_patterns(
        store, ModelRouter.single(backend), sqlite_url, one_at_a_time
    )
    assert len(backend.requests) - done_before == 2 * (1 + 3)
    assert [(p.problems, p.correct) for p in summary.patterns] == [(3, 2), (3, 3)]


async def test_equal_budget_gives_every_pattern_the_same_total(
    store: Store, sqlite_url: str, problem_file: str
) -> None:
    backend = ScriptedBackend({"solver": [solver]})
    summary, items = await evaluate_patterns(
        store,
        ModelRouter.single(backend),
        sqlite_url,
        config(problem_file, budget_tokens=48),
    )
    # 48 tokens over 3 problems: each run may generate 16, which the lone solver's 5 fit in
    # and which stops the vote short of its third 5-token sample.
    assert summary.run_token_budget == 16
    for item in items:
        run = await store.get_run(item.run_id)
        assert run.config["token_budget"] == 16
        assert run.completion_tokens <= 16
    by_pattern = {p.pattern: p for p in summary.patterns}
    assert by_pattern["single"].total_tokens == 15
    assert by_pattern["self_consistency"].total_tokens <= 48
    assert by_pattern["self_consistency"].mean_tokens == 10.0
    assert (
        render_table(summary)
        .splitlines()[0]
        .endswith("equal budget: 48 generated tokens per pattern (16 per problem)")
    )


async def test_settings_an_evaluation_cannot_run_with_are_refused_with_a_reason(
    store: Store, sqlite_url: str, problem_file: str
) -> None:
    models = ModelRouter.single(ScriptedBackend({"solver": [solver]}))
    await evaluate_patterns(store, models, sqlite_url, config(problem_file, name="mine"))
    with pytest.raises(
        EvaluationError, match=r"'mine' already exists with other settings \(limit\)"
    ):
        await evaluate_patterns(
            store, models, sqlite_url, config(problem_file, name="mine", limit=2)
        )
    with pytest.raises(
        EvaluationError, match="36 over 3 problems is 12 tokens per run; a run needs at least 16"
    ):
        await evaluate_patterns(store, models, sqlite_url, config(problem_file, budget_tokens=36))
    twice = Path(problem_file).with_name("twice.jsonl")
    twice.write_text(Path(problem_file).read_text() + json.dumps(PROBLEMS[0]) + "\n")
    with pytest.raises(EvaluationError, match="problem id 'add' appears twice"):
        await evaluate_patterns(store, models, sqlite_url, config(str(twice)))
    with pytest.raises(EvaluationError, match="single has no option 'samples'"):
        await evaluate_patterns(
            store, models, sqlite_url, config(problem_file, options={"single": {"samples": 2}})
        )
    with pytest.raises(EvaluationError, match="token_budget is set by --budget-tokens"):
        await evaluate_patterns(
            store,
            models,
            sqlite_url,
            config(
                problem_file,
                budget_tokens=300,
                options={"single": {"token_budget": 100}},
            ),
        )


def test_the_plot_is_drawn_for_patterns_at_0_and_100_percent(tmp_path: Path) -> None:
    def at(pattern: str, correct: int, n: int, tokens: float) -> PatternSummary:
        low, high = wilson_interval(correct, n)
        return PatternSummary(
            pattern=pattern,
            problems=n,
            pending=0,
            correct=correct,
            failed=0,
            accuracy=correct / n,
            ci_low=low,
            ci_high=high,
            mean_tokens=tokens,
            mean_prompt_tokens=10.0,
            mean_wall_s=1.0,
            accuracy_per_1k_tokens=None,
            total_tokens=int(tokens * n),
        )

    summary = EvalSummary(
        name="edges",
        evaluation_id="e",
        source="gen:arithmetic",
        status="finished",
        problems=10,
        confidence=0.95,
        budget_tokens=None,
        run_token_budget=None,
        patterns=[at("never", 0, 10, 75.3), at("always", 10, 10, 326.2)],
    )
    path = tmp_path / "edges.png"
    plot_accuracy_vs_tokens(summary, path)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_wilson_interval_matches_known_values() -> None:
    assert wilson_interval(2, 3) == pytest.approx((0.2077, 0.9385), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(50, 100, confidence=0.99) == pytest.approx((0.3753, 0.6247), abs=1e-4)


async def test_what_an_evaluation_holds_so_far_is_read_without_running_anything(
    store: Store, sqlite_url: str, problem_file: str
) -> None:
    settings = config(problem_file, name="so-far")
    with pytest.raises(EvaluationError, match="no evaluation named 'so-far' has run yet"):
        await stored_summary(store, settings)

    # the first attempt stops at the first run it would have to wait for
    def stall(request: ModelRequest) -> str:
        if "6 * 7" in request.messages[-1].content:
            raise ModelError("backend unavailable")
        return solver(request)

    ran, _ = await evaluate_patterns(
        store, ModelRouter.single(ScriptedBackend({"solver": [stall]})), sqlite_url, settings
    )
    runs = len(await store.list_runs(limit=100))
    read, items = await stored_summary(store, settings)
    assert read == ran
    assert len(await store.list_runs(limit=100)) == runs  # nothing ran
    assert [(i.problem_id, i.pattern, i.status) for i in items][:2] == [
        ("add", "single", "succeeded"),
        ("add", "self_consistency", "succeeded"),
    ]
    with pytest.raises(EvaluationError, match="ran with other settings"):
        await stored_summary(store, config(problem_file, name="so-far", seed=3))


def test_the_paired_interval_and_mcnemar_test_match_published_values() -> None:
    # 161 pairs, 59 both right, 6 and 16 discordant: the published Newcombe (method 10)
    # limits are -0.1186 and -0.0046; the exact two-sided McNemar p of 6 against 16 is
    # 2 * 110056 / 2**22
    assert paired_difference_interval(59, 6, 16, 80) == pytest.approx((-0.1186, -0.0046), abs=1e-4)
    assert mcnemar_exact_p(6, 16) == pytest.approx(0.052479, abs=1e-6)
    assert mcnemar_exact_p(16, 6) == mcnemar_exact_p(6, 16)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(0, 8) == pytest.approx(2 / 256)
    # which one is "first" only flips the sign
    low, high = paired_difference_interval(59, 16, 6, 80)
    assert (low, high) == pytest.approx((0.0046, 0.1186), abs=1e-4)
    # identical patterns: a difference of zero, with an interval that holds it
    low, high = paired_difference_interval(5, 0, 0, 5)
    assert low < 0 < high and low == pytest.approx(-high)


def test_the_paired_comparison_leaves_out_problems_one_side_did_not_finish() -> None:
    def item(problem: str, pattern: str, correct: bool | None, status: str) -> ItemResult:
        return ItemResult(
            problem_id=problem,
            pattern=pattern,
            run_id=None,
            status=status,
            correct=correct,
            answer=None,
            reference=None,
            reason=None,
            prompt_tokens=0,
            completion_tokens=0,
            wall_s=None,
        )

    baseline = [
        item("a", "single", False, "succeeded"),
        item("b", "single", True, "succeeded"),
        item("c", "single", None, "pending"),
    ]
    mine = [
        item("a", "discussion", True, "succeeded"),
        item("b", "discussion", False, "failed"),  # a failed run counts as wrong
        item("c", "discussion", True, "succeeded"),
        item("d", "discussion", True, "succeeded"),  # the baseline never had it
    ]
    c = compare_paired("discussion", "single", mine, baseline, 0.95)
    assert (c.problems, c.both_correct, c.only_pattern, c.only_baseline, c.neither) == (
        2,
        0,
        1,
        1,
        0,
    )
    assert c.difference == 0.0 and c.p_value == 1.0
    empty = compare_paired("discussion", "single", mine, [], 0.95)
    assert (empty.problems, empty.difference, empty.ci_low, empty.p_value) == (0, None, None, None)


def test_options_go_to_one_pattern_or_to_every_pattern_that_has_the_field() -> None:
    options = pattern_options(
        ["single", "self_consistency"],
        ["max_tokens=64", "self-consistency.samples=3", "early_stop=false"],
    )
    assert options == {
        "single": {"max_tokens": 64},
        "self_consistency": {"max_tokens": 64, "samples": 3, "early_stop": False},
    }
    with pytest.raises(EvaluationError, match="no evaluated pattern has an option 'agents'"):
        pattern_options(["single"], ["agents=3"])
    with pytest.raises(EvaluationError, match="names discussion, not evaluated here"):
        pattern_options(["single"], ["discussion.agents=3"])
    with pytest.raises(EvaluationError, match=r"is not PATTERN\.FIELD=VALUE"):
        pattern_options(["single"], ["max_tokens"])
