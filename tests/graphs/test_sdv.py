"""Solve-Detect-Verify, driven by a scripted backend: what a user sees stored and announced.

The scripted solver types its reply word by word over its latency, so the detector (the
same backend, role ``detector``) answers while the solver is still writing, as a real
streaming solver would be probed. One test runs the whole pattern on the real local model.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from agents.backends.scripted import Logprobs, ScriptedBackend, Slow
from agents.model import ModelBackend, ModelError
from agents.model_map import ModelRouter
from execution.runner import execute_run
from roles import sdv as roles
from tests.conftest import RunHarness, run_cli

PROBLEM = "What is 6 times 7?"
SOLUTION = "6 times 7 is 42.\n\nSo the answer is \\boxed{42}."
CHECKED = (
    SOLUTION + " Wait, let me add 6 seven times to be certain: 6, 12, 18, 24, 30, 36, 42. "
    "Hmm, that is 42 again, so the product really is 42 and nothing else. \\boxed{42}"
)
CONCLUSION = "The final answer is \\boxed{42}."
YES = Logprobs("Yes", {"Yes": -0.05, "No": -3.0})
NO = Logprobs("No", {"Yes": -2.5, "No": -0.1})
CORRECT = "\\boxed{-1}"


def backend(**replies: list[Any]) -> ScriptedBackend:
    script: dict[str, list[Any]] = {
        "solver": [SOLUTION],
        "detector": [NO],
        "verifier": [CORRECT],
    }
    script.update(replies)
    return ScriptedBackend(script)


async def turns(harness: RunHarness, run_id: str, node: str | None = None) -> list[Any]:
    stored = await harness.store.turns(run_id)
    return [turn for turn in stored if node is None or turn.node == node]


def final(harness: RunHarness) -> dict[str, Any]:
    [decision] = harness.decisions("sdv")
    return decision


async def assert_tokens_add_up(harness: RunHarness, run_id: str) -> dict[str, int]:
    """The phases split the run's tokens exactly: each turn counts in one phase."""
    tokens = final(harness)["tokens"]
    run = await harness.store.get_run(run_id)
    phases = ["solve", "detect", "fast_verify", "slow_verify", "refine"]
    assert sum(tokens[phase] for phase in phases) == run.completion_tokens
    return tokens


async def test_the_detector_stops_the_solver_at_a_cue_and_it_concludes(
    harness: RunHarness,
) -> None:
    model = backend(solver=[Slow(CHECKED, 2.0), CONCLUSION], detector=[YES])
    run_id, outcome = await harness.run(model, "sdv", PROBLEM)

    assert outcome["status"] == "succeeded"
    assert (outcome["answer"], outcome["stop_reason"]) == ("42", "verified")
    [solve] = await turns(harness, run_id, "solve")
    assert solve.finish_reason == "cancelled"
    assert solve.completion_tokens < len(CHECKED.split())
    assert solve.completion == CHECKED[: len(solve.completion)]  # what was written, no more
    [conclude] = await turns(harness, run_id, "conclude")
    assert conclude.completion == CONCLUSION
    # The solver concludes from its text before the cue.
    assert conclude.messages[-2]["content"] == SOLUTION

    [probe] = await turns(harness, run_id, "detect")
    assert probe.params["max_tokens"] == 1 and probe.params["top_logprobs"] == 10
    assert probe.messages[-2]["content"] == CHECKED[: CHECKED.index("Wait") + len("Wait")]
    [event] = harness.decisions("detector")
    assert (event["cue"], event["position"], event["stopped"]) == (
        "wait",
        CHECKED.index("Wait"),
        True,
    )
    assert event["source"] == "logprobs"
    assert event["p_yes"] == pytest.approx(1 / (1 + math.exp(-2.95)))

    tokens = await assert_tokens_add_up(harness, run_id)
    assert tokens["solve"] == solve.completion_tokens + conclude.completion_tokens
    assert tokens["detect"] == 1
    assert tokens["saved_by_early_stop"] == 512 - tokens["solve"]
    state = outcome["state"]["accounting"]
    assert state["tokens"] == tokens and state["early_stops"] == 1


async def test_a_detector_that_says_no_lets_the_solver_finish(harness: RunHarness) -> None:
    # A plain reply carries no log-probabilities: the detector's word decides.
    model = backend(solver=[Slow(CHECKED, 2.0)], detector=["No"])
    run_id, outcome = await harness.run(model, "sdv", PROBLEM)

    assert (outcome["answer"], outcome["stop_reason"]) == ("42", "verified")
    [solve] = await turns(harness, run_id, "solve")
    assert solve.finish_reason == "stop" and solve.completion == CHECKED
    assert await turns(harness, run_id, "conclude") == []
    events = harness.decisions("detector")
    assert [e["cue"] for e in events] == ["wait", "hmm"]
    assert all(not e["stopped"] and e["source"] == "text" and e["p_yes"] is None for e in events)
    tokens = await assert_tokens_add_up(harness, run_id)
    assert (tokens["detect"], tokens["saved_by_early_stop"]) == (2, 0)


async def test_fast_checks_that_agree_decide_without_slow_checks(harness: RunHarness) -> None:
    model = backend(
        verifier=["\\boxed{-1}", "-1", "\\boxed{-1}", "The solution is fine. \\boxed{-1}"]
    )
    run_id, outcome = await harness.run(model, "sdv", PROBLEM, fast_checks=4)

    assert outcome["stop_reason"] == "verified"
    fast = await turns(harness, run_id, "verify_fast")
    assert len(fast) == 4 and await turns(harness, run_id, "verify_slow") == []
    assert sorted(turn.parsed["first_wrong"] for turn in fast) == [-1, -1, -1, -1]
    assert fast[0].params["max_tokens"] == 32
    assert "Answer at once" in fast[0].messages[0]["content"]
    assert (
        "<paragraph_1>\nSo the answer is \\boxed{42}.\n</paragraph_1>"
        in (fast[0].messages[0]["content"])
    )
    [verdict] = harness.decisions("verifier")
    assert (verdict["mode"], verdict["agreement"], verdict["first_wrong"]) == ("fast", 1.0, -1)
    tokens = await assert_tokens_add_up(harness, run_id)
    assert tokens["fast_verify"] == 1 + 1 + 1 + 5 and tokens["slow_verify"] == 0


async def test_fast_checks_that_disagree_escalate_to_ceil_k_over_4_slow_checks(
    harness: RunHarness,
) -> None:
    fast = ["\\boxed{1}", "\\boxed{-1}", "\\boxed{1}", "\\boxed{0}", "I cannot tell."]
    slow = "Paragraph 1 boxes 42, but let me recheck: it is wrong here. \\boxed{1}"
    model = backend(verifier=[*fast, slow])
    run_id, outcome = await harness.run(
        model, "sdv", PROBLEM, fast_checks=5, agreement_threshold=0.8, refine_rounds=0
    )

    assert (outcome["status"], outcome["stop_reason"]) == ("succeeded", "found_wrong")
    fast_turns = await turns(harness, run_id, "verify_fast")
    slow_turns = await turns(harness, run_id, "verify_slow")
    assert (len(fast_turns), len(slow_turns)) == (5, 2)  # ceil(5 / 4) slow checks
    unreadable = [turn for turn in fast_turns if not turn.parse_ok]
    assert len(unreadable) == 1 and unreadable[0].parsed["first_wrong"] is None
    assert all(turn.parsed["first_wrong"] == 1 for turn in slow_turns)
    assert slow_turns[0].params["max_tokens"] == 512
    assert "paragraph by paragraph before" in slow_turns[0].messages[0]["content"]
    [verdict] = harness.decisions("verifier")
    assert verdict["mode"] == "slow" and verdict["first_wrong"] == 1
    assert verdict["fast_agreement"] == 0.5  # two of four usable checks say 1
    assert sorted(verdict["slow_checks"]) == [1, 1]
    tokens = await assert_tokens_add_up(harness, run_id)
    assert tokens["slow_verify"] == 2 * len(slow.split())


async def test_a_wrong_solution_is_refined_with_the_verifiers_feedback(
    harness: RunHarness,
) -> None:
    wrong = "6 times 7 is 48.\n\nSo the answer is \\boxed{48}."
    candidates = [
        "I made an error: 6 times 7 is 42. \\boxed{42}",
        "Recomputing, 6 times 7 is 41. \\boxed{41}",
        "6 times 7 is 42. \\boxed{42}",
    ]
    model = backend(
        solver=[wrong, *(Slow(text, 0.3) for text in candidates)], verifier=["\\boxed{0}"]
    )
    run_id, outcome = await harness.run(model, "sdv", PROBLEM, refine_candidates=3)

    assert (outcome["answer"], outcome["stop_reason"]) == ("42", "refined")
    refinements = await turns(harness, run_id, "refine")
    assert len(refinements) == 3
    prompt = refinements[0].messages
    assert prompt[-2] == {"role": "assistant", "content": wrong}
    assert "The earliest error is in paragraph 0:\n\n6 times 7 is 48." in prompt[-1]["content"]
    [vote] = harness.decisions("refine")
    assert sorted(vote["answers"]) == ["41", "42", "42"]
    assert (vote["answer"], vote["votes"]) == ("42", 2)
    assert model.max_in_flight == 3  # the candidates are written at once
    # As released, the refined solution is not verified again.
    assert len(await turns(harness, run_id, "verify_fast")) == 4
    tokens = await assert_tokens_add_up(harness, run_id)
    assert tokens["refine"] == sum(turn.completion_tokens for turn in refinements)
    assert outcome["state"]["solution"] in candidates


async def test_more_refinement_rounds_verify_between_them(harness: RunHarness) -> None:
    wrong = "6 times 7 is 48. \\boxed{48}"
    model = backend(
        solver=[wrong, "6 times 7 is 49. \\boxed{49}", "6 times 7 is 42. \\boxed{42}"],
        verifier=["\\boxed{0}", "\\boxed{0}", "\\boxed{-1}"],
    )
    run_id, outcome = await harness.run(
        model, "sdv", PROBLEM, refine_rounds=3, refine_candidates=1, fast_checks=1
    )

    assert (outcome["answer"], outcome["stop_reason"]) == ("42", "verified")
    assert len(await turns(harness, run_id, "refine")) == 2
    assert [v["first_wrong"] for v in harness.decisions("verifier")] == [0, 0, -1]


async def test_the_token_budget_cuts_a_long_run_mid_refinement(harness: RunHarness) -> None:
    wrong = "6 times 7 is 48. \\boxed{48}"
    rambling = " ".join(["and"] * 300) + " \\boxed{42}"
    model = backend(solver=[wrong, rambling], verifier=["\\boxed{0}"])
    run_id, outcome = await harness.run(
        model, "sdv", PROBLEM, token_budget=200, solve_max_tokens=120, refine_candidates=4
    )

    assert (outcome["status"], outcome["stop_reason"]) == ("succeeded", "token_budget")
    run = await harness.store.get_run(run_id)
    assert run.completion_tokens == 200  # spent to the last token, never beyond
    refinements = await turns(harness, run_id, "refine")
    assert refinements and all(turn.finish_reason == "length" for turn in refinements)
    assert len(refinements) < 4  # the budget ran out before every candidate could start
    await assert_tokens_add_up(harness, run_id)
    assert final(harness)["stop_reason"] == "token_budget"


async def test_a_resumed_run_replays_the_stop_and_only_remakes_the_failed_call(
    harness: RunHarness,
) -> None:
    """The model fails while the stopped solver concludes; on resume the stored stream and
    probe are replayed (a detector that would now say No is not asked) and only the
    conclusion is asked again."""
    failing = backend(
        solver=[Slow(CHECKED, 2.0), ModelError("the model server went away")], detector=[YES]
    )
    run_id, first = await harness.run(failing, "sdv", PROBLEM)
    assert first["status"] == "failed" and "went away" in first["error"]

    healthy = backend(solver=[CONCLUSION], detector=[NO])
    outcome = await execute_run(
        run_id,
        store=harness.store,
        models=ModelRouter.single(healthy),
        database_url=harness.database_url,
    )

    assert (outcome["status"], outcome["answer"], outcome["stop_reason"]) == (
        "succeeded",
        "42",
        "verified",
    )
    assert len(healthy.calls("solver")) == 1 and healthy.calls("detector") == []
    assert healthy.calls("solver")[0].messages[-2].content == SOLUTION
    accounting = outcome["state"]["accounting"]
    assert accounting["early_stops"] == 1 and accounting["probes"] == 1
    stream = accounting["streams"][0]
    assert (stream["cue"], stream["stopped"]) == ("wait", True)
    run = await harness.store.get_run(run_id)
    phases = ["solve", "detect", "fast_verify", "slow_verify", "refine"]
    assert sum(accounting["tokens"][p] for p in phases) == run.completion_tokens


async def test_no_detection_and_no_cues_make_plain_solver_calls(harness: RunHarness) -> None:
    model = backend(solver=[Slow(CHECKED, 0.3)])
    run_id, outcome = await harness.run(model, "sdv", PROBLEM, cues=[])
    assert outcome["stop_reason"] == "verified"
    assert await turns(harness, run_id, "detect") == []
    [solve] = await turns(harness, run_id, "solve")
    assert solve.completion == CHECKED


async def test_the_reference_answer_marks_right_and_wrong_answers(harness: RunHarness) -> None:
    model = backend(solver=[Slow(CHECKED, 2.0), "\\boxed{41}"], detector=[YES])
    _, outcome = await harness.run(model, "sdv", PROBLEM, reference_answer="42")
    accounting = outcome["state"]["accounting"]
    assert outcome["answer"] == "41" and accounting["correct"] is False
    [stream] = accounting["streams"]
    assert stream["stopped"] and stream["answer"] == "41" and stream["correct"] is False


def test_cues_are_found_as_whole_words_as_the_text_grows() -> None:
    pattern = roles.cue_pattern(roles.DEFAULT_CUES)
    text = "We await the result. Let me double-check it. Waiting is over. Alternatively"
    assert [cue.cue for cue in roles.find_cues(text, pattern)] == [
        "let me double-check",
        "alternatively",
    ]
    assert roles.split_paragraphs("A is 1. Wait, B is 2.\n\nC is 3. Hmm") == [
        "A is 1.",
        "Wait, B is 2.",
        "C is 3.",
    ]


def test_sdv_from_the_command_line(tmp_path: Path) -> None:
    replies = {"solver": ["6*7 = 42.\n\n\\boxed{42}"], "verifier": ["\\boxed{-1}"]}
    env = {
        **os.environ,
        "THINKTANK_HOME": str(tmp_path),
        "THINKTANK_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "THINKTANK_MODELS__DEFAULT": json.dumps({"backend": "scripted", "replies": replies}),
    }
    done = run_cli(env, "solve", PROBLEM, "--pattern", "sdv", "--fast-checks", "2", "-q")
    assert done.returncode == 0, done.stderr
    assert "42" in done.stdout

    bad = run_cli(env, "solve", PROBLEM, "--pattern", "sdv", "--agreement-threshold", "2")
    assert bad.returncode == 2
    assert "--agreement-threshold" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


@pytest.mark.local_model
async def test_sdv_end_to_end_on_the_real_local_model(
    harness: RunHarness, smollm2: ModelBackend
) -> None:
    """Every phase on SmolLM2: the cue list is widened to a word the model surely writes, so
    the detector is asked (mid-stream, answered between the solver's decoding steps)."""
    run_id, outcome = await harness.run(
        smollm2,
        "sdv",
        "What is 2 + 3?",
        token_budget=400,
        temperature=0.0,
        solve_max_tokens=48,
        conclude_max_tokens=16,
        cues=["is", "the"],
        max_detects=2,
        fast_checks=2,
        fast_max_tokens=8,
        slow_max_tokens=32,
        refine_candidates=2,
    )

    assert outcome["status"] == "succeeded", outcome["error"]
    assert outcome["stop_reason"] in {"verified", "refined", "found_wrong", "token_budget"}
    nodes = {turn.node for turn in await turns(harness, run_id)}
    assert {"solve", "detect", "verify_fast"} <= nodes
    events = harness.decisions("detector")
    assert events and all(event["cue"] in {"is", "the"} for event in events)
    # SmolLM2 through the local backend returns log-probabilities for the probe
    assert any(event["source"] == "logprobs" for event in events)
    assert len(harness.decisions("verifier")) >= 1 or outcome["stop_reason"] == "token_budget"
    tokens = await assert_tokens_add_up(harness, run_id)
    run = await harness.store.get_run(run_id)
    assert run.completion_tokens <= 400 and tokens["detect"] == len(events)
