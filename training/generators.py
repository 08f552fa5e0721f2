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
from dataclasses import dataclass
from fractions import Fraction
from itertools import product
from math import comb, factorial, perm
from typing import Any
from urllib.parse import parse_qsl

from training.problem import Problem, ProblemSourceError

DEFAULT_COUNT = 100
DEFAULT_DIFFICULTY = 2
MAX_DIFFICULTY = 5
STEP_ERRORS = "step-errors"
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

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


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
    if lp < _PRECEDENCE[op]:
        left = f"({left})"
    # a - (b - c) and a / (b * c) need their brackets; a + (b + c) is written without
    if rp < _PRECEDENCE[op] or (rp == _PRECEDENCE[op] and op in "-/"):
        right = f"({right})"
    value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if op == "/" else 0}[op]
    return f"{left} {op} {right}", value, _PRECEDENCE[op]


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


def _linear_side(coefficient: int, constant: int, var: str = "x") -> str:
    if coefficient == 0:
        return str(constant)
    term = {1: var, -1: f"-{var}"}.get(coefficient, f"{coefficient}{var}")
    if constant == 0:
        return term
    return f"{term} {'+' if constant > 0 else '-'} {abs(constant)}"


def _nonzero(rng: random.Random, low: int, high: int) -> int:
    return rng.choice([v for v in range(low, high + 1) if v != 0])


def linear(rng: random.Random, difficulty: int) -> Generated:
    if difficulty == 5:
        return _linear_system(rng)
    if difficulty == 1:
        a, x = rng.randint(2, 9), rng.randint(-10, 10)
        b = rng.randint(-20, 20)
        equation = f"{_linear_side(a, b)} = {a * x + b}"
        root = Fraction(x)
    elif difficulty in (2, 3):
        a, c = rng.sample([v for v in range(-9, 10) if v != 0], 2)
        if difficulty == 2:
            x, b = rng.randint(-12, 12), rng.randint(-30, 30)
            d = (a - c) * x + b
        else:
            b, d = rng.randint(-30, 30), rng.randint(-30, 30)
        root = Fraction(d - b, a - c)
        equation = f"{_linear_side(a, b)} = {_linear_side(c, d)}"
    else:
        # a(x + b) - c = dx + e: the bracket has to be expanded before collecting terms
        a, d = rng.sample([v for v in range(2, 10)], 2)
        b, c, e = _nonzero(rng, -9, 9), rng.randint(1, 20), rng.randint(-20, 20)
        root = Fraction(e - a * b + c, a - d)
        equation = f"{a}({_linear_side(1, b)}) - {c} = {_linear_side(d, e)}"
    return f"Solve for x: {equation}.", _number(root), {"equations": [equation], "unknown": "x"}


def _two_terms(a: int, b: int) -> str:
    return f"{_linear_side(a, 0)} {'+' if b > 0 else '-'} {_linear_side(abs(b), 0, 'y')}"


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


# --- step-labelled solutions (ProcessBench-style) -----------------------------------------


@dataclass(frozen=True)
class _Step:
    """One computation of a worked solution, ``left op right``. An operand is a constant or
    ``_Ref(k)``, the result of step k as that step stated it. ``say`` writes the step from
    every stated result and the computation's text ("3 * 4 = 12")."""

    op: str
    left: int | _Ref
    right: int | _Ref
    say: Callable[[list[int], str], str]


@dataclass(frozen=True)
class _Ref:
    step: int


_Plan = tuple[str, list[_Step]]  # the problem's text and its solution


def _apply(op: str, a: int, b: int) -> int | None:
    """Integer arithmetic; None for a division that does not come out even."""
    if op == "/":
        return a // b if b != 0 and a % b == 0 else None
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def _operand(n: int) -> str:
    return f"({n})" if n < 0 else str(n)


def _work(steps: list[_Step], slip: tuple[int, int] | None = None) -> list[tuple[int, int, int]]:
    """Each step's (left, right, result); ``slip`` = (step, result) states a wrong result there
    that later steps use. Empty when a later division no longer comes out even."""
    done: list[tuple[int, int, int]] = []
    for k, step in enumerate(steps):
        a, b = (x if isinstance(x, int) else done[x.step][2] for x in (step.left, step.right))
        result = slip[1] if slip is not None and slip[0] == k else _apply(step.op, a, b)
        if result is None:
            return []
        done.append((a, b, result))
    return done


def _written(steps: list[_Step], work: list[tuple[int, int, int]]) -> list[str]:
    results = [result for _, _, result in work]
    return [
        step.say(results, f"{_operand(a)} {step.op} {_operand(b)} = {result}")
        for step, (a, b, result) in zip(steps, work, strict=True)
    ]


def _slips(steps: list[_Step], right: list[tuple[int, int, int]]) -> dict[int, list[int]]:
    """Per step, the wrong results a plausible slip gives: off by 1, 2 or 10, or (for a product)
    by one operand too many or too few. A slip must keep every later division even, flip no
    later result's sign, and change the final answer."""
    slips: dict[int, list[int]] = {}
    for k, (step, (a, b, result)) in enumerate(zip(steps, right, strict=True)):
        offsets = {1, 2, 10} | ({abs(a), abs(b)} if step.op == "*" else set())
        candidates = sorted({result + s * o for o in offsets for s in (1, -1)} - {result})
        for wrong in candidates:
            work = _work(steps, (k, wrong))
            if (
                work
                and work[-1][2] != right[-1][2]
                and all(w[2] * r[2] >= 0 for w, r in zip(work[k:], right[k:], strict=True))
            ):
                slips.setdefault(k, []).append(wrong)
    return slips


def _expression_plan(rng: random.Random, difficulty: int) -> _Plan:
    """An expression of 3 to 6 operations applied left to right, one per step."""
    ops = "+-" if difficulty == 1 else "+-*" if difficulty == 2 else "+-*/"
    top = (10, 12, 15, 20, 40)[difficulty - 1]
    first = rng.randint(1, top)
    text, precedence, value = str(first), 3, first
    steps: list[_Step] = []
    count = min(6, difficulty + 2)
    for k in range(count):
        divisors = [d for d in range(2, top + 1) if value and value % d == 0]
        op = rng.choice(ops if divisors else ops.replace("/", ""))
        n = rng.choice(divisors) if op == "/" else rng.randint(2 if op == "*" else 1, top)
        if precedence < _PRECEDENCE[op]:
            text = f"({text})"
        text, precedence = f"{text} {op} {n}", _PRECEDENCE[op]
        value = _apply(op, value, n) or 0  # never None: a divisor is chosen to divide
        if k == 0:
            say = "First, {fact}.".format
        elif k == count - 1:
            say = "Finally, {fact}, so the value is {last}.".format
        else:
            say = rng.choice(["Next, {fact}.", "Then {fact}."]).format
        steps.append(
            _Step(
                op,
                first if k == 0 else _Ref(k - 1),
                n,
                lambda results, fact, say=say: say(fact=fact, last=results[-1]),
            )
        )
    return f"Compute the value of {text}.", steps


def _linear_plan(rng: random.Random, difficulty: int) -> _Plan:
    """a(x + b) - c = dx + e solved in five steps, each one computation."""
    top = (5, 8, 10, 12, 15)[difficulty - 1]
    d = rng.randint(2, top - 2)
    a = rng.randint(d + 2, top)  # a - d >= 2: the last step divides by something
    b, c, x = rng.randint(1, top), rng.randint(1, 2 * top), rng.randint(-top, top)
    e = (a - d) * x + a * b - c
    right_side = _linear_side(d, e)
    steps = [
        _Step(
            "*",
            a,
            b,
            lambda r, f: f"Expand the bracket: {f}, so {a}x + {r[0]} - {c} = {right_side}.",
        ),
        _Step(
            "-",
            _Ref(0),
            c,
            lambda r, f: f"Combine the constants: {f}, so {_linear_side(a, r[1])} = {right_side}.",
        ),
        _Step(
            "-",
            a,
            d,
            lambda r, f: (
                f"Subtract {d}x from both sides: {f}, so {_linear_side(r[2], r[1])} = {e}."
            ),
        ),
        _Step(
            "-",
            e,
            _Ref(1),
            lambda r, f: (
                f"Move the constant to the right: {f}, so {_linear_side(r[2], 0)} = {r[3]}."
            ),
        ),
        _Step(
            "/", _Ref(3), _Ref(2), lambda r, f: f"Divide both sides by {r[2]}: {f}, so x = {r[4]}."
        ),
    ]
    return f"Solve for x: {a}(x + {b}) - {c} = {right_side}.", steps


_GOODS = ("pens", "notebooks", "erasers", "rulers", "folders", "markers")


def _shopping_plan(rng: random.Random, difficulty: int) -> _Plan:
    """Costs of two or three goods, their total, then the change: four or six steps."""
    goods = rng.sample(_GOODS, 2 if difficulty <= 2 else 3)
    top = (5, 8, 12, 20, 30)[difficulty - 1]
    prices = [rng.randint(2, top) for _ in goods]
    counts = [rng.randint(2, 9) for _ in goods]
    total = sum(p * n for p, n in zip(prices, counts, strict=True))
    bill = rng.choice([b for b in (10, 20, 50, 100, 200, 500, 1000) if b > total][:2])
    name = rng.choice(("Sam", "Mia", "Leo", "Ana"))
    steps = [
        _Step("*", n, p, lambda r, f, g=g: f"The {g} cost {f} dollars.")
        for g, p, n in zip(goods, prices, counts, strict=True)
    ]
    k = len(goods)
    steps.append(
        _Step(
            "+",
            _Ref(0),
            _Ref(1),
            lambda r, f: f"The {goods[0]} and the {goods[1]} cost {f} dollars.",
        )
    )
    if k == 3:
        steps.append(
            _Step(
                "+",
                _Ref(3),
                _Ref(2),
                lambda r, f: f"With the {goods[2]}, the total is {f} dollars.",
            )
        )
    steps.append(_Step("-", bill, _Ref(len(steps) - 1), lambda r, f: f"The change is {f} dollars."))
    offer = [f"{g} at {p} dollars each" for g, p in zip(goods, prices, strict=True)]
    bought = [f"{n} {g}" for g, n in zip(goods, counts, strict=True)]
    text = (
        f"A shop sells {', '.join(offer[:-1])} and {offer[-1]}. {name} buys "
        f"{', '.join(bought[:-1])} and {bought[-1]} and pays with a {bill}-dollar bill. "
        f"How much change, in dollars, does {name} get?"
    )
    return text, steps


_PLANS: dict[str, Callable[[random.Random, int], _Plan]] = {
    "expression": _expression_plan,
    "linear": _linear_plan,
    "shopping": _shopping_plan,
}


def step_errors(index: int, difficulty: int, seed: int, error_rate: float) -> Problem:
    """Problem ``index``: a worked solution, one step wrong with probability ``error_rate``."""
    rng = random.Random(f"{STEP_ERRORS}:{difficulty}:{seed}:{index}")
    while True:  # a problem no plausible slip can spoil would never be an erroneous item
        template = rng.choice(list(_PLANS))
        text, steps = _PLANS[template](rng, difficulty)
        right = _work(steps)
        slips = _slips(steps, right)
        if slips:
            break
    # drawn apart from the problem, so every error rate shows the same problems
    chance = random.Random(f"{STEP_ERRORS}:slip:{difficulty}:{seed}:{index}")
    meta: dict[str, Any] = {
        "kind": STEP_ERRORS,
        "difficulty": difficulty,
        "seed": seed,
        "subset": f"{STEP_ERRORS}-d{difficulty}",
        "template": template,
        "error_rate": error_rate,
    }
    first_error, shown = -1, right
    if chance.random() < error_rate:
        first_error = chance.choice(sorted(slips))
        wrong = chance.choice(slips[first_error])
        shown = _work(steps, (first_error, wrong))
        meta["slip"] = {"step": first_error, "stated": wrong, "right": right[first_error][2]}
    return Problem(
        id=f"{STEP_ERRORS}-d{difficulty}-s{seed}-{index}",
        problem=text,
        answer=str(right[-1][2]),
        source=f"gen:{STEP_ERRORS}",
        solution_steps=_written(steps, shown),
        first_error_step=first_error,
        meta=meta,
    )


GENERATORS: dict[str, Callable[[random.Random, int], Generated]] = {
    "arithmetic": arithmetic,
    "linear": linear,
    "modular": modular,
    "counting": counting,
    "logic": logic,
}
