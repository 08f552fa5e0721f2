"""Generated problems: every stated answer agrees with an independent computation."""

from __future__ import annotations

import operator
import re
from fractions import Fraction
from itertools import combinations, permutations, product
from math import lcm

import pytest
import sympy
from sympy.parsing.sympy_parser import (
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

from training.critic_eval import subset_of
from training.problems import ProblemSourceError, load_problems

DIFFICULTIES = range(1, 6)
PER_LEVEL = 12


def _problems(kind: str, difficulty: int):
    problems = load_problems(f"gen:{kind}?difficulty={difficulty}", limit=PER_LEVEL, seed=7)
    assert len(problems) == PER_LEVEL
    return problems


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_arithmetic_answers_equal_sympys_exact_value(difficulty):
    for p in _problems("arithmetic", difficulty):
        expression = re.search(r"value of (.+?)\.(?: If|$)", p.problem).group(1)
        value = sympy.sympify(expression)
        assert sympy.Rational(Fraction(p.answer)) == value, p


def _sympy_equation(text: str):
    transformations = (*standard_transformations, implicit_multiplication_application)
    left, right = text.split("=")
    return sympy.Eq(
        parse_expr(left, transformations=transformations),
        parse_expr(right, transformations=transformations),
    )


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_linear_answers_solve_the_equations_as_written(difficulty):
    x, y = sympy.symbols("x y")
    for p in _problems("linear", difficulty):
        if difficulty < 5:
            equations = [re.fullmatch(r"Solve for x: (.+)\.", p.problem).group(1)]
        else:
            system = r"Solve the system of equations (.+) and (.+)\. What is x\?"
            equations = list(re.fullmatch(system, p.problem).groups())
        solutions = sympy.solve([_sympy_equation(e) for e in equations], [x, y], dict=True)
        assert len(solutions) == 1, p
        assert solutions[0][x] == sympy.Rational(Fraction(p.answer)), p


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_modular_answers_match_brute_force(difficulty):
    for p in _problems("modular", difficulty):
        numbers = [int(n) for n in re.findall(r"\d+", p.problem)]
        answer = int(p.answer)
        if difficulty == 1:
            n, m = numbers
            assert answer == n - m * (n // m)
        elif difficulty == 2:
            a, b, c, m = numbers
            assert answer == (a * b + c) - m * ((a * b + c) // m)
        elif difficulty in (3, 4):
            a, k, m = numbers
            # repeated squaring by hand, not Python's three-argument pow
            result, base = 1, a % m
            while k:
                if k & 1:
                    result = result * base % m
                base, k = base * base % m, k >> 1
            assert answer == result, p
        else:
            _, p_, a, b, m = numbers
            assert p_ == m
            assert [x for x in range(m) if (a * x - b) % m == 0] == [answer], p


def _inclusion_exclusion(n: int, divisors: list[int]) -> int:
    """How many of 1..n some divisor divides."""
    total = 0
    for size in range(1, len(divisors) + 1):
        for subset in combinations(divisors, size):
            total += (-1) ** (size + 1) * (n // lcm(*subset))
    return total


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_counting_answers_match_enumeration_or_inclusion_exclusion(difficulty):
    for p in _problems("counting", difficulty):
        numbers = [int(n) for n in re.findall(r"\d+", p.problem)]
        answer = int(p.answer)
        if difficulty == 1:
            k, n = numbers
            assert answer == sum(1 for _ in combinations(range(n), k))
        elif difficulty == 2:
            n, k = numbers
            assert answer == sum(1 for _ in permutations(range(n), k))
        elif difficulty == 3:
            _, n, a, b = numbers
            assert answer == _inclusion_exclusion(n, [a, b])
        elif difficulty == 4:
            word = re.search(r"word ([A-Z]+)", p.problem).group(1)
            assert answer == len(set(permutations(word)))
        else:
            _, n, *divisors = numbers
            assert answer == n - _inclusion_exclusion(n, divisors)


_CLAIMS = [
    (r"(\w+) is a knight\.", lambda w, a: w[a[0]]),
    (r"(\w+) is a knave\.", lambda w, a: not w[a[0]]),
    (r"(\w+) and (\w+) are the same kind\.", lambda w, a: w[a[0]] == w[a[1]]),
    (r"(\w+) and (\w+) are both knights\.", lambda w, a: w[a[0]] and w[a[1]]),
    (r"At least one of (\w+) and (\w+) is a knave\.", lambda w, a: not (w[a[0]] and w[a[1]])),
    (
        r"Exactly (\d+) of us (?:are knights|is a knight)\.",
        lambda w, a: sum(w.values()) == int(a[0]),
    ),
]


def _claim_holds(claim: str, world: dict[str, bool]) -> bool:
    for pattern, holds in _CLAIMS:
        match = re.fullmatch(pattern, claim)
        if match:
            return holds(world, match.groups())
    raise AssertionError(f"unreadable claim {claim!r}")


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_logic_puzzles_have_exactly_the_stated_solution(difficulty):
    for p in _problems("logic", difficulty):
        said = re.findall(r'^(\w+) says: "(.+)"$', p.problem, re.M)
        people = [speaker for speaker, _ in said]
        solutions = []
        for kinds in product((True, False), repeat=len(people)):
            world = dict(zip(people, kinds, strict=True))
            if all(_claim_holds(claim, world) == world[who] for who, claim in said):
                solutions.append(", ".join(name for name in people if world[name]) or "none")
        assert solutions == [p.answer], p.problem


def test_the_same_seed_gives_the_same_problems_and_a_limit_gives_a_prefix():
    first = load_problems("gen:mixed?difficulty=3&n=20", seed=1)
    again = load_problems("gen:mixed?difficulty=3&n=20", seed=1)
    assert first == again
    assert load_problems("gen:mixed?difficulty=3", limit=5, seed=1) == first[:5]
    other = load_problems("gen:mixed?difficulty=3&n=20", seed=2)
    assert [p.problem for p in other] != [p.problem for p in first]
    assert load_problems("gen:mixed?difficulty=3&n=20&seed=2", seed=1) == other
    assert {p.source for p in first} == {
        "gen:arithmetic",
        "gen:linear",
        "gen:modular",
        "gen:counting",
        "gen:logic",
    }
    assert len({p.id for p in first}) == 20


def test_difficulty_changes_the_problems():
    easy = load_problems("gen:arithmetic?difficulty=1", limit=10)
    hard = load_problems("gen:arithmetic?difficulty=5", limit=10)
    assert max(p.problem.count(" ") for p in easy) < min(p.problem.count(" ") for p in hard)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("gen:calculus", "unknown generator 'calculus'; known: arithmetic"),
        ("gen:linear?difficulty=9", "difficulty must be 1..5, got 9"),
        ("gen:linear?level=2", "unknown generator option(s) level"),
        ("gen:linear?difficulty=hard", "must be integers"),
        ("gen:linear?difficulty", "key=value"),
        ("no/such/file.jsonl", "no such file or folder: 'no/such/file.jsonl'"),
        ("gen:step-errors?error_rate=1.5", "error_rate must be from 0 to 1, got 1.5"),
        ("gen:step-errors?error_rate=some", "error_rate must be a number from 0 to 1"),
        ("gen:linear?error_rate=0.5", "error_rate is an option of gen:step-errors only"),
        ("gen:mixed?n=10001", "n must be at most 10000"),
        # refused before a single problem is made, whatever the limit asks for
        ("gen:mixed?n=99999999999999999999", "n must be at most 10000"),
        ("", "empty problem source"),
    ],
)
def test_an_unknown_source_is_a_clear_error(source, message):
    with pytest.raises(ProblemSourceError, match=re.escape(message)):
        load_problems(source)


# --- step-labelled solutions ----------------------------------------------------------------

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_FACT = re.compile(r"(?<![\w)])(\(-\d+\)|\d+) ([-+*/]) (\(-\d+\)|\d+) = (-?\d+)(?![\dx])")


def step_facts(steps: list[str]) -> list[tuple[int, str, int, int]]:
    """Each step's one computation, read from its text: (left, op, right, stated result)."""
    facts = []
    for step in steps:
        found = _FACT.findall(step)
        assert len(found) == 1, step
        left, op, right, result = found[0]
        facts.append((int(left.strip("()")), op, int(right.strip("()")), int(result)))
    return facts


def first_wrong_step(steps: list[str]) -> int:
    """ProcessBench's label, recomputed: the first step whose stated result is not what its
    operands give, or -1."""
    for index, (left, op, right, result) in enumerate(step_facts(steps)):
        if _OPS[op](Fraction(left), Fraction(right)) != result:
            return index
    return -1


def _step_errors(difficulty: int, error_rate: float, n: int = 40, seed: int = 5):
    return load_problems(
        f"gen:step-errors?difficulty={difficulty}&n={n}&error_rate={error_rate}", seed=seed
    )


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_step_error_labels_name_the_first_step_whose_arithmetic_is_wrong(difficulty):
    problems = _step_errors(difficulty, 0.5)
    labels = [p.first_error_step for p in problems]
    assert -1 in labels and any(label >= 0 for label in labels)
    for p in problems:
        assert 3 <= len(p.solution_steps) <= 6, p
        assert first_wrong_step(p.solution_steps) == p.first_error_step, p
        facts = step_facts(p.solution_steps)
        stated = [result for *_, result in facts]
        # the final answer follows the mistake, if there is one
        assert (stated[-1] == int(p.answer)) == (p.first_error_step == -1), p
        given = {int(n) for n in re.findall(r"\d+", p.problem)}
        for index, (left, _, right, _) in enumerate(facts):
            for operand in (left, right):
                assert operand in stated[:index] or abs(operand) in given, (p, index, operand)
        # every intermediate result is used later: a wrong one propagates
        for index, result in enumerate(stated[:-1]):
            later = {x for left, _, right, _ in facts[index + 1 :] for x in (left, right)}
            assert result in later, (p, index)
        assert subset_of(p) == f"step-errors-d{difficulty}"


def _shopping_change(text: str) -> int:
    prices = {good: int(price) for good, price in re.findall(r"(\w+) at (\d+) dollars", text)}
    bought = re.search(r"buys (.+) and pays", text).group(1)
    counts = {good: int(n) for n, good in re.findall(r"(\d+) (\w+)", bought)}
    assert counts.keys() == prices.keys()
    bill = int(re.search(r"(\d+)-dollar bill", text).group(1))
    return bill - sum(prices[good] * counts[good] for good in prices)


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_step_error_answers_solve_the_problem_as_written(difficulty):
    x = sympy.symbols("x")
    templates = set()
    for p in _step_errors(difficulty, 0.5):
        templates.add(p.meta["template"])
        if p.meta["template"] == "expression":
            expression = re.fullmatch(r"Compute the value of (.+)\.", p.problem).group(1)
            assert sympy.sympify(expression) == int(p.answer), p
        elif p.meta["template"] == "linear":
            equation = re.fullmatch(r"Solve for x: (.+)\.", p.problem).group(1)
            assert sympy.solve(_sympy_equation(equation), x) == [int(p.answer)], p
        else:
            assert _shopping_change(p.problem) == int(p.answer), p
    assert templates == {"expression", "linear", "shopping"}


def test_the_error_rate_spoils_steps_of_the_same_problems():
    clean, spoiled = _step_errors(3, 0.0), _step_errors(3, 1.0)
    assert [p.problem for p in clean] == [p.problem for p in spoiled]
    assert [p.answer for p in clean] == [p.answer for p in spoiled]
    assert {p.first_error_step for p in clean} == {-1}
    assert all(p.first_error_step >= 0 for p in spoiled)
    for right, wrong in zip(clean, spoiled, strict=True):
        k = wrong.first_error_step
        assert wrong.solution_steps[:k] == right.solution_steps[:k]
        assert wrong.solution_steps[k] != right.solution_steps[k]
    halves = [p.first_error_step >= 0 for p in _step_errors(2, 0.5, n=200)]
    assert 70 <= sum(halves) <= 130  # the default rate, 0.5, on 200 problems
    assert load_problems("gen:step-errors?n=200&difficulty=2", seed=5) == _step_errors(2, 0.5, 200)
    assert load_problems("gen:step-errors?n=5", seed=1) == load_problems(
        "gen:step-errors", limit=5, seed=1
    )
