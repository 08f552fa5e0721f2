"""Is a predicted answer the reference answer? A verdict with its reason.

Patterns that know the reference (SPC's validity roll-outs, RLAD's rewards) and the
evaluation both judge answers here, so a solution counts as correct in the same way
everywhere. Pure computation: no I/O.
"""

from __future__ import annotations

from fractions import Fraction

from pydantic import BaseModel

from roles.answers import normalize_answer


class AnswerCheck(BaseModel):
    correct: bool
    reason: str


def _as_number(answer: str) -> Fraction | None:
    s = normalize_answer(answer)
    if s.startswith("\\frac{") and s.endswith("}") and "}{" in s:
        numerator, denominator = s[len("\\frac{") : -1].split("}{", 1)
        s = f"{numerator}/{denominator}"
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str | None, reference: str) -> AnswerCheck:
    """Whether ``predicted`` states the same answer as ``reference``."""
    if predicted is None or not predicted.strip():
        return AnswerCheck(correct=False, reason="no answer given")
    if normalize_answer(predicted) == normalize_answer(reference):
        return AnswerCheck(correct=True, reason="same text after normalization")
    left, right = _as_number(predicted), _as_number(reference)
    if left is not None and right is not None:
        if left == right:
            return AnswerCheck(correct=True, reason=f"equal numbers ({left})")
        return AnswerCheck(correct=False, reason=f"different numbers ({left} != {right})")
    return AnswerCheck(correct=False, reason="different answers")
