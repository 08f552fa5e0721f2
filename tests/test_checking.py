"""answers_match: which answers count as the reference, which do not, and why."""

from __future__ import annotations

import time

import pytest

from roles.checking import answers_match

EQUIVALENT = [
    # (predicted, reference, words the reason must contain)
    ("42", "42", "same text"),
    (" 42. ", "42", "same text"),
    ("1,000", "1000", "same text"),
    ("5.0", "5", "same text"),
    ("2.50", "5/2", "equal numbers"),
    ("1/2", "\\frac{1}{2}", "equal numbers"),
    ("\\dfrac{3}{4}", "0.75", "equal numbers"),
    ("1e3", "1000", "equal numbers"),
    ("0.5", "\\frac12", "equivalent"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", "equivalent"),
    ("2^{10}", "1024", "equivalent"),
    ("x^2+2x+1", "(x+1)^2", "equivalent"),
    ("x=3", "3", "equivalent"),
    ("12 cm", "12", "equivalent"),
    ("12\\text{ cm}", "12", "equivalent"),
    ("\\$12", "12", "equivalent"),
    ("90^\\circ", "90", "equivalent"),
    ("50\\%", "0.5", "equivalent"),
    ("(1,2]", "(1, 2]", "same text"),
    ("(-\\infty, 2)", "x<2", "equivalent"),
    ("\\{1,2\\}", "\\{2,1\\}", "equivalent"),
    ("2, 1", "1, 2", "equivalent"),
    ("sin(x)", "\\sin x", "equivalent"),
    ("\\text{(A)}", "A", "equivalent"),
    ("Bob, Alice", "Alice, Bob", "same 2 items"),
    ("Alice and Carol", "Alice, Carol", "same 2 items"),
    ("\\text{Devon}", "Devon", "same text"),
    ("None", "none", "same text"),
]

NOT_EQUIVALENT = [
    ("-3", "3", "different numbers (-3 != 3)"),
    ("0.333", "1/3", "different numbers"),
    ("3.14", "\\pi", "not equivalent"),
    ("(1,2)", "[1,2]", "not equivalent"),
    ("x^2+1", "(x+1)^2", "not equivalent"),
    ("\\sqrt{3}", "\\frac{\\sqrt2}{2}", "not equivalent"),
    ("Eve", "Vee", "different words: got eve; expected vee"),
    ("Alice", "Alice, Bob", "different words"),
    ("Alice", "none", "different words"),
    ("x+", "3", "could not be read as mathematics"),
    ("", "3", "no answer given"),
    (None, "3", "no answer given"),
    ("3", "", "no reference answer"),
]

PATHOLOGICAL = [
    ("10^{10^{10}}", "1", "a tower of exponents"),
    ("9^9^9", "5", "a tower of exponents"),
    ("2**3**4", "5", "a tower of exponents"),
    ("2^{1000000}", "2", "an exponent of 1000000"),
    ("x^{99999}", "x", "an exponent of 99999"),
    ("100000!", "1", "a factorial of 100000"),
    ("1" * 5000, "1", "too long (5000 characters"),
    ("(x+1)" * 200, "x", "too long"),
]


@pytest.mark.parametrize(("predicted", "reference", "reason"), EQUIVALENT)
def test_equivalent_answers_count_as_correct(predicted, reference, reason):
    check = answers_match(predicted, reference)
    assert check.correct, check.reason
    assert reason in check.reason


@pytest.mark.parametrize(("predicted", "reference", "reason"), NOT_EQUIVALENT)
def test_different_answers_count_as_wrong_with_a_reason(predicted, reference, reason):
    check = answers_match(predicted, reference)
    assert not check.correct
    assert reason in check.reason


@pytest.mark.parametrize(("predicted", "reference", "reason"), PATHOLOGICAL)
def test_pathological_answers_get_a_quick_verdict_instead_of_hanging(predicted, reference, reason):
    started = time.monotonic()
    check = answers_match(predicted, reference)
    assert time.monotonic() - started < 2
    assert not check.correct
    assert check.reason.startswith("not compared symbolically")
    assert reason in check.reason


def test_a_big_but_reasonable_power_is_still_compared():
    assert answers_match("2^{100}", "1267650600228229401496703205376").correct
