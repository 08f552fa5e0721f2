"""Parsers of model output survive anything and read what a model meant."""

from __future__ import annotations

from roles.answers import extract_answer, majority_answer, normalize_answer, shared_text
from roles.discussion import (
    critic_messages,
    independent_critic_messages,
    parse_ceo_decision,
    parse_critique,
    parse_evaluation,
    parse_own_solution,
    parse_roles,
)


def test_boxed_answer_with_nested_braces() -> None:
    assert extract_answer("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert extract_answer("first \\boxed{1} then \\boxed{2}") == "2"


def test_answer_fallbacks_when_nothing_is_boxed() -> None:
    assert extract_answer("The answer is 17.") == "17"
    assert extract_answer("Final answer: 3/4") == "3/4"
    assert extract_answer("no idea") is None


def test_think_text_is_private() -> None:
    assert shared_text("<think>x \\boxed{1}</think>so \\boxed{2}") == "so \\boxed{2}"
    assert extract_answer("<think>\\boxed{1}</think>nothing boxed") is None


def test_votes_compare_normalized_answers() -> None:
    assert normalize_answer("$1,000$") == normalize_answer("1000")
    assert normalize_answer("2.50") == "2.5"
    assert majority_answer(["\\text{5}", "5", "6", None]) == ("\\text{5}", 2)
    assert majority_answer([None]) == (None, 0)


def test_ceo_decision_is_clamped_and_snapped() -> None:
    text = (
        "### Decision: <Continue>\n### Recruit Number: 9\n### Direction: focus on units\n"
        "### Maximum Tokens: 3000"
    )
    decision = parse_ceo_decision(text, max_experts=4, token_menu=[2048, 4096, 8192])
    assert decision.recruit_number == 4
    assert decision.max_tokens == 2048
    assert decision.direction == "focus on units"
    assert decision.parse_ok


def test_ceo_stop_and_a_tiny_team_are_read() -> None:
    text = (
        "### Decision: <Stop>\n### Recruit Number: 1\n### Direction: done\n### Maximum Tokens: 64"
    )
    decision = parse_ceo_decision(text, max_experts=3, token_menu=[64, 128])
    assert decision.decision == "stop"
    assert decision.recruit_number == 2


def test_ceo_reply_missing_fields_is_a_partial_parse() -> None:
    decision = parse_ceo_decision("### Decision: Stop", max_experts=3, token_menu=[64, 128])
    assert decision.decision == "stop"
    assert not decision.parse_ok
    assert decision.max_tokens == 128


def test_roles_pad_missing_experts() -> None:
    assignment = parse_roles("1. A chemist.\nsome chatter", 3)
    assert assignment.roles == ["A chemist.", "Scientist.", "Scientist."]
    assert not assignment.parse_ok


def test_critique_markers() -> None:
    assert parse_critique("Looks right. [Agree]").agree
    assert not parse_critique("[Agree] at first, but no. [Disagree]").agree
    missing = parse_critique("hmm")
    assert not missing.agree and not missing.parse_ok


def test_evaluation_parse() -> None:
    good = parse_evaluation("### Correctness: 1\n### Advice: fine\n### Recruiting Suggestion: x")
    assert good.correct and good.advice.startswith("fine")
    bad = parse_evaluation("I cannot tell")
    assert not bad.correct and not bad.parse_ok


def test_an_evaluator_copying_the_instruction_is_not_read_as_correct() -> None:
    echoed = parse_evaluation("### Correctness: 1 if the solution is correct, 0 otherwise")
    assert not echoed.correct and not echoed.parse_ok
    assert parse_evaluation("### Correctness: <1>").correct
    assert not parse_evaluation("### Correctness: 10").parse_ok


def test_parallel_critics_share_everything_but_their_role_at_the_end() -> None:
    """An engine's prefix cache serves the problem and the history once for all critics."""
    history = ["Solver: 2 + 3 = 5, so \\boxed{5}", "Critic 1: I agree. [Agree]"]
    first = critic_messages("What is 2+3?", "a number theorist", history)
    second = critic_messages("What is 2+3?", "a careful accountant", history)
    assert first[0] == second[0]  # the system message
    a, b = first[1].content, second[1].content
    shared = a[: next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)]
    assert history[0] in shared and history[1] in shared
    assert a.index("a number theorist") > a.index(history[1])  # the role comes after them


def test_an_independent_critic_is_read_by_its_own_boxed_answer() -> None:
    reply = parse_own_solution("3 + 4 = 7, and 7 * 2 = \\boxed{14}.")
    assert reply.answer == "14" and reply.parse_ok
    lost = parse_own_solution("Let me think about the cows first.")
    assert lost.answer is None and not lost.parse_ok
    system, user = independent_critic_messages("What is 2+3?", "a number theorist")
    assert "What is 2+3?" in system.content and "a number theorist" in user.content
    assert "history" not in system.content + user.content
