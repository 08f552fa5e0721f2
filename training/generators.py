"""Procedurally generated problems with exact answers, reproducible by seed.

Each kind takes a difficulty from 1 to 5:

- ``arithmetic``: an expression with difficulty + 1 operations; + and - at 1, * from 2, exact
  division from 3; numbers grow with difficulty.
- ``linear``: ax + b = c (1), ax + b = cx + d with an integer (2) or fractional (3) root, a
  bracket to expand (4), a system of two equations in x and y (5).
- ``modular``: a remainder (1), (ab + c) mod m (2), a^k mod m with small (3) and huge (4) k, a
  linear congruence ax = b (mod p) (5).
- ``counting``: combinations (1), arrangements (2), integers up to N divisible by a or b (3),
  arrangements of a word's letters (4), integers up to N divisible by none of a, b, c (5).
- ``logic``: knights and knaves with 2, 3, 3, 4, 5 people and a unique solution.
- ``step-errors``: a worked solution in 3 to 6 steps (an expression evaluated one operation at
  a time, a bracketed linear equation, a shopping bill), each step one computation. With
  probability ``error_rate`` one step states a wrong result that later steps then use, as a
  real slip would; ``first_error_step`` is its index (ProcessBench's label), else -1. These
  are what ``thinktank eval-critic`` judges; ``mixed`` leaves them out.

Problem ``i`` of a kind depends only on (kind, difficulty, seed, i), so a smaller ``n`` or
``limit`` gives a prefix of a larger one; for ``step-errors`` whether and where a step is
wrong is drawn apart, so every error rate shows the same problems. ``meta`` holds the
structure each problem was built from (expression, equations, statements), which is what tests
recompute answers from.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from fractions import Fraction
from itertools import product
from math import comb, factorial, perm
from typing import Any
from urllib.parse import parse_qsl

from training.math_text import PRECEDENCE, linear_side
from training.problem import Problem, ProblemSourceError
from training.step_errors import STEP_ERRORS, step_errors

DEFAULT_COUNT = 100
MAX_COUNT = 10_000
"""The most problems one ``gen:`` spec makes (``n``): seconds of generating on a loaded
machine (step-labelled solutions are the slowest, about a millisecond each), and more
generated problems than an evaluation or a campaign round needs; bigger sets are files."""
DEFAULT_DIFFICULTY = 2
MAX_DIFFICULTY = 5
DEFAULT_ERROR_RATE = 0.5

Generated = tuple[str, str, dict[str, Any]]  # problem text, answer, meta


def generate(
    kind: str,
    *,
    count: int,
    difficulty: int = DEFAULT_DIFFICULTY,
    seed: int = 0,
    error_rate: float = DEFAULT_ERROR_RATE,
):
    """``count`` problems of ``kind`` (or of every kind in turn for ``mixed``)."""
    if kind not in (*GENERATORS, "mixed", STEP_ERRORS):
        raise ProblemSourceError(
            f"unknown generator {kind!r}; known: {', '.join([*GENERATORS, 'mixed', STEP_ERRORS])}"
        )
    if not 1 <= difficulty <= MAX_DIFFICULTY:
        raise ProblemSourceError(f"difficulty must be 1..{MAX_DIFFICULTY}, got {difficulty}")
    if kind == STEP_ERRORS:
        if not 0 <= error_rate <= 1:
            raise ProblemSourceError(f"error_rate must be from 0 to 1, got {error_rate}")
        return [step_errors(i, difficulty, seed, error_rate) for i in range(count)]
    kinds = list(GENERATORS)
    problems = []
    for i in range(count):
        this_kind = kinds[i % len(kinds)] if kind == "mixed" else kind
        rng = random.Random(f"{this_kind}:{difficulty}:{seed}:{i}")
        text, answer, meta = GENERATORS[this_kind](rng, difficulty)
        problems.append(
            Problem(
                id=f"{kind}-d{difficulty}-s{seed}-{i}",
                problem=text,
                answer=answer,
                source=f"gen:{this_kind}",
                meta={"kind": this_kind, "difficulty": difficulty, "seed": seed, **meta},
            )
        )
    return problems


def generate_from_spec(spec: str, *, limit: int | None, seed: int) -> list[Problem]:
    """Problems for ``KIND[?difficulty=D&n=N&seed=S]`` (the part of a source after ``gen:``)."""
    kind, _, query = spec.partition("?")
    try:
        params = dict(parse_qsl(query, strict_parsing=True)) if query else {}
    except ValueError:
        raise ProblemSourceError(
            f"cannot read generator options {query!r}; write them as key=value&key=value"
        ) from None
    kind = kind.strip().lower()
    unknown = set(params) - {"difficulty", "n", "seed", "error_rate"}
    if unknown:
        raise ProblemSourceError(
            f"unknown generator option(s) {', '.join(sorted(unknown))}; known: difficulty, n, "
            f"seed (and error_rate for {STEP_ERRORS})"
        )
    error_rate = DEFAULT_ERROR_RATE
    if "error_rate" in params:
        if kind != STEP_ERRORS:
            raise ProblemSourceError(f"error_rate is an option of gen:{STEP_ERRORS} only")
        try:
            error_rate = float(params.pop("error_rate"))
        except ValueError:
            raise ProblemSourceError(
                f"error_rate must be a number from 0 to 1: {query!r}"
            ) from None
    try:
        values = {key: int(value) for key, value in params.items()}
    except ValueError:
        raise ProblemSourceError(f"generator options must be integers: {query!r}") from None
    if values.get("n", 1) < 0:
        raise ProblemSourceError("n must be >= 0")
    if values.get("n", 0) > MAX_COUNT:
        raise ProblemSourceError(f"n must be at most {MAX_COUNT} (problems one gen: spec makes)")
    if "n" in values:
        count = values["n"] if limit is None else min(values["n"], limit)
    else:
        count = DEFAULT_COUNT if limit is None else limit
    return generate(
        kind,
        count=count,
        difficulty=values.get("difficulty", DEFAULT_DIFFICULTY),
        seed=values.get("seed", seed),
        error_rate=error_rate,
    )


def _number(value: Fraction) -> str:
    return (
        str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    )


# --- arithmetic ---------------------------------------------------------------------------


def _expression(
    rng: random.Random, operations: int, ops: str, top: int
) -> tuple[str, Fraction, int]:
    """A random expression with ``operations`` operators: its text, value and precedence."""
    if operations == 0:
        n = rng.randint(1, top)
        return str(n), Fraction(n), 3
    left_ops = rng.randint(0, operations - 1)
    op = rng.choice(ops)
    left, lv, lp = _expression(rng, left_ops, ops, top)
    right, rv, rp = _expression(rng, operations - 1 - left_ops, ops, top)
    if op == "/" and rv == 0:
        divisor = rng.randint(1, top)
        right, rv, rp = str(divisor), Fraction(divisor), 3
    if lp < PRECEDENCE[op]:
        left = f"({left})"
    # a - (b - c) and a / (b * c) need their brackets; a + (b + c) is written without
    if rp < PRECEDENCE[op] or (rp == PRECEDENCE[op] and op in "-/"):
        right = f"({right})"
    value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if op == "/" else 0}[op]
    return f"{left} {op} {right}", value, PRECEDENCE[op]


def arithmetic(rng: random.Random, difficulty: int) -> Generated:
    ops = "+-" if difficulty == 1 else "+-*" if difficulty == 2 else "+-*/"
    top = (10, 12, 15, 20, 40)[difficulty - 1]
    text, value, _ = _expression(rng, difficulty + 1, ops, top)
    note = " If it is not an integer, give it as a reduced fraction." if "/" in text else ""
    return (
        f"Compute the exact value of {text}.{note}",
        _number(value),
        {"expression": text},
    )


# --- linear equations ---------------------------------------------------------------------


def _nonzero(rng: random.Random, low: int, high: int) -> int:
    return rng.choice([v for v in range(low, high + 1) if v != 0])


def linear(rng: random.Random, difficulty: int) -> Generated:
    if difficulty == 5:
        return _linear_system(rng)
    if difficulty == 1:
        a, x = rng.randint(2, 9), rng.randint(-10, 10)
        b = rng.randint(-20, 20)
        equation = f"{linear_side(a, b)} = {a * x + b}"
        root = Fraction(x)
    elif difficulty in (2, 3):
        a, c = rng.sample([v for v in range(-9, 10) if v != 0], 2)
        if difficulty == 2:
            x, b = rng.randint(-12, 12), rng.randint(-30, 30)
            d = (a - c) * x + b
        else:
            b, d = rng.randint(-30, 30), rng.randint(-30, 30)
        root = Fraction(d - b, a - c)
        equation = f"{linear_side(a, b)} = {linear_side(c, d)}"
    else:
        # a(x + b) - c = dx + e: the bracket has to be expanded before collecting terms
        a, d = rng.sample([v for v in range(2, 10)], 2)
        b, c, e = _nonzero(rng, -9, 9), rng.randint(1, 20), rng.randint(-20, 20)
        root = Fraction(e - a * b + c, a - d)
        equation = f"{a}({linear_side(1, b)}) - {c} = {linear_side(d, e)}"
    return f"Solve for x: {equation}.", _number(root), {"equations": [equation], "unknown": "x"}


def _two_terms(a: int, b: int) -> str:
    return f"{linear_side(a, 0)} {'+' if b > 0 else '-'} {linear_side(abs(b), 0, 'y')}"


def _linear_system(rng: random.Random) -> Generated:
    while True:
        a, b, c, d = (_nonzero(rng, -7, 7) for _ in range(4))
        if a * d - b * c != 0:
            break
    x, y = rng.randint(-10, 10), rng.randint(-10, 10)
    first = f"{_two_terms(a, b)} = {a * x + b * y}"
    second = f"{_two_terms(c, d)} = {c * x + d * y}"
    return (
        f"Solve the system of equations {first} and {second}. What is x?",
        str(x),
        {"equations": [first, second], "unknown": "x"},
    )


# --- modular arithmetic -------------------------------------------------------------------

_PRIMES = [p for p in range(11, 100) if all(p % q for q in range(2, p))]


def modular(rng: random.Random, difficulty: int) -> Generated:
    if difficulty == 1:
        n, m = rng.randint(100, 9999), rng.randint(3, 20)
        return (
            f"What is the remainder when {n} is divided by {m}?",
            str(n % m),
            {"form": "remainder", "n": n, "m": m},
        )
    if difficulty == 2:
        a, b, c, m = (
            rng.randint(10, 999),
            rng.randint(10, 999),
            rng.randint(0, 999),
            rng.randint(7, 50),
        )
        return (
            f"What is the remainder when {a} * {b} + {c} is divided by {m}?",
            str((a * b + c) % m),
            {"form": "product_sum", "a": a, "b": b, "c": c, "m": m},
        )
    if difficulty in (3, 4):
        a = rng.randint(2, 20 if difficulty == 3 else 99)
        k = rng.randint(10, 100) if difficulty == 3 else rng.randint(1000, 10**6)
        m = rng.randint(3, 50) if difficulty == 3 else rng.randint(51, 999)
        return (
            f"What is the remainder when {a}^{k} is divided by {m}?",
            str(pow(a, k, m)),
            {"form": "power", "a": a, "k": k, "m": m},
        )
    p = rng.choice(_PRIMES)
    a, b = rng.randint(2, p - 1), rng.randint(1, p - 1)
    return (
        f"Find the integer x with 0 <= x < {p} such that {a}x is congruent to {b} modulo {p}.",
        str(b * pow(a, -1, p) % p),
        {"form": "congruence", "a": a, "b": b, "m": p},
    )


# --- counting -----------------------------------------------------------------------------

_WORDS = (
    "BANANA",
    "LETTER",
    "COFFEE",
    "BALLOON",
    "ALABAMA",
    "PEPPER",
    "TOMATO",
    "SUCCESS",
    "PARALLEL",
)


def counting(rng: random.Random, difficulty: int) -> Generated:
    if difficulty == 1:
        n = rng.randint(5, 12)
        k = rng.randint(2, n - 2)
        return (
            f"In how many ways can a committee of {k} people be chosen from {n} people?",
            str(comb(n, k)),
            {"form": "choose", "n": n, "k": k},
        )
    if difficulty == 2:
        n = rng.randint(5, 10)
        k = rng.randint(2, 4)
        return (
            f"{n} runners race. In how many ways can the first {k} places be filled (no ties)?",
            str(perm(n, k)),
            {"form": "arrange", "n": n, "k": k},
        )
    if difficulty == 3:
        n = rng.randint(100, 1000)
        a, b = rng.sample(range(2, 13), 2)
        while max(a, b) % min(a, b) == 0:
            a, b = rng.sample(range(2, 13), 2)
        count = sum(1 for v in range(1, n + 1) if v % a == 0 or v % b == 0)
        return (
            f"How many integers from 1 to {n} inclusive are divisible by {a} or by {b}?",
            str(count),
            {"form": "divisible_any", "n": n, "divisors": [a, b]},
        )
    if difficulty == 4:
        word = rng.choice(_WORDS)
        count = factorial(len(word))
        for letter in set(word):
            count //= factorial(word.count(letter))
        return (
            f"How many distinct arrangements of the letters of the word {word} are there?",
            str(count),
            {"form": "word_arrangements", "word": word},
        )
    n = rng.randint(1000, 10000)
    divisors = sorted(rng.sample(range(2, 16), 3))
    count = sum(1 for v in range(1, n + 1) if all(v % d for d in divisors))
    a, b, c = divisors
    return (
        f"How many integers from 1 to {n} inclusive are divisible by none of {a}, {b} and {c}?",
        str(count),
        {"form": "divisible_none", "n": n, "divisors": divisors},
    )


# --- logic: knights and knaves ------------------------------------------------------------

_NAMES = ("Alice", "Bob", "Carol", "Dave", "Eve")

# (kind, number of other people it names, how it reads, whether it holds given who is a knight)
_STATEMENTS: dict[str, tuple[int, str, Callable[[dict[str, bool], list[str], int], bool]]] = {
    "is_knight": (1, "{0} is a knight.", lambda k, t, _: k[t[0]]),
    "is_knave": (1, "{0} is a knave.", lambda k, t, _: not k[t[0]]),
    "same_kind": (2, "{0} and {1} are the same kind.", lambda k, t, _: k[t[0]] == k[t[1]]),
    "both_knights": (2, "{0} and {1} are both knights.", lambda k, t, _: k[t[0]] and k[t[1]]),
    "one_knave": (
        2,
        "At least one of {0} and {1} is a knave.",
        lambda k, t, _: not (k[t[0]] and k[t[1]]),
    ),
    "count": (0, "Exactly {n} of us are knights.", lambda k, _, n: sum(k.values()) == n),
}


def _statement_holds(statement: dict[str, Any], knights: dict[str, bool]) -> bool:
    return _STATEMENTS[statement["kind"]][2](knights, statement["about"], statement.get("n", 0))


def _statement_text(statement: dict[str, Any]) -> str:
    if statement["kind"] == "count" and statement["n"] == 1:
        return "Exactly 1 of us is a knight."
    return _STATEMENTS[statement["kind"]][1].format(*statement["about"], n=statement["n"])


def logic(rng: random.Random, difficulty: int) -> Generated:
    size = (2, 3, 3, 4, 5)[difficulty - 1]
    names = list(_NAMES[:size])
    while True:
        truth = {name: rng.random() < 0.5 for name in names}
        statements = []
        for speaker in names:
            others = [n for n in names if n != speaker]
            while True:
                kind = rng.choice(
                    [k for k, (arity, *_) in _STATEMENTS.items() if arity <= len(others)]
                )
                statement = {
                    "speaker": speaker,
                    "kind": kind,
                    "about": rng.sample(others, _STATEMENTS[kind][0]),
                    "n": rng.randint(0, size) if kind == "count" else 0,
                }
                # a knight's statement is true and a knave's false in the intended world
                if _statement_holds(statement, truth) == truth[speaker]:
                    statements.append(statement)
                    break
        worlds = [
            dict(zip(names, kinds, strict=True)) for kinds in product((True, False), repeat=size)
        ]
        consistent = [
            w for w in worlds if all(_statement_holds(s, w) == w[s["speaker"]] for s in statements)
        ]
        if len(consistent) == 1:
            break
    lines = [
        f'{s["speaker"]} says: "' + _STATEMENTS[s["kind"]][1].format(*s["about"], n=s["n"]) + '"'
        for s in statements
    ]
    knights = [name for name in names if truth[name]]
    text = (
        f"On an island, each inhabitant is either a knight, who always tells the truth, or a "
        f"knave, who always lies. You meet {', '.join(names[:-1])} and {names[-1]}.\n"
        + "\n".join(lines)
        + "\nWhich of them are knights? Answer with their names in alphabetical order, "
        "separated by commas, or 'none' if there are none."
    )
    return text, ", ".join(knights) or "none", {"people": names, "statements": statements}


GENERATORS: dict[str, Callable[[random.Random, int], Generated]] = {
    "arithmetic": arithmetic,
    "linear": linear,
    "modular": modular,
    "counting": counting,
    "logic": logic,
}
