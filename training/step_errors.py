"""Step-labelled solutions (ProcessBench-style), one consistent slip or none: gen:step-errors.

A worked solution in 3 to 6 steps (an expression evaluated one operation at a time, a bracketed
linear equation, a shopping bill), each step one computation. With probability ``error_rate``
one step states a wrong result that later steps then use, as a real slip would;
``first_error_step`` is its index (ProcessBench's label), else -1. Whether and where a step is
wrong is drawn apart from the problem, so every error rate shows the same problems.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from training.math_text import PRECEDENCE, linear_side
from training.problem import Problem

STEP_ERRORS = "step-errors"


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
        if precedence < PRECEDENCE[op]:
            text = f"({text})"
        text, precedence = f"{text} {op} {n}", PRECEDENCE[op]
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
    right_side = linear_side(d, e)
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
            lambda r, f: f"Combine the constants: {f}, so {linear_side(a, r[1])} = {right_side}.",
        ),
        _Step(
            "-",
            a,
            d,
            lambda r, f: f"Subtract {d}x from both sides: {f}, so {linear_side(r[2], r[1])} = {e}.",
        ),
        _Step(
            "-",
            e,
            _Ref(1),
            lambda r, f: (
                f"Move the constant to the right: {f}, so {linear_side(r[2], 0)} = {r[3]}."
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
