"""The SPC game's pure rules: which steps are played on, and which rewrites are steps."""

from __future__ import annotations

import pytest

from roles.spc import computes, parse_sneaky_rewrite, rewritable_steps

ORIGINAL = "There are 3 boxes with 4 apples each, so 3 * 4 = 12 apples."


def reply(step: str) -> str:
    return f"### Error Type: 2. Calculation error\n### Plan: change it.\n### Incorrect Step: {step}"


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("So the total is 23 + 6 = 29.", True),
        ("She pays $12 for 3 pens, so one pen costs 12 / 3 = 4 dollars.", True),
        ("x = 7, since 2x = 14.", True),
        ("So 23 + 6 = \\boxed{29}.", True),
        ("The answer is \\boxed{29}.", False),
        ("Final answer: x = -1", False),
        ("**Answer:** 12 / 3 = 4", False),
        ("Answer each part: 12 / 3 = 4 pens.", True),
        ("Let's find out how many apples are left.", False),
        ("There are 3 boxes.", False),
        ("To solve 3x + 8 = 5, we will follow these steps:", False),
        ("To solve 3x + 8 = 5:\n1. Subtract 8 from both sides: 3x = -3.", True),
    ],
)
def test_a_step_computes_when_it_states_an_operation_or_an_equation(
    step: str, expected: bool
) -> None:
    assert computes(step) is expected


def test_the_steps_played_on_are_those_that_compute() -> None:
    steps = [
        "Let's count the apples.",
        ORIGINAL,
        "He eats 2 of them, so 12 - 2 = 10 apples are left.",
        "The answer is \\boxed{10}.",
    ]
    assert rewritable_steps(steps) == [1, 2]
    # a solution without any computation still has a step to play on
    assert rewritable_steps(["Think.", "\\boxed{4}"]) == [0, 1]


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ("<the rewritten step>", "placeholder"),
        ("Here is the rewritten step with the error.", "placeholder"),
        ("Make the product a little larger so the count is off.", "states no number"),
        (ORIGINAL, "unchanged"),
    ],
)
def test_a_rewrite_that_is_not_a_step_is_unusable(step: str, reason: str) -> None:
    rewrite = parse_sneaky_rewrite(reply(step), ORIGINAL)

    assert rewrite.step is None
    assert not rewrite.parse_ok
    assert reason in (rewrite.parse_error or "")


def test_a_rewritten_step_is_kept_as_written() -> None:
    wrong = "There are 3 boxes with 4 apples each, so 3 * 4 = 14 apples."
    rewrite = parse_sneaky_rewrite(reply(wrong), ORIGINAL)

    assert (rewrite.step, rewrite.error_type_id, rewrite.parse_ok) == (wrong, 2, True)
    # a step with no number is a step when the correct one had none either
    plain = parse_sneaky_rewrite(reply("So he keeps none of them."), "So he keeps all of them.")
    assert plain.step == "So he keeps none of them."
