"""Is a predicted answer the reference answer? A verdict with its reason.

Patterns that know the reference (SPC's validity roll-outs, RLAD's rewards) and the
evaluation both judge answers here, so a solution counts as correct in the same way
everywhere. Pure computation: no I/O.

The checks run from cheap to expensive, and the first that decides gives the reason:

1. the same text after normalization (spacing, ``$``, ``\\text{}``, ``\\dfrac``, case);
2. both plain numbers (integers, decimals, ``a/b``, ``\\frac{a}{b}``): exact comparison;
3. a reference made of words (``Alice, Carol``, ``none``, ``\\text{Devon}``): the same
   items in any order, ``and`` and commas alike;
4. anything else: math-verify, i.e. LaTeX parsed into sympy and compared symbolically, which
   equates ``\\frac{\\sqrt2}{2}`` and ``\\sqrt{2}/2``, ``x=3`` and ``3``, ``12\\text{ cm}`` and
   ``12``, ``50\\%`` and ``0.5``, ``(1,2]`` and ``(1, 2]``, ``\\{1,2\\}`` and ``\\{2,1\\}``.

sympy can run for ever on some inputs (``10^{10^{10}}``, a 100000-term product) and cannot be
interrupted from another thread, so step 4 refuses inputs that are too long or whose exponents
or factorials are too large, and says so in the reason.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from typing import Any

from pydantic import BaseModel

from roles.answers import normalize_answer

MAX_SYMBOLIC_CHARS = 200
MAX_EXPONENT = 1000
MAX_FACTORIAL = 1000

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+")
_WORD = re.compile(r"[a-zA-Z]{2,}")
_MATH_WORDS = frozenset(
    [
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "arcsin",
        "arccos",
        "arctan",
        "sinh",
        "cosh",
        "tanh",
        "log",
        "ln",
        "exp",
        "lg",
        "sqrt",
        "pi",
        "infty",
        "inf",
        "oo",
        "mod",
        "gcd",
        "lcm",
        "min",
        "max",
        "det",
        "deg",
    ]
)
_ITEM_SEPARATOR = re.compile(r"\s*(?:,|;|&|\band\b)\s*")
_FACTORIAL = re.compile(r"(\d+)\s*!")
# Plain-text function names, which LaTeX parsing would read as products of letters.
_BARE_FUNCTION = re.compile(r"(?<![\\a-zA-Z])(sin|cos|tan|cot|sec|csc|log|ln|exp)(?=\s*[(\s])")


class AnswerCheck(BaseModel):
    correct: bool
    reason: str


def answers_match(predicted: str | None, reference: str) -> AnswerCheck:
    """Whether ``predicted`` states the same answer as ``reference``."""
    if predicted is None or not predicted.strip():
        return AnswerCheck(correct=False, reason="no answer given")
    if reference is None or not reference.strip():
        return AnswerCheck(correct=False, reason="no reference answer to compare with")
    if normalize_answer(predicted) == normalize_answer(reference):
        return AnswerCheck(correct=True, reason="same text after normalization")
    left, right = _as_number(predicted), _as_number(reference)
    if left is not None and right is not None:
        if left == right:
            return AnswerCheck(correct=True, reason=f"equal numbers ({_show(left)})")
        return AnswerCheck(
            correct=False, reason=f"different numbers ({_show(left)} != {_show(right)})"
        )
    if _is_text_answer(reference):
        return _compare_items(predicted, reference)
    for answer in (predicted, reference):
        refusal = _too_heavy(answer)
        if refusal is not None:
            return AnswerCheck(correct=False, reason=f"not compared symbolically: {refusal}")
    return _compare_symbolically(predicted, reference)


def _as_number(answer: str) -> Fraction | None:
    s = normalize_answer(answer)
    if len(s) > 100:
        return None
    if s.startswith("\\frac{") and s.endswith("}") and "}{" in s:
        numerator, denominator = s[len("\\frac{") : -1].split("}{", 1)
        s = f"{numerator}/{denominator}"
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def _show(number: Fraction) -> str:
    return str(number.numerator) if number.denominator == 1 else str(number)


def _plain_text(answer: str) -> str:
    return _TEXT_WRAPPER.sub(r"\1", answer).strip().strip("$").strip()


def _is_text_answer(answer: str) -> bool:
    """Words rather than mathematics: no digit, and a word that is not a function's name."""
    s = _LATEX_COMMAND.sub(" ", _plain_text(answer))
    if re.search(r"\d", s):
        return False
    return any(word.lower() not in _MATH_WORDS for word in _WORD.findall(s))


def _items(answer: str) -> list[str]:
    text = _plain_text(answer).lower()
    parts = _ITEM_SEPARATOR.split(text)
    items = [re.sub(r"[^a-z0-9 ]+", " ", part) for part in parts]
    return sorted(" ".join(item.split()) for item in items if item.strip())


def _compare_items(predicted: str, reference: str) -> AnswerCheck:
    got, expected = _items(predicted), _items(reference)
    if got == expected:
        how = "the same words" if len(expected) == 1 else f"the same {len(expected)} items"
        return AnswerCheck(correct=True, reason=how)
    return AnswerCheck(
        correct=False,
        reason=f"different words: got {', '.join(got) or 'nothing'}; "
        f"expected {', '.join(expected) or 'nothing'}",
    )


def _exponents(answer: str) -> list[tuple[str, int]]:
    """Each exponent's text and where it ends, for ``^x``, ``^{...}`` and ``**x``."""
    found = []
    for match in re.finditer(r"\^|\*\*", answer):
        i = match.end()
        while i < len(answer) and answer[i] == " ":
            i += 1
        if i < len(answer) and answer[i] in "{(":
            opening, closing = answer[i], "}" if answer[i] == "{" else ")"
            depth, j = 0, i
            while j < len(answer):
                depth += answer[j] == opening
                depth -= answer[j] == closing
                j += 1
                if depth == 0:
                    break
            found.append((answer[i + 1 : j - 1], j))
        else:
            number = re.match(r"-?\d+(?:\.\d+)?|[a-zA-Z]|\\[a-zA-Z]+", answer[i:])
            token = number.group() if number else ""
            found.append((token, i + len(token)))
    return found


def _too_heavy(answer: str) -> str | None:
    """Why sympy should not see ``answer``, or None when it is safe to compare."""
    if len(answer) > MAX_SYMBOLIC_CHARS:
        return f"the answer is too long ({len(answer)} characters > {MAX_SYMBOLIC_CHARS})"
    for exponent, end in _exponents(answer):
        if "^" in exponent or "**" in exponent or answer[end:].lstrip().startswith(("^", "**")):
            return "a tower of exponents"
        digits = exponent.replace(" ", "").lstrip("-")
        if digits.isdigit() and int(digits) > MAX_EXPONENT:
            return f"an exponent of {digits} (more than {MAX_EXPONENT})"
    for factorial in _FACTORIAL.findall(answer):
        if int(factorial) > MAX_FACTORIAL:
            return f"a factorial of {factorial} (more than {MAX_FACTORIAL})"
    return None


def _compare_symbolically(predicted: str, reference: str) -> AnswerCheck:
    # Imported here: sympy and the LaTeX grammar take seconds to load, and most checks
    # (plain numbers, same text) never need them.
    from math_verify import parse, verify

    # math-verify's own timeouts use SIGALRM, which works only on the main thread and would
    # cancel pytest's and Celery's alarms; inputs are bounded by _too_heavy instead, so its
    # warning about the disabled timeout says nothing useful.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    gold = _parsed(parse, reference)
    target = _parsed(parse, predicted)
    if not gold:
        return AnswerCheck(
            correct=False, reason=f"the reference {reference!r} could not be read as mathematics"
        )
    if not target:
        return AnswerCheck(
            correct=False, reason=f"the answer {predicted!r} could not be read as mathematics"
        )
    try:
        same = verify(gold, target, timeout_seconds=None)
    except Exception as exc:  # math-verify and sympy raise many kinds; a verdict is still owed
        return AnswerCheck(
            correct=False, reason=f"symbolic comparison failed ({type(exc).__name__})"
        )
    shown = f"{_describe(target)} vs {_describe(gold)}"
    if same:
        return AnswerCheck(correct=True, reason=f"mathematically equivalent ({shown})")
    return AnswerCheck(correct=False, reason=f"not equivalent ({shown})")


def _parsed(parse: Any, answer: str) -> list[Any]:
    from sympy import Basic
    from sympy.matrices import MatrixBase

    try:
        # \boxed{} tells math-verify that the whole string is the answer, whatever it holds
        latex = _BARE_FUNCTION.sub(r"\\\1", answer.strip().strip("$"))
        found = parse(f"\\boxed{{{latex}}}", parsing_timeout=None)
    except Exception:  # a parser that fails reads as "not mathematics", not as a crash
        return []
    return [item for item in found if isinstance(item, Basic | MatrixBase)]


def _describe(parsed: list[Any]) -> str:
    text = str(parsed[0])
    return text if len(text) <= 60 else text[:57] + "..."
