"""Generated problems: every stated answer agrees with an independent computation."""

from __future__ import annotations

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
        ("", "empty problem source"),
    ],
)
def test_an_unknown_source_is_a_clear_error(source, message):
    with pytest.raises(ProblemSourceError, match=re.escape(message)):
        load_problems(source)
